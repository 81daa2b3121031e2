package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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

	"github.com/midismtp/smtpd"
	"github.com/stretchr/testify/require"
)

// TestMain keeps the tests independent of the caller's environment: a SINK_PASS
// set there would satisfy -auth without -pass.
func TestMain(m *testing.M) {
	os.Unsetenv("SINK_PASS")
	os.Exit(m.Run())
}

// sinkIDRe is a message id: the Session.ID ("<random prefix>-<counter>", base 36)
// and the message's number in the session.
var sinkIDRe = regexp.MustCompile(`^([0-9a-z]+-[0-9a-z]+)-(\d{4,})$`)

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
	tests := []sinkStoreCase{
		{name: "plain", from: "alice@example.com", to: []string{"bob@example.net", "carol@example.org"}, msg: msg, wantSubject: "stored"},
		{name: "null sender", from: "", to: []string{"bob@example.net"}, msg: msg, wantSubject: "stored"},
		{name: "i18n", args: []string{"-i18n"}, from: "jörg@example.com", to: []string{"zoë@example.net"},
			msg: "Subject: Grüße\r\n\r\nÄÖÜ 8bit body\r\n", wantBody: "8bitmime", wantUTF8: "utf8", wantSubject: "Grüße"},
		{name: "crlf leave, pipelining", args: []string{"-crlf", "leave", "-pipelining"}, from: "a@example.com", to: []string{"b@example.com"}, msg: msg, wantSubject: "stored"},
		{name: "crlf strict", args: []string{"-crlf", "strict"}, from: "a@example.com", to: []string{"b@example.com"}, msg: msg, wantSubject: "stored"},
		{name: "header fields", from: "a@example.com", to: []string{"b@example.com"},
			msg: "Date: Mon, 2 Jan 2006 15:04:05 -0700\r\nMessage-ID: <1234.5678@client.example>\r\n" +
				"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and\r\n =?ISO-8859-1?B?5g==?= folded\r\nFrom: a@example.com\r\n\r\nbody\r\n",
			wantSubject: "Grüße and æ folded", wantDate: "Mon, 2 Jan 2006 15:04:05 -0700", wantMessageID: "<1234.5678@client.example>"},
		{name: "unknown charset left as sent", from: "a@example.com", to: []string{"b@example.com"},
			msg: "Subject: =?x-unknown?Q?abc?=\r\n\r\nbody\r\n", wantSubject: "=?x-unknown?Q?abc?="},
		{name: "no header section", from: "a@example.com", to: []string{"b@example.com"},
			msg: "just a body line\r\nSubject: not a header\r\n"},
	}
	for _, stream := range []bool{false, true} {
		for _, tc := range tests {
			sinkStoresMessage(t, stream, tc)
		}
	}
}

// sinkStoreCase is one case of TestSinkStoresMessage.
type sinkStoreCase struct {
	name          string
	args          []string
	from          string
	to            []string
	msg           string
	wantBody      string
	wantUTF8      string
	wantSubject   string
	wantDate      string
	wantMessageID string
}

// sinkStoresMessage runs one case, buffered or with -stream.
func sinkStoresMessage(t *testing.T, stream bool, tc sinkStoreCase) {
	name := tc.name
	if stream {
		name += "/stream"
		tc.args = append(append([]string(nil), tc.args...), "-stream")
	}
	{
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "new-dir") // -out creates it
			r := startSink(t, 1, append([]string{"-ports", "0", "-out", dir}, tc.args...)...)
			conn, err := net.DialTimeout("tcp", r.addrs[0], 5*time.Second)
			require.NoError(t, err)
			localPort := conn.LocalAddr().(*net.TCPAddr).Port
			c, err := smtp.NewClient(conn, "127.0.0.1")
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.Mail(tc.from)) // says EHLO localhost first, as smtp.SendMail
			for _, a := range tc.to {
				require.NoError(t, c.Rcpt(a))
			}
			w, err := c.Data()
			require.NoError(t, err)
			_, err = w.Write([]byte(tc.msg))
			require.NoError(t, err)
			require.NoError(t, w.Close())
			require.NoError(t, c.Quit())

			id := sinkOnlyMessage(t, dir)
			m := sinkIDRe.FindStringSubmatch(id)
			require.NotNil(t, m, "id %q is not <Session.ID>-<n>", id)
			require.Equal(t, "0001", m[2], "the first message of its session")
			eml, err := os.ReadFile(filepath.Join(dir, id+".eml"))
			require.NoError(t, err)
			require.Equal(t, tc.msg, string(eml), "the .eml file is the exact message")

			if tc.wantMessageID != "" {
				raw, err := os.ReadFile(filepath.Join(dir, id+".json"))
				require.NoError(t, err)
				require.Contains(t, string(raw), `"message_id":"`+tc.wantMessageID+`"`, "no \\u003c escapes")
			}
			rec := sinkRecord(t, dir, id)
			receivedAt, ok := rec["received_at"].(string)
			require.True(t, ok, "received_at: %v", rec["received_at"])
			require.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$`, receivedAt)
			at, err := time.Parse(time.RFC3339Nano, receivedAt)
			require.NoError(t, err)
			require.WithinDuration(t, time.Now(), at, time.Minute)
			delete(rec, "received_at")
			var to []any
			for _, a := range tc.to {
				to = append(to, a)
			}
			require.Equal(t, map[string]any{
				"id":                id,
				"session_id":        m[1],
				"from":              tc.from,
				"to":                to,
				"helo":              "localhost", // net/smtp's default
				"remote_ip":         "127.0.0.1",
				"remote_port":       float64(localPort),
				"proxy_ip":          "",
				"encoding_body":     tc.wantBody,
				"encoding_utf8":     tc.wantUTF8,
				"authorization_id":  "",
				"authentication_id": "",
				"encrypted":         false,
				"bytesize":          float64(len(tc.msg)),
				"subject":           tc.wantSubject,
				"date":              tc.wantDate,
				"message_id":        tc.wantMessageID,
				"size":              float64(0),
			}, rec)

			line := fmt.Sprintf("message %s from=<%s> to=<%s> bytes=%d\n", id, tc.from, strings.Join(tc.to, ">,<"), len(tc.msg))
			if stream {
				line = fmt.Sprintf("message %s from=<%s> to=<%s> streamed\n", id, tc.from, strings.Join(tc.to, ">,<"))
			}
			require.Contains(t, r.stdout.String(), line)
			require.Contains(t, r.stderr.String(), "session="+m[1], "session_id is the session attribute of the log")
		})
	}
}

func TestSinkMessagesOfOneSessionAreNumbered(t *testing.T) {
	dir := t.TempDir()
	r := startSink(t, 1, "-ports", "0", "-out", dir, "-quiet")
	c, err := smtp.Dial(r.addrs[0])
	require.NoError(t, err)
	defer c.Close()
	for i := range 3 {
		require.NoError(t, c.Mail("a@example.com"))
		require.NoError(t, c.Rcpt("b@example.com"))
		w, err := c.Data()
		require.NoError(t, err)
		_, err = fmt.Fprintf(w, "Subject: number %d\r\n\r\nbody\r\n", i+1)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	}
	require.NoError(t, c.Quit())
	// A second connection is a new session.
	require.NoError(t, smtp.SendMail(r.addrs[0], nil, "a@example.com", []string{"b@example.com"}, []byte("Subject: other\r\n\r\nbody\r\n")))

	names := sinkFiles(t, dir)
	require.Len(t, names, 8, "files: %q", names)
	var ids []string
	for _, name := range names {
		if id, ok := strings.CutSuffix(name, ".json"); ok {
			ids = append(ids, id)
		}
	}
	bySubject := map[string]map[string]any{}
	for _, id := range ids {
		rec := sinkRecord(t, dir, id)
		bySubject[rec["subject"].(string)] = rec
	}
	first := bySubject["number 1"]["session_id"].(string)
	for i := 1; i <= 3; i++ {
		rec := bySubject[fmt.Sprintf("number %d", i)]
		require.NotNil(t, rec, "message %d: %q", i, ids)
		require.Equal(t, first, rec["session_id"])
		require.Equal(t, fmt.Sprintf("%s-%04d", first, i), rec["id"])
	}
	other := bySubject["other"]
	require.NotNil(t, other)
	require.NotEqual(t, first, other["session_id"])
	require.Equal(t, other["session_id"].(string)+"-0001", other["id"])
	require.Less(t, bySubject["number 3"]["received_at"].(string), other["received_at"].(string),
		"received_at sorts in arrival order")
}

func TestSinkNeverOverwritesAStoredMessage(t *testing.T) {
	dir := t.TempDir()
	st, err := newStore(dir, false)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "abc-1-0001.eml"), []byte("earlier run\r\n"), 0o644))
	s := &smtpd.Session{ID: "abc-1"}
	s.Message.Data = []byte("Subject: x\r\n\r\nbody\r\n")
	require.ErrorContains(t, st.save("abc-1-0001", s), "exists already")
	eml, err := os.ReadFile(filepath.Join(dir, "abc-1-0001.eml"))
	require.NoError(t, err)
	require.Equal(t, "earlier run\r\n", string(eml))
	require.Equal(t, []string{"abc-1-0001.eml"}, sinkFiles(t, dir))

	require.NoError(t, st.save("abc-1-0002", s))
	require.Equal(t, []string{"abc-1-0001.eml", "abc-1-0002.eml", "abc-1-0002.json"}, sinkFiles(t, dir))
}

func TestSinkProxiedMessage(t *testing.T) {
	dir := t.TempDir()
	r := startSink(t, 1, "-ports", "0", "-out", dir, "-proxy-trusted", "127.0.0.0/8")
	conn, err := net.DialTimeout("tcp", r.addrs[0], 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	_, err = conn.Write([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 40123 25\r\n"))
	require.NoError(t, err)
	c, err := smtp.NewClient(conn, "127.0.0.1")
	require.NoError(t, err)
	sinkTransaction(t, c, "a@example.com", "b@example.com", "Subject: via proxy\r\n\r\nbody\r\n")

	rec := sinkRecord(t, dir, sinkOnlyMessage(t, dir))
	require.Equal(t, "192.0.2.7", rec["remote_ip"])
	require.Equal(t, float64(40123), rec["remote_port"])
	require.Equal(t, "127.0.0.1", rec["proxy_ip"])
	require.Equal(t, "via proxy", rec["subject"])
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
	require.Regexp(t, `(?m)^message [0-9a-z]+-[0-9a-z]+-0001 from=<a@example.com> to=<b@example.com> bytes=`+strconv.Itoa(len(msg))+`$`,
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
		{name: "bad -wait-timeout", args: []string{"-wait-timeout", "5"}, usage: true, want: "-wait-timeout"},
		{name: "bad -max-errors", args: []string{"-max-errors", "many"}, usage: true, want: "-max-errors"},
		{name: "negative -max-per-ip", args: []string{"-max-per-ip", "-1"}, want: "MaxConnectionsPerIP"},
		{name: "negative -greet-delay", args: []string{"-greet-delay", "-1s"}, want: "GreetDelay"},
		{name: "bad -proxy-trusted", args: []string{"-proxy-trusted", "10.0.0.0/33"}, want: "ProxyTrustedNetworks"},
		{name: "bad -xclient-trusted", args: []string{"-xclient-trusted", "example.com"}, want: "XClientTrustedNetworks"},
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
	require.Contains(t, stderr, "SINK_PASS")
	require.Regexp(t, `-max-processings int\n\s+.*\(0: 100\)`, stderr)
	require.NotContains(t, stderr, "(default 64)")
	for _, name := range []string{"hosts", "ports", "max-processings", "max-connections", "crlf", "timeout",
		"buffer-max", "max-message", "pipelining", "i18n", "auth", "user", "pass", "tls", "cert", "key", "cn",
		"san", "implicit-tls", "out", "quiet", "log-level",
		"max-errors", "max-junk", "max-per-ip", "wait-timeout", "greet-delay", "min-data-rate",
		"auth-failure-delay", "max-buffered", "proxy-trusted", "xclient-trusted", "enhanced-status-codes"} {
		require.Regexp(t, `(?m)^  -`+name+`\b`, stderr)
	}
}

func TestSinkFlagsReachServer(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	s := &cfg.srv
	require.Zero(t, s.MaxProcessings, "the library's default (100)")
	require.Zero(t, s.MaxErrors)
	require.Zero(t, s.MaxJunkCommands)
	require.Zero(t, s.MaxConnectionsPerIP)
	require.Zero(t, s.WaitTimeout)
	require.Zero(t, s.GreetDelay)
	require.Zero(t, s.MinDataRate)
	require.Zero(t, s.AuthFailureDelay)
	require.Zero(t, s.MaxBufferedData)
	require.Empty(t, s.ProxyTrustedNetworks)
	require.Empty(t, s.XClientTrustedNetworks)
	require.False(t, s.EnhancedStatusCodes)

	cfg, err = parseFlags([]string{
		"-max-processings", "7", "-max-errors", "3", "-max-junk", "-1", "-max-per-ip", "5",
		"-wait-timeout", "1m30s", "-greet-delay", "2s", "-min-data-rate", "800",
		"-auth", "optional", "-user", "u", "-pass", "p", "-auth-failure-delay", "1500ms",
		"-max-buffered", "1048576", "-proxy-trusted", "10.0.0.0/8, 192.0.2.1",
		"-xclient-trusted", "127.0.0.1", "-enhanced-status-codes",
	}, io.Discard)
	require.NoError(t, err)
	s = &cfg.srv
	require.Equal(t, 7, s.MaxProcessings)
	require.Equal(t, 3, s.MaxErrors)
	require.Equal(t, -1, s.MaxJunkCommands)
	require.Equal(t, 5, s.MaxConnectionsPerIP)
	require.Equal(t, 90*time.Second, s.WaitTimeout)
	require.Equal(t, 2*time.Second, s.GreetDelay)
	require.Equal(t, 800, s.MinDataRate)
	require.Equal(t, 1500*time.Millisecond, s.AuthFailureDelay)
	require.Equal(t, 1<<20, s.MaxBufferedData)
	require.Equal(t, "10.0.0.0/8, 192.0.2.1", s.ProxyTrustedNetworks)
	require.Equal(t, "127.0.0.1", s.XClientTrustedNetworks)
	require.True(t, s.EnhancedStatusCodes)
	require.Equal(t, smtpd.AuthOptional, s.AuthMode)
	require.Equal(t, "p", cfg.pass)
}

func TestSinkEnhancedStatusCodesLive(t *testing.T) {
	r := startSink(t, 1, "-ports", "0", "-enhanced-status-codes", "-quiet")
	c, err := smtp.Dial(r.addrs[0])
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Hello("client.example"))
	ok, _ := c.Extension("ENHANCEDSTATUSCODES")
	require.True(t, ok, "EHLO lists ENHANCEDSTATUSCODES")
	id, err := c.Text.Cmd("NOOP")
	require.NoError(t, err)
	c.Text.StartResponse(id)
	_, msg, err := c.Text.ReadResponse(250)
	c.Text.EndResponse(id)
	require.NoError(t, err)
	require.Regexp(t, `^2\.0\.0\b`, msg)
}

// TestSinkPassFromEnvironment is not parallel: it sets SINK_PASS.
func TestSinkPassFromEnvironment(t *testing.T) {
	const user, envPass = "alice", "from-the-env"
	t.Setenv("SINK_PASS", envPass)

	cfg, err := parseFlags([]string{"-auth", "optional", "-user", user}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, envPass, cfg.pass, "empty -pass: SINK_PASS")
	cfg, err = parseFlags([]string{"-auth", "optional", "-user", user, "-pass", "cli"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "cli", cfg.pass, "-pass wins over SINK_PASS")
	cfg, err = parseFlags(nil, io.Discard)
	require.NoError(t, err, "with -auth forbidden a SINK_PASS in the environment is ignored")
	require.Empty(t, cfg.pass)

	dir := t.TempDir()
	r := startSink(t, 1, "-ports", "0", "-out", dir, "-auth", "required", "-user", user)
	auth := func(pass string) error {
		c, err := smtp.Dial(r.addrs[0])
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.Hello("client.example"))
		if err := c.Auth(smtp.PlainAuth("", user, pass, "127.0.0.1")); err != nil {
			return err
		}
		sinkTransaction(t, c, "a@example.com", "b@example.com", "Subject: env\r\n\r\nbody\r\n")
		return nil
	}
	require.Equal(t, 535, sinkCode(auth("wrong")))
	require.NoError(t, auth(envPass))
	rec := sinkRecord(t, dir, sinkOnlyMessage(t, dir))
	require.Equal(t, user, rec["authentication_id"])
	require.NotContains(t, r.stderr.String(), envPass, "the password never reaches the log")
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
