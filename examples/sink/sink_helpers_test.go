package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

// sinkIDRe is a message id, smtpd's Message.ID: the Session.ID ("<random
// prefix>-<counter>", base 36) and the transaction's number in the session.
var sinkIDRe = regexp.MustCompile(`^([0-9a-z]+-[0-9a-z]+)-([1-9]\d*)$`)

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

// sinkFreePorts returns n distinct free ports: their listeners are open together,
// so no two can be the same.
func sinkFreePorts(t *testing.T, n int) []string {
	t.Helper()
	var ports []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	return ports
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
