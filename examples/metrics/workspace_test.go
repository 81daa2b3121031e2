package main

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the repository's top directory, as seen from this module.
const repoRoot = "../.."

// TestWorkspaceListsEveryModule checks that the repository's go.work uses every
// Go module of the repository: a module missing there cannot be built in its own
// directory ("main module ... does not contain package"), which is how
// `cd examples/metrics && go run .` once failed. make test runs the nested
// modules with GOWORK=off, so only this test sees the workspace.
func TestWorkspaceListsEveryModule(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(root, "go.work")
	out, err := exec.Command("go", "work", "edit", "-json", work).Output()
	if err != nil {
		t.Fatalf("go work edit -json %s: %v", work, err)
	}
	var ws struct{ Use []struct{ DiskPath string } }
	if err := json.Unmarshal(out, &ws); err != nil {
		t.Fatal(err)
	}
	var used []string
	for _, u := range ws.Use {
		used = append(used, filepath.Clean(u.DiskPath))
	}
	mods := modules(t, root)
	for _, m := range mods {
		if !slices.Contains(used, m) {
			t.Errorf("go.work does not use %s: add it (go work use %s)", m, m)
		}
	}
	for _, u := range used {
		if !slices.Contains(mods, u) {
			t.Errorf("go.work uses %s, which is no module of the repository", u)
		}
	}
	// What a reader runs: the go command, in each module's directory, with the workspace.
	for _, m := range mods {
		cmd := exec.Command("go", "list", "-find", "./...")
		cmd.Dir = filepath.Join(root, m)
		cmd.Env = append(os.Environ(), "GOWORK="+work)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("in %s, go list -find ./... with go.work: %v\n%s", m, err, out)
		}
	}
}

// modules returns the directories, relative to root, that hold a go.mod; hidden
// directories, testdata and node_modules are not part of any build.
func modules(t *testing.T, root string) []string {
	t.Helper()
	var mods []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") ||
			name == "testdata" || name == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && name == "go.mod" {
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			mods = append(mods, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(mods, ".") {
		t.Fatalf("no go.mod at %s: not the repository's root", root)
	}
	return mods
}

// TestGoWorkSumIgnored checks that go.work.sum, which the go command writes at the
// root in workspace mode (go doc, go run), is not left as an untracked file.
func TestGoWorkSumIgnored(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("git not found; CI has it")
		}
		t.Skip("git not found")
	}
	cmd := exec.Command(git, "check-ignore", "-q", "go.work.sum")
	cmd.Dir = repoRoot
	if err := cmd.Run(); err != nil {
		if _, statErr := os.Stat(filepath.Join(repoRoot, ".git")); statErr != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("not a git checkout (%v); CI runs on a clone", statErr)
			}
			t.Skipf("not a git checkout: %v", statErr)
		}
		t.Errorf("git check-ignore go.work.sum: %v; .gitignore must list /go.work.sum", err)
	}
}
