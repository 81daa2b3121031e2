package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd/smtptest"
)

// syncBuffer is an io.Writer that run may write to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// mxRun is one in-process run of mx.
type mxRun struct {
	Addr   string // the first "listening on" address
	Addrs  []string
	Out    string // the -out folder
	stdout *syncBuffer
	stderr *syncBuffer

	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
	stopErr  error
}

var listenRe = regexp.MustCompile(`(?m)^listening on (\S+)\n`)

// hasFlag reports whether args set the flag name.
func hasFlag(args []string, name string) bool {
	return slices.ContainsFunc(args, func(a string) bool {
		return a == "-"+name || strings.HasPrefix(a, "-"+name+"=")
	})
}

// startMX runs mx in this process with args until the test ends. Unless args set
// them, it gets -ports 0, -out a temporary folder, -authserv-id mx.test and
// -resolver a loopback port where nothing answers (every lookup is temperror at
// once: no test asks the system's resolver, which may be outside loopback).
func startMX(t testing.TB, args ...string) *mxRun {
	t.Helper()
	r := &mxRun{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	if !hasFlag(args, "ports") {
		args = append(args, "-ports", "0")
	}
	if !hasFlag(args, "out") {
		r.Out = t.TempDir()
		args = append(args, "-out", r.Out)
	}
	if !hasFlag(args, "authserv-id") {
		args = append(args, "-authserv-id", "mx.test")
	}
	if !hasFlag(args, "resolver") {
		args = append(args, "-resolver", deadDNS(t))
	}
	for i, a := range args {
		if a == "-out" && i+1 < len(args) {
			r.Out = args[i+1]
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- run(ctx, args, r.stdout, r.stderr) }()
	deadline := time.After(10 * time.Second)
	for r.Addr == "" {
		for _, m := range listenRe.FindAllStringSubmatch(r.stdout.String(), -1) {
			r.Addrs = append(r.Addrs, m[1])
		}
		if len(r.Addrs) > 0 {
			r.Addr = r.Addrs[0]
			break
		}
		select {
		case err := <-r.done:
			cancel()
			t.Fatalf("mx returned before listening: %v\nstderr:\n%s", err, r.stderr)
		case <-deadline:
			cancel()
			t.Fatalf("mx did not listen within 10s; stderr:\n%s", r.stderr)
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("mx after cancel: %v; stderr:\n%s", err, r.stderr)
		}
	})
	return r
}

// stop cancels run's context, as SIGTERM does, and returns what run returned.
func (r *mxRun) stop() error {
	r.stopOnce.Do(func() {
		r.cancel()
		select {
		case r.stopErr = <-r.done:
		case <-time.After(40 * time.Second):
			r.stopErr = errors.New("run did not return within 40s of cancel")
		}
	})
	return r.stopErr
}

// mxConn is a raw SMTP client connection to mx.
type mxConn = smtptest.Conn

// dial connects a raw SMTP client to mx and reads its banner.
func (r *mxRun) dial(t testing.TB) *mxConn {
	t.Helper()
	return (&smtptest.Server{Addr: r.Addr}).DialGreeted(t)
}

// dialRaw connects a raw SMTP client to mx and reads nothing.
func dialRaw(t testing.TB, r *mxRun) *mxConn {
	t.Helper()
	return (&smtptest.Server{Addr: r.Addr}).Dial(t)
}

// deadDNS returns a loopback UDP address where nothing listens: a resolver
// pointed there gets "connection refused" at once.
func deadDNS(t testing.TB) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

// stored is one message mx stored: its .eml and its .json.
type stored struct {
	EML  []byte
	Rec  record
	JSON map[string]any // the .json as a map, for the presence of fields
}

// messages returns the messages stored in dir, by id, after checking that every
// .eml has its .json and that no temporary file is left.
func messages(t testing.TB, dir string) map[string]stored {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]stored{}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, "."):
			t.Errorf("a temporary file is left in %s: %s", dir, name)
		case strings.HasSuffix(name, ".json"):
			id := strings.TrimSuffix(name, ".json")
			var m stored
			js := readFile(t, filepath.Join(dir, name))
			if err := json.Unmarshal(js, &m.Rec); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if err := json.Unmarshal(js, &m.JSON); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			m.EML = readFile(t, filepath.Join(dir, id+".eml"))
			out[id] = m
		case strings.HasSuffix(name, ".eml"):
			if _, err := os.Stat(filepath.Join(dir, strings.TrimSuffix(name, ".eml")+".json")); err != nil {
				t.Errorf("%s has no .json: %v", name, err)
			}
		}
	}
	return out
}

// only returns the one message stored in dir.
func only(t testing.TB, dir string) stored {
	t.Helper()
	ms := messages(t, dir)
	if len(ms) != 1 {
		t.Fatalf("want 1 message in %s, have %d", dir, len(ms))
	}
	for _, m := range ms {
		return m
	}
	return stored{}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// send delivers msg over c (greeted) from from to rcpts with DATA and returns the
// code and text of the reply to the final dot.
func send(t testing.TB, c *smtptest.Conn, from string, rcpts []string, msg string) (int, string) {
	t.Helper()
	c.Cmd("MAIL FROM:<"+from+">", 250)
	for _, r := range rcpts {
		c.Cmd("RCPT TO:<"+r+">", 250)
	}
	c.Cmd("DATA", 354)
	c.Send(dotStuff(msg) + ".\r\n")
	return c.Reply()
}

// deliver greets mx and sends one message from alice@example.test to
// bob@dest.test, returning the reply to its final dot.
func deliver(t testing.TB, r *mxRun, msg string) (int, string) {
	t.Helper()
	c := r.dial(t)
	c.Cmd("EHLO client.test", 250)
	code, text := send(t, c, "alice@example.test", []string{"bob@dest.test"}, msg)
	c.Cmd("QUIT", 221)
	return code, text
}

// dotStuff doubles the dot that starts a line (RFC 5321 4.5.2); msg ends in CRLF.
func dotStuff(msg string) string {
	if strings.HasPrefix(msg, ".") {
		msg = "." + msg
	}
	return strings.ReplaceAll(msg, "\r\n.", "\r\n..")
}

// crlf turns the LF line ends of a test message into CRLF.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// plainMessage is a small message from alice@example.test.
var plainMessage = crlf(`From: Alice <alice@example.test>
To: bob@dest.test
Subject: hello
Date: Mon, 7 Dec 2026 10:00:00 +0000
Message-ID: <1@example.test>

Hello Bob.
`)

// fieldsOf returns the header fields of msg in order, each as "Name: value" with
// its folding (CRLF and all), up to the empty line.
func fieldsOf(msg []byte) []string {
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	var out []string
	for line := range strings.SplitSeq(string(head)+"\r\n", "\r\n") {
		switch {
		case line == "":
		case (line[0] == ' ' || line[0] == '\t') && len(out) > 0:
			out[len(out)-1] += "\r\n" + line
		default:
			out = append(out, line)
		}
	}
	return out
}

// bodyOf returns what follows the empty line of msg.
func bodyOf(msg []byte) []byte {
	_, body, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	return body
}
