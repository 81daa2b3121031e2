package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sinkBuffer is an io.Writer that run may write to while the test reads it.
type sinkBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *sinkBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *sinkBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sinkRun is one in-process run of the sink.
type sinkRun struct {
	addrs  []string // from the "listening on" lines
	stdout *sinkBuffer
	stderr *sinkBuffer

	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
	stopErr  error
}

// stop cancels run's context, as SIGTERM does, and returns what run returned.
func (r *sinkRun) stop() error {
	r.stopOnce.Do(func() {
		r.cancel()
		select {
		case r.stopErr = <-r.done:
		case <-time.After(10 * time.Second):
			r.stopErr = errors.New("run did not return within 10s of cancel")
		}
	})
	return r.stopErr
}

var sinkListenRe = regexp.MustCompile(`(?m)^listening on (\S+)\n`)

// startSink runs the sink with args until the test ends, waits for its wantAddrs
// "listening on" lines, and checks at cleanup that it stopped without error.
func startSink(t *testing.T, wantAddrs int, args ...string) *sinkRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r := &sinkRun{stdout: &sinkBuffer{}, stderr: &sinkBuffer{}, cancel: cancel, done: done}
	go func() { done <- run(ctx, args, r.stdout, r.stderr) }()
	deadline := time.After(10 * time.Second)
	for {
		m := sinkListenRe.FindAllStringSubmatch(r.stdout.String(), -1)
		if len(m) >= wantAddrs {
			for _, x := range m {
				r.addrs = append(r.addrs, x[1])
			}
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("run returned before listening: %v\nstderr:\n%s", err, r.stderr)
		case <-deadline:
			cancel()
			t.Fatalf("no %d listening lines within 10s; stdout:\n%s\nstderr:\n%s", wantAddrs, r.stdout, r.stderr)
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Cleanup(func() {
		require.NoError(t, r.stop(), "run after cancel; stderr:\n%s", r.stderr)
	})
	return r
}

// runSinkError runs the sink with args and returns its stderr and the error it stops
// with at once.
func runSinkError(t *testing.T, args ...string) (stderrText string, err error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := &sinkBuffer{}, &sinkBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, stdout, stderr) }()
	select {
	case err := <-done:
		require.Empty(t, stdout.String(), "nothing may be printed on stdout when run fails")
		return stderr.String(), err
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Fatalf("run %q did not fail; stdout:\n%s", args, stdout)
		return "", nil
	}
}

// sinkFiles returns the names in dir, sorted.
func sinkFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// sinkRecord reads DIR/<id>.json, checking that its "id" is its name.
func sinkRecord(t *testing.T, dir, id string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, id+".json"))
	require.NoError(t, err)
	var rec map[string]any
	require.NoError(t, json.Unmarshal(raw, &rec))
	require.Equal(t, id, rec["id"])
	return rec
}

// sinkOnlyMessage checks that dir holds exactly one message (an .eml and a .json
// file, no temporary file) and returns its id.
func sinkOnlyMessage(t *testing.T, dir string) string {
	t.Helper()
	names := sinkFiles(t, dir)
	require.Len(t, names, 2, "files: %q", names)
	id := strings.TrimSuffix(names[0], ".eml")
	require.Equal(t, []string{id + ".eml", id + ".json"}, names)
	return id
}

// sinkCode returns the SMTP reply code carried by err (0 if none).
func sinkCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func TestSinkStoresMessage(t *testing.T) {
	msg := "From: Alice <alice@example.com>\r\nSubject: stored\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n \r\nlast line\r\n"
	tests := []struct {
		name     string
		args     []string
		from     string
		to       []string
		msg      string
		wantBody string
		wantUTF8 string
	}{
		{name: "plain", from: "alice@example.com", to: []string{"bob@example.net", "carol@example.org"}, msg: msg},
		{name: "null sender", from: "", to: []string{"bob@example.net"}, msg: msg},
		{name: "i18n", args: []string{"-i18n"}, from: "jörg@example.com", to: []string{"zoë@example.net"},
			msg: "Subject: Grüße\r\n\r\nÄÖÜ 8bit body\r\n", wantBody: "8bitmime", wantUTF8: "utf8"},
		{name: "crlf leave, pipelining", args: []string{"-crlf", "leave", "-pipelining"}, from: "a@example.com", to: []string{"b@example.com"}, msg: msg},
		{name: "crlf strict", args: []string{"-crlf", "strict"}, from: "a@example.com", to: []string{"b@example.com"}, msg: msg},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "new-dir") // -out creates it
			r := startSink(t, 1, append([]string{"-ports", "0", "-out", dir}, tc.args...)...)
			require.NoError(t, smtp.SendMail(r.addrs[0], nil, tc.from, tc.to, []byte(tc.msg)))

			id := sinkOnlyMessage(t, dir)
			require.Regexp(t, `^\d{8}T\d{6}\.\d{9}-\d{8}$`, id)
			eml, err := os.ReadFile(filepath.Join(dir, id+".eml"))
			require.NoError(t, err)
			require.Equal(t, tc.msg, string(eml), "the .eml file is the exact message")

			rec := sinkRecord(t, dir, id)
			var to []any
			for _, a := range tc.to {
				to = append(to, a)
			}
			require.Equal(t, map[string]any{
				"id":                id,
				"from":              tc.from,
				"to":                to,
				"helo":              "localhost", // net/smtp's default
				"remote_ip":         "127.0.0.1",
				"encoding_body":     tc.wantBody,
				"encoding_utf8":     tc.wantUTF8,
				"authorization_id":  "",
				"authentication_id": "",
				"encrypted":         false,
				"bytesize":          float64(len(tc.msg)),
			}, rec)

			line := fmt.Sprintf("message %s from=<%s> to=<%s> bytes=%d\n", id, tc.from, strings.Join(tc.to, ">,<"), len(tc.msg))
			require.Contains(t, r.stdout.String(), line)
		})
	}
}

func TestSinkConcurrentMessagesGetUniqueIDs(t *testing.T) {
	dir := t.TempDir()
	r := startSink(t, 1, "-ports", "0", "-out", dir, "-quiet")
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			msg := fmt.Sprintf("Subject: %d\r\n\r\nbody of message %d\r\n", i, i)
			errs <- smtp.SendMail(r.addrs[0], nil, fmt.Sprintf("s%d@example.com", i), []string{"r@example.com"}, []byte(msg))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	names := sinkFiles(t, dir)
	require.Len(t, names, 2*n, "files: %q", names)
	seen := map[string]bool{}
	for _, name := range names {
		id, ok := strings.CutSuffix(name, ".json")
		if !ok {
			require.True(t, strings.HasSuffix(name, ".eml"), "unexpected file %q", name)
			continue
		}
		rec := sinkRecord(t, dir, id)
		i, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rec["from"].(string), "s"), "@example.com"))
		require.NoError(t, err)
		require.False(t, seen[rec["from"].(string)], "message %d stored twice", i)
		seen[rec["from"].(string)] = true
		eml, err := os.ReadFile(filepath.Join(dir, id+".eml"))
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("Subject: %d\r\n\r\nbody of message %d\r\n", i, i), string(eml))
	}
	require.Len(t, seen, n)
	require.Equal(t, []string{"listening on " + r.addrs[0]}, strings.Split(strings.TrimSpace(r.stdout.String()), "\n"),
		"-quiet prints the listening line only")
	require.NotContains(t, r.stderr.String(), "level=INFO", "-quiet logs at warn")
}

func TestSinkWithoutOutAcceptsAndPrints(t *testing.T) {
	r := startSink(t, 1, "-ports", "0")
	msg := "Subject: discarded\r\n\r\nbody\r\n"
	require.NoError(t, smtp.SendMail(r.addrs[0], nil, "a@example.com", []string{"b@example.com"}, []byte(msg)))
	require.Regexp(t, `(?m)^message \d{8}T\d{6}\.\d{9}-00000001 from=<a@example.com> to=<b@example.com> bytes=`+strconv.Itoa(len(msg))+`$`,
		r.stdout.String())
	require.Contains(t, r.stderr.String(), "level=INFO", "the default log level is info")
}

func TestSinkWriteFailureIs451(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	r := startSink(t, 1, "-ports", "0", "-out", dir)
	require.NoError(t, os.RemoveAll(dir)) // every write now fails

	err := smtp.SendMail(r.addrs[0], nil, "a@example.com", []string{"b@example.com"}, []byte("Subject: x\r\n\r\nbody\r\n"))
	require.Error(t, err)
	require.Equal(t, 451, sinkCode(err), "err: %v", err)
	require.NotContains(t, r.stdout.String(), "message ", "a message not saved is not reported as accepted")
	require.Contains(t, r.stderr.String(), "saving message")
	require.NoDirExists(t, dir)
}

func TestSinkSeveralListeners(t *testing.T) {
	p1, p2 := sinkFreePort(t), sinkFreePort(t)
	r := startSink(t, 2, "-ports", p1+":"+p2, "-quiet")
	require.Equal(t, []string{"127.0.0.1:" + p1, "127.0.0.1:" + p2}, r.addrs)
	for _, a := range r.addrs {
		require.NoError(t, smtp.SendMail(a, nil, "a@example.com", []string{"b@example.com"}, []byte("Subject: x\r\n\r\nbody\r\n")))
	}
}

func TestSinkImplicitTLS(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := sinkFreePort(t), sinkFreePort(t)
	r := startSink(t, 2, "-ports", p1+":"+p2, "-tls", "optional", "-implicit-tls", p2, "-out", dir)

	conn, err := tls.Dial("tcp", "127.0.0.1:"+p2, &tls.Config{InsecureSkipVerify: true})
	require.NoError(t, err)
	c, err := smtp.NewClient(conn, "127.0.0.1")
	require.NoError(t, err)
	defer c.Close()
	sinkTransaction(t, c, "a@example.com", "b@example.com", "Subject: implicit\r\n\r\nbody\r\n")

	id := sinkOnlyMessage(t, dir)
	rec := sinkRecord(t, dir, id)
	require.Equal(t, true, rec["encrypted"])
	require.Contains(t, r.stdout.String(), "listening on 127.0.0.1:"+p1+"\n")
}

// sinkFreePort returns a port that was free a moment ago.
func sinkFreePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// sinkTransaction sends one message on a client that has not yet said EHLO.
func sinkTransaction(t *testing.T, c *smtp.Client, from, to, msg string) {
	t.Helper()
	require.NoError(t, c.Mail(from))
	require.NoError(t, c.Rcpt(to))
	w, err := c.Data()
	require.NoError(t, err)
	_, err = w.Write([]byte(msg))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.NoError(t, c.Quit())
}

// sinkLoginAuth is the LOGIN mechanism, which net/smtp lacks.
type sinkLoginAuth struct{ user, pass string }

func (a sinkLoginAuth) Start(*smtp.ServerInfo) (string, []byte, error) { return "LOGIN", nil, nil }

func (a sinkLoginAuth) Next(challenge []byte, more bool) ([]byte, error) {
	switch {
	case !more:
		return nil, nil
	case string(challenge) == "Username:":
		return []byte(a.user), nil
	case string(challenge) == "Password:":
		return []byte(a.pass), nil
	}
	return nil, fmt.Errorf("unexpected LOGIN challenge %q", challenge)
}

func TestSinkAuth(t *testing.T) {
	const user, pass = "alice", "s3cret+/=ü"
	authArgs := []string{"-auth", "required", "-user", user, "-pass", pass}
	tests := []struct {
		name      string
		tls       string // -tls mode
		starttls  bool
		auth      smtp.Auth // nil: no AUTH
		wantAuth  int       // reply code of AUTH when it fails
		wantMail  int       // reply code of MAIL when it fails
		encrypted bool
	}{
		{name: "plaintext PLAIN, TLS forbidden", tls: "forbidden", auth: smtp.PlainAuth("", user, pass, "127.0.0.1")},
		{name: "plaintext LOGIN, TLS forbidden", tls: "forbidden", auth: sinkLoginAuth{user, pass}},
		{name: "STARTTLS PLAIN", tls: "optional", starttls: true, auth: smtp.PlainAuth("", user, pass, "127.0.0.1"), encrypted: true},
		{name: "STARTTLS PLAIN, authorization id is the user", tls: "required", starttls: true, auth: smtp.PlainAuth(user, user, pass, "127.0.0.1"), encrypted: true},
		{name: "STARTTLS LOGIN", tls: "required", starttls: true, auth: sinkLoginAuth{user, pass}, encrypted: true},
		{name: "wrong password", tls: "forbidden", auth: smtp.PlainAuth("", user, "wrong", "127.0.0.1"), wantAuth: 535},
		{name: "wrong user", tls: "optional", starttls: true, auth: smtp.PlainAuth("", "bob", pass, "127.0.0.1"), wantAuth: 535},
		{name: "password prefix", tls: "optional", starttls: true, auth: sinkLoginAuth{user, pass[:3]}, wantAuth: 535},
		{name: "other authorization id", tls: "optional", starttls: true, auth: smtp.PlainAuth("root", user, pass, "127.0.0.1"), wantAuth: 535},
		{name: "AUTH on plaintext when TLS is available", tls: "optional", auth: smtp.PlainAuth("", user, pass, "127.0.0.1"), wantAuth: 538},
		{name: "no AUTH", tls: "forbidden", wantMail: 530},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			r := startSink(t, 1, append([]string{"-ports", "0", "-out", dir, "-tls", tc.tls}, authArgs...)...)
			c, err := smtp.Dial(r.addrs[0])
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.Hello("client.example"))
			if tc.starttls {
				require.NoError(t, c.StartTLS(&tls.Config{InsecureSkipVerify: true}))
			}
			if tc.auth != nil {
				err := c.Auth(tc.auth)
				if tc.wantAuth != 0 {
					require.Equal(t, tc.wantAuth, sinkCode(err), "AUTH: %v", err)
					require.Empty(t, sinkFiles(t, dir))
					return
				}
				require.NoError(t, err)
			}
			if tc.wantMail != 0 {
				err := c.Mail("a@example.com")
				require.Equal(t, tc.wantMail, sinkCode(err), "MAIL: %v", err)
				return
			}
			sinkTransaction(t, c, "a@example.com", "b@example.com", "Subject: auth\r\n\r\nbody\r\n")

			rec := sinkRecord(t, dir, sinkOnlyMessage(t, dir))
			require.Equal(t, user, rec["authentication_id"])
			require.Equal(t, user, rec["authorization_id"])
			require.Equal(t, tc.encrypted, rec["encrypted"])
			require.Equal(t, "client.example", rec["helo"])
			require.NotContains(t, r.stderr.String(), pass, "the password never reaches the log")
		})
	}
}

func TestSinkFlagErrors(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		usage bool   // a command-line error, printed with the usage
		want  string // in the error
	}{
		{name: "bad -crlf", args: []string{"-crlf", "bogus"}, usage: true, want: `invalid value "bogus" for flag -crlf`},
		{name: "bad -auth", args: []string{"-auth", "maybe"}, usage: true, want: "-auth"},
		{name: "bad -tls", args: []string{"-tls", "yes"}, usage: true, want: "-tls"},
		{name: "bad -ciphers", args: []string{"-tls", "optional", "-ciphers", "best"}, usage: true, want: "-ciphers"},
		{name: "bad -log-level", args: []string{"-log-level", "loud"}, usage: true, want: "-log-level"},
		{name: "bad -timeout", args: []string{"-timeout", "5"}, usage: true, want: "-timeout"},
		{name: "unknown flag", args: []string{"-nope"}, usage: true, want: "-nope"},
		{name: "argument", args: []string{"extra"}, usage: true, want: `unexpected argument "extra"`},
		{name: "auth without credential", args: []string{"-auth", "required"}, usage: true, want: "needs -user and -pass"},
		{name: "auth without password", args: []string{"-auth", "optional", "-user", "u"}, usage: true, want: "needs -user and -pass"},
		{name: "credential without auth", args: []string{"-user", "u", "-pass", "p"}, usage: true, want: "need -auth"},
		{name: "cert without tls", args: []string{"-cert", "x.pem"}, usage: true, want: "need -tls"},
		{name: "key without cert", args: []string{"-tls", "optional", "-key", "x.key"}, usage: true, want: "-key needs -cert"},
		{name: "negative grace", args: []string{"-grace", "-1s"}, usage: true, want: "-grace"},
		{name: "max-connections below max-processings", args: []string{"-max-connections", "10"}, want: "MaxConnections"},
		{name: "implicit TLS without TLS", args: []string{"-implicit-tls", "0"}, want: "ImplicitTLSPorts"},
		{name: "unreadable certificate", args: []string{"-tls", "optional", "-cert", "/nonexistent/cert.pem"}, want: "/nonexistent/cert.pem"},
		{name: "bad host", args: []string{"-hosts", "127.0.0.1,,::1"}, want: "smtpd"},
		{name: "out is a file", args: []string{"-out", "/dev/null"}, want: "-out"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stderr, err := runSinkError(t, append([]string{"-ports", "0"}, tc.args...)...)
			require.Error(t, err)
			require.ErrorContains(t, err, tc.want)
			var ue usageError
			require.Equal(t, tc.usage, errors.As(err, &ue), "usage error? %v", err)
			if tc.usage {
				require.Contains(t, stderr, "Usage: sink [flags]")
			}
		})
	}
}

func TestSinkHelp(t *testing.T) {
	stderr, err := runSinkError(t, "-h")
	require.ErrorIs(t, err, flag.ErrHelp)
	require.Contains(t, stderr, "load-test")
	require.Regexp(t, `-max-processings int\n\s+.*\(default 64\)`, stderr)
	for _, name := range []string{"hosts", "ports", "max-processings", "max-connections", "crlf", "timeout",
		"buffer-max", "max-message", "pipelining", "i18n", "auth", "user", "pass", "tls", "cert", "key", "cn",
		"san", "implicit-tls", "out", "quiet", "log-level"} {
		require.Regexp(t, `(?m)^  -`+name+`\b`, stderr)
	}
}

func TestSinkGracefulStopFinishesMessage(t *testing.T) {
	dir := t.TempDir()
	r := startSink(t, 1, "-ports", "0", "-out", dir)
	conn, err := net.DialTimeout("tcp", r.addrs[0], 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	c := textproto.NewConn(conn)
	cmd := func(line string, code int) {
		t.Helper()
		if line != "" {
			require.NoError(t, c.PrintfLine("%s", line))
		}
		_, _, err := c.ReadResponse(code)
		require.NoError(t, err, "after %q", line)
	}
	cmd("", 220)
	cmd("EHLO client.example", 250)
	cmd("MAIL FROM:<a@example.com>", 250)
	cmd("RCPT TO:<b@example.com>", 250)
	cmd("DATA", 354)
	_, err = conn.Write([]byte("Subject: graceful\r\n\r\nfirst half\r\n"))
	require.NoError(t, err)

	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	// The listener closes when the shutdown begins.
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", r.addrs[0], time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 10*time.Second, 10*time.Millisecond, "the listener stays open after the stop")

	_, err = conn.Write([]byte("second half\r\n.\r\n"))
	require.NoError(t, err)
	cmd("", 250)
	cmd("", 421)
	require.NoError(t, <-stopped)

	eml, err := os.ReadFile(filepath.Join(dir, sinkOnlyMessage(t, dir)+".eml"))
	require.NoError(t, err)
	require.Equal(t, "Subject: graceful\r\n\r\nfirst half\r\nsecond half\r\n", string(eml))
}
