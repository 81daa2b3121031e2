package interop

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/stretchr/testify/require"
)

// TestReadmeCommands runs every command a reader copies from the repository's
// READMEs, exactly as written, with bash, on loopback, one after the other, so that
// a command that no longer works fails CI.
//
// Which commands (readme_parse_test.go): every line of the ```sh, ```shell, ```bash
// and ```console blocks (console: the lines after a "$ " prompt) of every README.md
// in the repository, and of the code blocks of each example's package doc
// (examples/*/main.go, what go doc shows; a block counts when its first command
// starts with go or cd). A line ending in a backslash goes on with the next; blank
// and comment lines are skipped; a comment after a command stays (bash ignores it).
// Code spans in prose are not commands: put what a reader should run in a block.
//
// Where: a reader stands at the repository's root (the READMEs say "cd
// examples/queue" from there), except in readmeOwnDir's READMEs. A line that is only
// "cd DIR" moves the reader for the rest of that file, and a line that only assigns
// variables (D=36500) sets them for the rest of that file; "cd DIR && cmd" moves
// only cmd. The environment is the test's, without GOWORK (the Makefile's GOWORK=off
// is not the reader's).
//
// How: a command passes when it exits 0 within readmeTimeout. A command still
// running that prints a ready line (readmeReady: "listening on ...", the library's
// "listening" log line, examples/queue's "consuming") is long-running: a server, or
// a consumer. It keeps running while the next commands name one of the loopback
// ports in its output (swaks --server 127.0.0.1:2525 after a server on 2525, a
// -consume on its nats://127.0.0.1:4222); before any other command it is stopped as
// a reader stops it, with Ctrl-C (SIGINT to its process group), and must then exit
// 0 within readmeStopTimeout. A command that fails, hangs, or never becomes ready
// fails. A program a command needs that is not installed skips that command, or
// fails it when CI is set. Before each file's commands the ports they use
// (smtpd.DefaultPorts and every loopback port they name) must be free.
//
// The install recipe (a block with git clone) runs in a new directory, as the
// reader's own module: the checkout is linked where git clone would put it, the
// module is made (go mod init) and the README's first complete program (a ```go
// block with package main) written unless the recipe does that itself, then the
// recipe's commands run as written and the program must build.
//
// Left out, each for the reason given: readmeExclusions.
//
// Afterwards, what the commands made is removed: the paths they name (./mail,
// /tmp/mail) that did not exist before them, and new entries of the checkout that
// git ignores (examples/queue's queue-data).
func TestReadmeCommands(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	require.NoError(t, err)
	clientsNeed(t, "bash")
	env := readerEnv()
	var all []readmeCmd
	for _, source := range readmeSources(t, root) {
		cmds := readmeCommands(t, root, source)
		all = append(all, cmds...)
		if len(cmds) == 0 {
			continue
		}
		t.Run(source, func(t *testing.T) { readmeRunSource(t, root, source, cmds, env) })
	}
	for _, ex := range readmeExclusions {
		if !slices.ContainsFunc(all, func(c readmeCmd) bool { return ex.pattern.MatchString(c.Text) }) {
			t.Errorf("exclusion %q (%s) matches no command any more: remove it", ex.pattern, ex.why)
		}
	}
}

// readmeTimeout bounds each command until it exits or is ready (go run compiles
// first); readmeStopTimeout a long-running command's exit after Ctrl-C.
const (
	readmeTimeout     = 5 * time.Minute
	readmeStopTimeout = 40 * time.Second
)

// readmeReady matches the line by which a command still running says it is ready:
// the examples' "listening on HOST:PORT", the library's "listening" log line (in
// slog's text format, or the default logger's), examples/queue -consume's
// "consuming" log line.
var readmeReady = regexp.MustCompile(`(?m)^listening on |^time=\S+ level=INFO msg=(?:listening|consuming)\b|` +
	`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO listening\b`)

// readmeOwnDir lists the READMEs whose commands run in their own directory rather
// than at the repository's root; they write into it, so in a temporary copy.
var readmeOwnDir = []string{
	"testdata/certs/README.md", // "running the following commands in this directory": it regenerates the fixtures
}

// readmeExclusion is a command the test does not run, and why.
type readmeExclusion struct {
	pattern *regexp.Regexp // matched against the command as written
	why     string
}

// readmeExclusions are the commands left out. Each must match some command, so
// that the list shrinks with the READMEs.
var readmeExclusions = []readmeExclusion{
	{regexp.MustCompile(`^git clone `), "cloning: the install recipe links this checkout in the clone's place"},
	{regexp.MustCompile(`^make(\s|$)`), "the make targets themselves (make test runs this test)"},
	{regexp.MustCompile(`^nats stream add `), "deployment recipe: the nats CLI against a three-node cluster on other machines"},
	{regexp.MustCompile(`^queue -hosts 10\.`), "deployment recipe: a receiver on another machine (10.0.1.11)"},
	{regexp.MustCompile(`^go run \. -nats nats://n1:`), "deployment recipe: a NATS cluster on other machines (n1..n3)"},
	{regexp.MustCompile(`^cd examples/queue && go vet \./\.\.\. && go test -race`), "make test runs examples/queue's vet and race tests itself (Makefile NESTED): minutes more"},
	{regexp.MustCompile(`^go test -run TestThroughput `), "a measurement (QUEUE_BENCH_*), and make test runs TestThroughput with examples/queue's tests"},
}

// readerEnv is the test's environment without GOWORK.
func readerEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOWORK=") })
}

// readmeRunSource runs the commands of one file, in order.
func readmeRunSource(t *testing.T, root, source string, cmds []readmeCmd, env []string) {
	r := &readmeReader{root: root, cwd: root, env: slices.Clone(env)}
	readmeCleanUp(t, root)
	readmeKeepCheckout(t, root)
	t.Cleanup(func() { r.stopAll(t) })
	if slices.Contains(readmeOwnDir, source) {
		r.cwd = copyDir(t, filepath.Join(root, filepath.Dir(source)))
	}
	readmePortsFree(t, cmds)
	install := installBlocks(cmds)
	for i := 0; i < len(cmds); i++ {
		c := cmds[i]
		if install[c.Block] {
			n := i
			for n < len(cmds) && cmds[n].Block == c.Block {
				n++
			}
			t.Run(fmt.Sprintf("L%d install recipe", c.Line), func(t *testing.T) {
				r.stopAll(t)
				readmeInstall(t, root, source, cmds[i:n], r.env)
			})
			i = n - 1
			continue
		}
		t.Run(readmeName(c), func(t *testing.T) { r.step(t, c) })
	}
}

// readmeKeepCheckout fails the test when the commands change a file git tracks
// in the checkout (a recipe run in the wrong folder: go mod edit on the library's
// go.mod), and puts the file back.
func readmeKeepCheckout(t *testing.T, root string) {
	t.Helper()
	before := trackedChanges(t, root)
	t.Cleanup(func() {
		for _, f := range trackedChanges(t, root) {
			if !slices.Contains(before, f) {
				t.Errorf("the commands changed %s, a file of the checkout; restored", f)
				mustRun(t, root, nil, "git", "checkout", "--", f)
			}
		}
	})
}

// trackedChanges lists the tracked files of the checkout that differ from git's index.
func trackedChanges(t *testing.T, root string) []string {
	t.Helper()
	return strings.Fields(mustRun(t, root, nil, "git", "diff", "--name-only"))
}

// readmeName is a subtest's name for c: its line and first words.
func readmeName(c readmeCmd) string {
	words := strings.Fields(c.Text)
	return fmt.Sprintf("L%d %s", c.Line, strings.Join(words[:min(len(words), 4)], " "))
}

// excluded returns the index of the exclusion c matches, or -1.
func excluded(c readmeCmd) int {
	return slices.IndexFunc(readmeExclusions, func(ex readmeExclusion) bool { return ex.pattern.MatchString(c.Text) })
}

// installBlocks returns the blocks (by number) that hold a git clone: install recipes.
func installBlocks(cmds []readmeCmd) map[int]bool {
	out := map[int]bool{}
	for _, c := range cmds {
		if strings.HasPrefix(commandWords(c.Text), "git clone ") {
			out[c.Block] = true
		}
	}
	return out
}

// readmePortsFree fails the test when a port the commands use is taken: the
// library's default port and every loopback port they name.
func readmePortsFree(t *testing.T, cmds []readmeCmd) {
	t.Helper()
	ports := []string{smtpd.DefaultPorts}
	for _, c := range cmds {
		ports = append(ports, namedPorts(c.Text)...)
	}
	slices.Sort(ports)
	for _, p := range slices.Compact(ports) {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", p))
		if err != nil {
			t.Fatalf("port 127.0.0.1:%s is taken by a process this test did not start (%v); these commands need it free:\n%s",
				p, err, commandList(cmds))
		}
		l.Close()
	}
}

// readmeLoopback matches a loopback address with a port; readmePortsFlag the
// examples' -ports flag.
var (
	readmeLoopback  = regexp.MustCompile(`(?:\b127\.\d+\.\d+\.\d+|\blocalhost|\[::1\]):(\d+)\b`)
	readmePortsFlag = regexp.MustCompile(`(?:^|\s)-ports[ =](\d+)\b`)
)

// namedPorts returns the loopback ports text names.
func namedPorts(text string) []string {
	var out []string
	for _, re := range []*regexp.Regexp{readmeLoopback, readmePortsFlag} {
		for _, m := range re.FindAllStringSubmatch(text, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// commandList lists cmds one per line, for messages.
func commandList(cmds []readmeCmd) string {
	var b strings.Builder
	for _, c := range cmds {
		b.WriteString("  " + c.String() + "\n")
	}
	return b.String()
}

// copyDir copies the files of dir (not its subdirectories) into a temporary
// directory and returns that.
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		if e.Type().IsRegular() {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(out, e.Name()), b, 0o644))
		}
	}
	return out
}

// readmeNeedTools skips c, or fails it under CI, when a program it runs is not
// installed: the first word of each of its pipeline and list parts.
func readmeNeedTools(t *testing.T, c readmeCmd) {
	t.Helper()
	text, _, _ := strings.Cut(c.Text, "\n") // a here-document's body is data, not commands
	for _, part := range regexp.MustCompile(`\|\||&&|[|;]`).Split(text, -1) {
		fields := strings.Fields(commandWords(part))
		if len(fields) == 0 || slices.Contains(shellBuiltins, fields[0]) || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if _, err := exec.LookPath(fields[0]); err != nil {
			clientsMissing(t, fmt.Sprintf("%s needs %s: %v", c, fields[0], err))
		}
	}
}

// shellBuiltins are the words bash runs itself.
var shellBuiltins = []string{"cd", "echo", "export", "printf", "set", "test", "[", "true", "false", "exit", "wait", "kill", "read", "source", "."}

// readmeCleanUp removes, when the test ends (after its commands were stopped),
// what they left in the checkout without naming it, such as examples/queue's data folder: the new
// entries of git status that git ignores. Other new entries are only reported.
func readmeCleanUp(t *testing.T, root string) {
	t.Helper()
	before, ok := gitLeftovers(root)
	if !ok {
		t.Logf("git cannot list the checkout's untracked files: what the commands leave there stays")
		return
	}
	t.Cleanup(func() {
		after, _ := gitLeftovers(root)
		for entry, ignored := range after {
			if _, had := before[entry]; had {
				continue
			}
			if ignored {
				t.Logf("removing %s, left by the commands", entry)
				os.RemoveAll(filepath.Join(root, entry))
			} else {
				t.Logf("left in the checkout by the commands, not removed: %s", entry)
			}
		}
	})
}

// gitLeftovers returns the untracked and the ignored entries of git status in
// root (true: ignored), or false when git cannot tell.
func gitLeftovers(root string) (map[string]bool, bool) {
	out, err := exec.Command("git", "-C", root, "status", "--porcelain", "--ignored", "--untracked-files=normal").Output()
	if err != nil {
		return nil, false
	}
	entries := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if code, path, ok := strings.Cut(line, " "); ok && (code == "??" || code == "!!") {
			entries[strings.TrimSuffix(path, "/")] = code == "!!"
		}
	}
	return entries, true
}
