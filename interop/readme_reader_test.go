package interop

// The reader of TestReadmeCommands: where it stands, what it has running, and how
// it runs, waits for and stops each command (as a process group, by its PID).

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// readmeReader is the state a reader's terminal keeps between commands.
type readmeReader struct {
	root    string
	cwd     string           // where the next command runs
	env     []string         // its environment
	running []*readmeProcess // long-running commands, in the order they started
	created []string         // paths commands named that did not exist before them
}

// readmeProcess is one command run by bash in its own process group.
type readmeProcess struct {
	cmd  readmeCmd
	proc *exec.Cmd
	out  *lockedBuffer // stdout and stderr together
	done chan struct{} // closed when it has exited; err is then set
	err  error
}

// readmeCd matches a line that only changes the directory; readmeAssign one that
// only assigns variables.
var (
	readmeCd     = regexp.MustCompile(`^cd\s+(\S+)\s*(?:#.*)?$`)
	readmeAssign = regexp.MustCompile(`^(?:[A-Za-z_][A-Za-z0-9_]*=[^\s'"$` + "`" + `]*\s*)+$`)
)

// step takes one command: leaves it out, moves, assigns, or runs it.
func (r *readmeReader) step(t *testing.T, c readmeCmd) {
	if i := excluded(c); i >= 0 {
		t.Skipf("left out (%s): %s", readmeExclusions[i].why, c)
	}
	if m := readmeCd.FindStringSubmatch(c.Text); m != nil {
		dir := m[1]
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(r.cwd, m[1])
			if _, err := os.Stat(dir); err != nil {
				dir = filepath.Join(r.root, m[1]) // a second terminal: it starts at the repository root
			}
		}
		fi, err := os.Stat(dir)
		require.NoError(t, err, "%s", c)
		require.True(t, fi.IsDir(), "%s: not a directory", c)
		r.cwd = dir
		return
	}
	if readmeAssign.MatchString(c.Text) {
		r.env = append(r.env, strings.Fields(c.Text)...)
		return
	}
	readmeNeedTools(t, c)
	r.stopUnrelated(t, c)
	r.notePaths(c)
	r.run(t, c)
}

// notePaths keeps the paths c names (./x, /tmp/x) that do not exist yet: the
// files and folders it may create, removed by stopAll.
func (r *readmeReader) notePaths(c readmeCmd) {
	for _, f := range strings.Fields(c.Text) {
		if strings.HasPrefix(f, "#") {
			return
		}
		if (!strings.HasPrefix(f, "./") || len(f) < 3) && !strings.HasPrefix(f, "/tmp/") {
			continue
		}
		p := f
		if !filepath.IsAbs(p) {
			p = filepath.Join(r.cwd, f)
		}
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) && !slices.Contains(r.created, p) {
			r.created = append(r.created, p)
		}
	}
}

// run starts c where the reader stands and waits until it exits or is ready.
func (r *readmeReader) run(t *testing.T, c readmeCmd) {
	p := startProcess(t, c, r.cwd, r.env)
	switch p.await(readmeTimeout) {
	case "exited":
		if p.err != nil {
			t.Errorf("%s\nin %s: %v%s\noutput:\n%s", c, r.rel(r.cwd), p.err, portHint(p), tail(p.out.String()))
		}
	case "ready":
		r.running = append(r.running, p)
		t.Logf("%s: running (ready), ports %v", c, p.ports())
	default:
		p.kill()
		t.Errorf("%s\nin %s: neither exited nor printed a ready line within %v\noutput:\n%s",
			c, r.rel(r.cwd), readmeTimeout, tail(p.out.String()))
	}
}

// rel is dir relative to the repository, for messages.
func (r *readmeReader) rel(dir string) string {
	if rel, err := filepath.Rel(r.root, dir); err == nil && !strings.HasPrefix(rel, "..") {
		return "./" + rel
	}
	return dir
}

// stopUnrelated stops (Ctrl-C) every running command whose ports c does not name.
func (r *readmeReader) stopUnrelated(t *testing.T, c readmeCmd) {
	named := namedPorts(c.Text)
	r.running = slices.DeleteFunc(r.running, func(p *readmeProcess) bool {
		if slices.ContainsFunc(p.ports(), func(port string) bool { return slices.Contains(named, port) }) {
			return false
		}
		p.stop(t)
		return true
	})
}

// stopAll stops every running command, the last started first, and removes what
// they created at the paths they named.
func (r *readmeReader) stopAll(t *testing.T) {
	for _, p := range slices.Backward(r.running) {
		p.stop(t)
	}
	r.running = nil
	for _, p := range r.created {
		if _, err := os.Lstat(p); err == nil {
			t.Logf("removing %s, made by a command", p)
			os.RemoveAll(p)
		}
	}
	r.created = nil
}

// startProcess starts c with bash in dir, in a process group of its own.
func startProcess(t *testing.T, c readmeCmd, dir string, env []string) *readmeProcess {
	t.Helper()
	cmd := exec.Command("bash", "-c", c.Text)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second // a child left holding the output pipe
	p := &readmeProcess{cmd: c, proc: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	require.NoError(t, cmd.Start(), "%s", c)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

// await waits until p exits ("exited"), prints a ready line ("ready") or d passes ("").
func (p *readmeProcess) await(d time.Duration) string {
	deadline := time.After(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			return "exited"
		case <-deadline:
			return ""
		case <-tick.C:
			if readmeReady.MatchString(p.out.String()) {
				return "ready"
			}
		}
	}
}

// ports returns the loopback ports in p's output: those it listens on.
func (p *readmeProcess) ports() []string {
	ports := namedPorts(p.out.String())
	slices.Sort(ports)
	return slices.Compact(ports)
}

// stop ends p as a reader does: Ctrl-C, that is SIGINT to its process group; it
// must then exit 0 within readmeStopTimeout (else it is killed). A command that
// has already exited by itself must have exited 0.
func (p *readmeProcess) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("%s: exited by itself: %v\noutput:\n%s", p.cmd, p.err, tail(p.out.String()))
		}
		return
	default:
	}
	syscall.Kill(-p.proc.Process.Pid, syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(readmeStopTimeout):
		p.kill()
		t.Errorf("%s: still running %v after Ctrl-C; killed\noutput:\n%s", p.cmd, readmeStopTimeout, tail(p.out.String()))
		return
	}
	if p.err != nil && !goRunInterrupted(p) {
		t.Errorf("%s: after Ctrl-C: %v\noutput:\n%s", p.cmd, p.err, tail(p.out.String()))
	}
}

// goRunFailed matches what go run prints when the program it ran failed: "exit
// status 2", or the signal that ended it.
var goRunFailed = regexp.MustCompile(`(?m)^(?:exit status \d+|signal: .+)$`)

// goRunInterrupted reports whether p is go run that exited 1 because it was
// interrupted, its program having exited 0: go run exits 1 after an interrupt
// whatever its program did ("The exit status of Run is not the exit status of the
// compiled binary"), and prints "exit status N" when the program failed.
func goRunInterrupted(p *readmeProcess) bool {
	var ee *exec.ExitError
	return errors.As(p.err, &ee) && ee.ExitCode() == 1 &&
		regexp.MustCompile(`(?:^|[\s;&|(])go run\b`).MatchString(p.cmd.Text) && !goRunFailed.MatchString(p.out.String())
}

// kill kills p's process group and waits for it.
func (p *readmeProcess) kill() {
	syscall.Kill(-p.proc.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// portHint explains a failure to listen.
func portHint(p *readmeProcess) string {
	if strings.Contains(p.out.String(), "address already in use") {
		return " (a port it needs is taken: by an earlier command still running, or by a process this test did not start)"
	}
	return ""
}

// tail is the end of a command's output, for messages.
func tail(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > 40 {
		lines = append([]string{fmt.Sprintf("[... %d lines]", len(lines)-40)}, lines[len(lines)-40:]...)
	}
	return strings.Join(lines, "\n")
}

// readmeInstall runs an install recipe (cmds, one block of source) in a new
// directory, the reader's own folder: see TestReadmeCommands. A recipe that makes
// its module itself (mkdir, cd, go mod init) runs from that folder; one for a
// module the reader already has runs in a new module, app, made there first.
func readmeInstall(t *testing.T, root, source string, cmds []readmeCmd, env []string) {
	r := &readmeReader{root: root, cwd: t.TempDir(), env: env}
	if !slices.ContainsFunc(cmds, func(c readmeCmd) bool { return strings.HasPrefix(commandWords(c.Text), "go mod init") }) {
		app := filepath.Join(r.cwd, "app")
		require.NoError(t, os.Mkdir(app, 0o755))
		mustRun(t, app, env, "go", "mod", "init", "example.com/app")
		r.cwd = app
		if !slices.ContainsFunc(cmds, func(c readmeCmd) bool { return strings.Contains(c.Text, ".go") }) {
			require.NoError(t, os.WriteFile(filepath.Join(app, "main.go"), []byte(readmeProgram(t, root, source)), 0o644))
		}
	}
	for _, c := range cmds {
		if target, ok := cloneTarget(c); ok {
			t.Logf("%s: links this checkout at %s instead", c, target)
			require.NoError(t, os.Symlink(root, filepath.Join(r.cwd, target)))
			continue
		}
		if i := excluded(c); i >= 0 {
			t.Logf("left out (%s): %s", readmeExclusions[i].why, c)
			continue
		}
		r.step(t, c)
	}
	r.stopAll(t)
	if !t.Failed() {
		out := mustRun(t, r.cwd, env, "go", "build", "-o", os.DevNull, ".")
		gomod, err := os.ReadFile(filepath.Join(r.cwd, "go.mod"))
		require.NoError(t, err)
		require.Regexp(t, `(?m)^\s*(require\s+)?github.com/midismtp/smtpd v`, string(gomod), "go.mod after the recipe:\n%s\n%s", gomod, out)
	}
}

// cloneTarget returns the directory "git clone URL [DIR]" makes: DIR, or the
// URL's last element without ".git".
func cloneTarget(c readmeCmd) (string, bool) {
	f := strings.Fields(commandWords(c.Text))
	if i := slices.IndexFunc(f, func(w string) bool { return strings.HasPrefix(w, "#") }); i >= 0 {
		f = f[:i]
	}
	if len(f) < 3 || f[0] != "git" || f[1] != "clone" {
		return "", false
	}
	if len(f) == 3 {
		return strings.TrimSuffix(filepath.Base(f[2]), ".git"), true
	}
	return f[len(f)-1], true
}

// readmeProgram is the first complete program of source: a ```go block with
// package main and func main.
func readmeProgram(t *testing.T, root, source string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, source))
	require.NoError(t, err)
	for _, m := range regexp.MustCompile("(?ms)^```go\n(.*?)^```").FindAllStringSubmatch(string(b), -1) {
		if strings.Contains(m[1], "package main\n") && strings.Contains(m[1], "func main()") {
			return m[1]
		}
	}
	t.Fatalf("%s has an install recipe but no complete program (a ```go block with package main) to build with it", source)
	return ""
}

// mustRun runs a command of the test's own (not one of a README) in dir and
// returns its output; it must exit 0 within readmeTimeout.
func mustRun(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readmeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %q in %s:\n%s", name, args, dir, out)
	return string(out)
}
