package mailauth

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestStripForged(t *testing.T) {
	const body = "\r\nAuthentication-Results: mx.rcpt.test; spf=pass\r\n" // in the body: kept
	for _, tc := range []struct {
		name, in, want string
	}{
		{"ours", "Authentication-Results: mx.rcpt.test; spf=pass\r\nFrom: a\r\n", "From: a\r\n"},
		{"ours, other case, folded", "From: a\r\nAUTHENTICATION-RESULTS:\r\n MX.Rcpt.Test;\r\n\tdkim=pass\r\nTo: b\r\n", "From: a\r\nTo: b\r\n"},
		{"ours after a comment", "Authentication-Results: (forged (nested)) mx.rcpt.test; spf=pass\r\nFrom: a\r\n", "From: a\r\n"},
		{"ours quoted", "Authentication-Results: \"mx.rcpt.test\"; none\r\n", ""},
		{"ours with a version", "Authentication-Results: mx.rcpt.test 1; none\r\n", ""},
		{"ours, no results", "Authentication-Results: mx.rcpt.test\r\n", ""},
		{"space before the colon", "Authentication-Results : mx.rcpt.test; none\r\nFrom: a\r\n", "From: a\r\n"},
		{"others kept", "Authentication-Results: mx.other.test; spf=pass\r\nFrom: a\r\n", "Authentication-Results: mx.other.test; spf=pass\r\nFrom: a\r\n"},
		{"longer id kept", "Authentication-Results: mx.rcpt.test.evil; none\r\n", "Authentication-Results: mx.rcpt.test.evil; none\r\n"},
		{"prefix id kept", "Authentication-Results: mx.rcpt; none\r\n", "Authentication-Results: mx.rcpt; none\r\n"},
		{"ARC results kept", "ARC-Authentication-Results: i=1; mx.rcpt.test; none\r\n", "ARC-Authentication-Results: i=1; mx.rcpt.test; none\r\n"},
		{"malformed kept", "Authentication-Results: (unclosed mx.rcpt.test\r\n", "Authentication-Results: (unclosed mx.rcpt.test\r\n"},
		{"bare LF", "Authentication-Results: mx.rcpt.test; none\nFrom: a\n", "From: a\n"},
		{"body untouched", "From: a\r\n" + body, "From: a\r\n" + body},
		{"several", "Authentication-Results: mx.rcpt.test; a\r\nAuthentication-Results: x.test; b\r\nAuthentication-Results: mx.rcpt.test; c\r\n\r\nbody",
			"Authentication-Results: x.test; b\r\n\r\nbody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(StripForged([]byte(tc.in), "mx.rcpt.test")); got != tc.want {
				t.Errorf("StripForged:\n%q\nwant\n%q", got, tc.want)
			}
			for _, r := range []io.Reader{iotest.OneByteReader(strings.NewReader(tc.in)), iotest.HalfReader(strings.NewReader(tc.in))} {
				got, err := io.ReadAll(NewStripReader(r, "mx.rcpt.test"))
				if err != nil || string(got) != tc.want {
					t.Errorf("NewStripReader: %q, %v", got, err)
				}
			}
		})
	}
}

// TestStripHugeField: an Authentication-Results field whose authserv-id has not come
// within 64 KiB is removed whole, with bounded memory; a long field of another
// server is passed on whole.
func TestStripHugeField(t *testing.T) {
	long := "Authentication-Results: (" + strings.Repeat("x", 100<<10) + ") mx.rcpt.test; none\r\n"
	other := "Authentication-Results: other.test; spf=pass reason=\"" + strings.Repeat("y", 100<<10) + "\"\r\n"
	msg := long + other + "From: a\r\n\r\nbody\r\n"
	got, err := io.ReadAll(NewStripReader(strings.NewReader(msg), "mx.rcpt.test"))
	if want := other + "From: a\r\n\r\nbody\r\n"; err != nil || string(got) != want {
		t.Errorf("got %d bytes starting %.60q, %v", len(got), got, err)
	}
}

func TestStripReaderError(t *testing.T) {
	r := NewStripReader(io.MultiReader(strings.NewReader("From: a\r\n"), iotest.ErrReader(io.ErrUnexpectedEOF)), "x")
	got, err := io.ReadAll(r)
	if err != io.ErrUnexpectedEOF || string(got) != "From: a\r\n" {
		t.Errorf("%q, %v", got, err)
	}
}

func TestStripNothingToDo(t *testing.T) {
	msg := []byte("From: a\r\n\r\nAuthentication-Results: mx.rcpt.test; none\r\n")
	if got := StripForged(msg, "mx.rcpt.test"); &got[0] != &msg[0] {
		t.Error("a message without the field was copied")
	}
	if !bytes.Equal(StripForged(nil, "x"), nil) {
		t.Error("nil message")
	}
}
