package main

import (
	"os/exec"
	"regexp"
	"testing"

	"github.com/midismtp/smtpd/internal/testenv/realmilter"
)

// TestSwaks: the README's client, swaks, delivers to mx in plain text and over
// STARTTLS, and the message is stored with our field first.
func TestSwaks(t *testing.T) {
	swaks := realmilter.Need(t, "swaks", "swaks")
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
