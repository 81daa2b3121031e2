package main

import (
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// need returns the path of the program name, or ends the test: it fails when
// the environment variable CI is set (CI must have every tool), skips otherwise.
func need(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin"} {
			if _, serr := os.Stat(dir + "/" + name); serr == nil {
				return dir + "/" + name
			}
		}
		msg := name + " is not installed (Debian package " + pkg + ")"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// TestSwaks: the README's client, swaks, delivers to mx in plain text and over
// STARTTLS, and the message is stored with our field first.
func TestSwaks(t *testing.T) {
	swaks := need(t, "swaks", "swaks")
	mx := startMX(t)
	for i, extra := range [][]string{nil, {"--tls"}} {
		args := append([]string{"--server", mx.Addr, "--from", "alice@example.com", "--to", "bob@example.org",
			"--header", "Subject: hello", "--helo", "client.test"}, extra...)
		out, err := exec.Command(swaks, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks %v: %v\n%s", extra, err, out)
		}
		if !regexp.MustCompile(`(?m)^<[-~]  250 2\.0\.0`).Match(out) {
			t.Errorf("swaks %v: no 250 for the message:\n%s", extra, out)
		}
		ms := messages(t, mx.Out)
		if len(ms) != i+1 {
			t.Fatalf("%d messages stored", len(ms))
		}
	}
	encrypted := 0
	for _, m := range messages(t, mx.Out) {
		ourField(t, m.EML)
		if m.Rec.Subject != "hello" || m.Rec.From != "alice@example.com" {
			t.Errorf("stored %+v", m.Rec)
		}
		if m.Rec.Encrypted {
			encrypted++
		}
	}
	if encrypted != 1 {
		t.Errorf("%d of 2 messages over TLS, want 1", encrypted)
	}
}
