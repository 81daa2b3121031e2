package interop

// Finding the commands a reader copies: the rules are in readme_commands_test.go's
// doc; this file reads them out of Markdown and out of Go package docs.

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// readmeCmd is one command line as a reader copies it.
type readmeCmd struct {
	Source string // the file, relative to the repository: README.md, examples/simple/main.go
	Line   int    // its first line in the file
	Text   string // as written: continuation lines joined, each "\\\n" kept
	Block  int    // the code block it is in, counted from 1 within the file
}

func (c readmeCmd) String() string { return c.Source + ":" + strconv.Itoa(c.Line) + ": " + c.Text }

// readmeShellTags are the info strings of the fenced blocks whose lines are
// commands; in a console block only the lines after a "$ " prompt are.
var readmeShellTags = []string{"sh", "shell", "bash", "console"}

// readmeFence opens or closes a fenced code block (CommonMark: three or more
// backticks or tildes, indented at most three spaces), with its info string.
var readmeFence = regexp.MustCompile("^ {0,3}(`{3,}|~{3,})\\s*([^`\\s]*)")

// readmeSources lists the files whose commands the test runs, relative to root:
// every README.md of the repository (not in hidden folders or node_modules) and the
// package doc of every example (examples/*/main.go: what go doc shows as its
// README), README.md first, then in path order.
func readmeSources(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && path != root && (strings.HasPrefix(name, ".") || name == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && name == "README.md" {
			rel, err := filepath.Rel(root, path)
			out = append(out, filepath.ToSlash(rel))
			return err
		}
		return nil
	})
	require.NoError(t, err)
	docs, err := filepath.Glob(filepath.Join(root, "examples", "*", "main.go"))
	require.NoError(t, err)
	for _, d := range docs {
		rel, err := filepath.Rel(root, d)
		require.NoError(t, err)
		out = append(out, filepath.ToSlash(rel))
	}
	slices.SortFunc(out, func(a, b string) int {
		if (a == "README.md") != (b == "README.md") {
			return map[bool]int{true: -1, false: 1}[a == "README.md"]
		}
		return strings.Compare(a, b)
	})
	return out
}

// readmeCommands reads the commands of one source file.
func readmeCommands(t *testing.T, root, source string) []readmeCmd {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, source))
	require.NoError(t, err)
	if strings.HasSuffix(source, ".go") {
		return goDocCommands(source, string(b))
	}
	return markdownCommands(source, string(b))
}

// markdownCommands returns the commands of the shell blocks of a Markdown text.
func markdownCommands(source, text string) []readmeCmd {
	var cmds []readmeCmd
	var fence, tag string
	var body []string
	start, block := 0, 0
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		m := readmeFence.FindStringSubmatch(line)
		switch {
		case fence == "" && m != nil:
			fence, tag, start, body = m[1], strings.ToLower(m[2]), i+1, nil
		case fence != "" && m != nil && m[2] == "" && strings.HasPrefix(m[1], fence[:1]) && len(m[1]) >= len(fence):
			if slices.Contains(readmeShellTags, tag) {
				block++
				cmds = append(cmds, shellLines(source, start+1, block, body, tag == "console")...)
			}
			fence = ""
		case fence != "":
			body = append(body, line)
		}
	}
	return cmds
}

// goDocCommands returns the commands of a Go file's package doc: its code blocks
// (lines indented by a tab after "//") whose first command starts with go or cd.
func goDocCommands(source, text string) []readmeCmd {
	var cmds []readmeCmd
	var body []string
	start, block := 0, 0
	flush := func() {
		if len(body) > 0 && regexp.MustCompile(`^(go|cd)\s`).MatchString(commandWords(body[0])) {
			block++
			cmds = append(cmds, shellLines(source, start, block, body, false)...)
		}
		body = nil
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "package ") {
			break
		}
		code, ok := strings.CutPrefix(line, "//\t")
		if !ok {
			flush()
			continue
		}
		if body == nil {
			start = n
		}
		body = append(body, code)
	}
	flush()
	return cmds
}

// shellLines turns the lines of one shell block, the first at line first of
// source, into commands: a line ending in a backslash goes on with the next one;
// blank and comment lines are no commands; in a console block only lines after a
// "$ " prompt are, without it.
func shellLines(source string, first, block int, body []string, console bool) []readmeCmd {
	var cmds []readmeCmd
	for i := 0; i < len(body); i++ {
		line, n := body[i], first+i
		if console {
			var ok bool
			if line, ok = strings.CutPrefix(strings.TrimLeft(line, " "), "$ "); !ok {
				continue
			}
		}
		for continued(line) && i+1 < len(body) {
			i++
			line += "\n" + body[i]
		}
		if m := readmeHeredoc.FindStringSubmatch(line); m != nil {
			for i+1 < len(body) {
				i++
				line += "\n" + body[i]
				if strings.TrimLeft(body[i], "\t") == m[1] {
					break
				}
			}
		}
		if trimmed := strings.TrimSpace(line); trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		cmds = append(cmds, readmeCmd{Source: source, Line: n, Text: strings.TrimSpace(line), Block: block})
	}
	return cmds
}

// readmeHeredoc matches a here-document's start (<<EOF, <<-'EOF'): its lines up to
// the delimiter belong to the command.
var readmeHeredoc = regexp.MustCompile(`<<-?\s*['"]?([A-Za-z_][A-Za-z0-9_]*)['"]?`)

// continued reports whether a shell line ends in an unescaped backslash.
func continued(line string) bool {
	n := len(line) - len(strings.TrimRight(line, `\`))
	return n%2 == 1
}

// commandWords is a command without its leading NAME=value assignments.
func commandWords(text string) string {
	return readmeAssignments.ReplaceAllString(strings.TrimSpace(text), "")
}

// readmeAssignments matches the NAME=value words that start a command.
var readmeAssignments = regexp.MustCompile(`^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)+`)

func TestReadmeParse(t *testing.T) {
	const md = "# Title\n" +
		"```sh\n" +
		"go run ./x   # a comment\n" +
		"\n" +
		"# a comment line\n" +
		"nats stream add A --b \\\n" +
		"  --c d\n" +
		"```\n" +
		"```go\n" +
		"fmt.Println(1)\n" +
		"```\n" +
		"````console\n" +
		"$ swaks --to a@b\n" +
		"=== output\n" +
		"$ cat > main.go <<'EOF'\n" +
		"package main\n" +
		"# not a comment\n" +
		"EOF\n" +
		"$ go build .\n" +
		"=== output\n" +
		"  $ cd x\n" +
		"````\n" +
		"```\n" +
		"frontend smtp\n" +
		"```\n"
	got := markdownCommands("R.md", md)
	require.Equal(t, []readmeCmd{
		{Source: "R.md", Line: 3, Text: "go run ./x   # a comment", Block: 1},
		{Source: "R.md", Line: 6, Text: "nats stream add A --b \\\n  --c d", Block: 1},
		{Source: "R.md", Line: 13, Text: "swaks --to a@b", Block: 2},
		{Source: "R.md", Line: 15, Text: "cat > main.go <<'EOF'\npackage main\n# not a comment\nEOF", Block: 2},
		{Source: "R.md", Line: 19, Text: "go build .", Block: 2},
		{Source: "R.md", Line: 21, Text: "cd x", Block: 2},
	}, got)

	const doc = "// Command x does y.\n" +
		"//\n" +
		"//\tcd examples/x\n" +
		"//\tSINK=1 go run . -a 1\n" +
		"//\n" +
		"//\tmetric_total  counter\n" +
		"//\n" +
		"//\tX=1 go run ./examples/x\n" +
		"package main\n" +
		"//\tgo run never\n"
	require.Equal(t, []readmeCmd{
		{Source: "m.go", Line: 3, Text: "cd examples/x", Block: 1},
		{Source: "m.go", Line: 4, Text: "SINK=1 go run . -a 1", Block: 1},
		{Source: "m.go", Line: 8, Text: "X=1 go run ./examples/x", Block: 2},
	}, goDocCommands("m.go", doc))

	require.True(t, continued(`a \`))
	require.False(t, continued(`a \\`))
	require.Equal(t, "go run .", commandWords("A=1 B= go run ."))
}
