package smtptest

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
)

// fakeTB records the first fatal failure and ends the goroutine, as t.Fatal does.
type fakeTB struct {
	testing.TB
	failure string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failure = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// replyFrom reads one reply with a Conn whose server sends raw and then waits.
func replyFrom(t *testing.T, raw string) (code int, text, failure string) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go server.Write([]byte(raw))
	tb := &fakeTB{TB: t}
	c := &Conn{Timeout: 200 * time.Millisecond, t: tb, conn: client, r: bufio.NewReader(client)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, text = c.Reply()
	}()
	<-done
	return code, text, tb.failure
}

func TestReplyStrict(t *testing.T) {
	for _, tc := range []struct {
		raw, text, failure string
		code               int
	}{
		{raw: "250 OK\r\n", code: 250, text: "OK"},
		{raw: "250\r\n", code: 250, text: ""},
		{raw: "250-a\r\n250-\r\n250 c\r\n", code: 250, text: "a\n\nc"},
		{raw: "250-a\r\n251 b\r\n", failure: "in a 250 reply"},
		{raw: "250 OK\n", failure: "does not end with its only CRLF"},
		{raw: "250 O\rK\r\n", failure: "does not end with its only CRLF"},
		{raw: "25 OK\r\n", failure: "malformed"},
		{raw: "2x0 OK\r\n", failure: "malformed"},
		{raw: "650 OK\r\n", failure: "malformed"},
		{raw: "250_OK\r\n", failure: "malformed"},
		{raw: "250-a\r\n", failure: "after \"a\\n\""},
		{raw: "", failure: "reading a reply"},
	} {
		code, text, failure := replyFrom(t, tc.raw)
		if tc.failure != "" {
			if !strings.Contains(failure, tc.failure) {
				t.Errorf("%q: failure %q, want one with %q", tc.raw, failure, tc.failure)
			}
			continue
		}
		if failure != "" || code != tc.code || text != tc.text {
			t.Errorf("%q: %d %q (failure %q), want %d %q", tc.raw, code, text, failure, tc.code, tc.text)
		}
	}
}

func TestTestLogRing(t *testing.T) {
	var out bytes.Buffer
	l := &testLog{now: slog.LevelWarn, out: &out, ring: make([][]byte, 0, 3)}
	log := l.logger().With("session", "s1")
	for i := range 5 {
		log.Debug("trace", "i", i)
	}
	log.Warn("odd")
	if got := out.String(); got != "level=WARN msg=odd session=s1\n" {
		t.Errorf("written at once: %q", got)
	}
	out.Reset()
	l.dump()
	want := "smtptest: the server's log (3 of 6 records):\n" +
		"level=DEBUG msg=trace session=s1 i=3\nlevel=DEBUG msg=trace session=s1 i=4\nlevel=WARN msg=odd session=s1\n"
	if out.String() != want {
		t.Errorf("dump:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	l.stop()
	log.Error("after the test")
	l.dump()
	if out.Len() != 0 {
		t.Errorf("written after stop: %q", out.String())
	}
}

func TestExpectClosed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		server  func(net.Conn)
		failure string
	}{
		{"closed", func(c net.Conn) { c.Close() }, ""},
		{"bytes", func(c net.Conn) { c.Write([]byte("221 bye\r\n")) }, `read "221 bye\r\n"`},
		{"open", func(net.Conn) {}, "still open"},
	} {
		client, server := net.Pipe()
		go tc.server(server)
		tb := &fakeTB{TB: t}
		c := &Conn{Timeout: 200 * time.Millisecond, t: tb, conn: client, r: bufio.NewReader(client)}
		done := make(chan struct{})
		go func() { defer close(done); c.ExpectClosed() }()
		<-done
		client.Close()
		server.Close()
		if !strings.Contains(tb.failure, tc.failure) || (tc.failure == "") != (tb.failure == "") {
			t.Errorf("%s: failure %q, want %q", tc.name, tb.failure, tc.failure)
		}
	}
}

type misspelledHandler struct{ Recorder }

func (*misspelledHandler) OnRcpt(*smtpd.Session, string) (string, error) { return "", nil }

// NewServer fails the test on a handler whose hook is misspelled.
func TestNewServerRefusesMisspelledHook(t *testing.T) {
	tb := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		NewServer(tb, &misspelledHandler{})
	}()
	<-done
	if !strings.Contains(tb.failure, "OnRcpt is no hook and is never called; did you mean OnRcptTo?") {
		t.Fatalf("failure %q", tb.failure)
	}
}
