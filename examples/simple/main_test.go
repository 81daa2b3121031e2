package main

import (
	"strings"
	"sync"
	"testing"

	"github.com/midismtp/smtpd/smtptest"
)

// lockedBuilder is the handler's output, written by the server's goroutine.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestSimplePrintsDecodedSubject(t *testing.T) {
	for _, tc := range []struct{ subject, want string }{
		{"plain words", "plain words"},
		{"=?utf-8?q?Gr=C3=BC=C3=9Fe?= aus =?ISO-8859-1?B?S/Zsbg==?=", "Grüße aus Köln"},
		{"=?x-unknown?q?abc?=", "=?x-unknown?q?abc?="},
	} {
		out := &lockedBuilder{}
		ts := smtptest.NewServer(t, handler{out: out})
		msg := "Subject: " + tc.subject + "\r\n\r\nbody\r\n"
		if err := ts.SendMail(nil, "a@example.org", []string{"b@example.net"}, msg); err != nil {
			t.Fatal(err)
		}
		want := `from <a@example.org> to ["b@example.net"]: ` + tc.want + "\n"
		if got := out.String(); got != want {
			t.Errorf("subject %q printed %q, want %q", tc.subject, got, want)
		}
	}
}
