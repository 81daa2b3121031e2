package smtpd

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testLogger discards logs unless SMTPD_TEST_LOG is set... kept quiet: tests assert replies.
func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// serve runs srv on a fresh 127.0.0.1 port and returns its address. The server is
// closed when the test ends.
func serve(t *testing.T, srv *Server) string {
	t.Helper()
	if srv.Logger == nil {
		srv.Logger = testLogger()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		select {
		case err := <-done:
			require.ErrorIs(t, err, ErrServerClosed)
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return l.Addr().String()
}

// client is a raw SMTP client over TCP: it writes bytes exactly as given and reads replies.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// dialGreeted dials and reads the 220 banner.
func dialGreeted(t *testing.T, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.expect(220)
	return c
}

// send writes raw bytes.
func (c *client) send(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := io.WriteString(c.conn, s)
	require.NoError(c.t, err)
}

// reply reads one (possibly multi-line) reply: its code and its lines' texts joined by "\n".
func (c *client) reply() (int, string) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var texts []string
	for {
		line, err := c.r.ReadString('\n')
		require.NoError(c.t, err, "reading a reply (got so far %q)", texts)
		require.True(c.t, strings.HasSuffix(line, "\r\n"), "reply line %q not CRLF-ended", line)
		line = strings.TrimSuffix(line, "\r\n")
		require.GreaterOrEqual(c.t, len(line), 4, "short reply line %q", line)
		code, err := strconv.Atoi(line[:3])
		require.NoError(c.t, err, "reply line %q", line)
		texts = append(texts, line[4:])
		if line[3] == ' ' {
			return code, strings.Join(texts, "\n")
		}
		require.Equal(c.t, byte('-'), line[3], "reply line %q", line)
	}
}

// expect reads a reply and checks its code; it returns the text.
func (c *client) expect(code int) string {
	c.t.Helper()
	got, text := c.reply()
	require.Equal(c.t, code, got, "reply text: %q", text)
	return text
}

// cmd sends line with CRLF and expects code.
func (c *client) cmd(line string, code int) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(code)
}

// expectClosed checks that the server closes the connection (reading gives EOF).
func (c *client) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := c.r.ReadByte()
	require.Error(c.t, err, "expected the connection closed, read %q", b)
}

// recorded is a message as OnMessage saw it.
type recorded struct {
	From string
	To   []string
	Data string
	Helo string
	Body string
	UTF8 string
}

// recorder is a handler that keeps every message.
type recorder struct {
	BaseHandler
	mu   sync.Mutex
	msgs []recorded
	got  chan recorded
}

func newRecorder() *recorder { return &recorder{got: make(chan recorded, 1000)} }

func (h *recorder) OnMessage(s *Session) error {
	m := recorded{From: s.Envelope.From, To: append([]string(nil), s.Envelope.To...),
		Data: string(s.Message.Data), Helo: s.Helo, Body: s.Envelope.EncodingBody, UTF8: s.Envelope.EncodingUTF8}
	h.mu.Lock()
	h.msgs = append(h.msgs, m)
	h.mu.Unlock()
	h.got <- m
	return nil
}

func (h *recorder) messages() []recorded {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]recorded(nil), h.msgs...)
}

// waitMessages waits until n messages arrived (or fails after 10 s).
func (h *recorder) waitMessages(t *testing.T, n int) []recorded {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := h.messages(); len(m) >= n {
			return m
		}
		time.Sleep(5 * time.Millisecond)
	}
	require.Failf(t, "messages", "wanted %d messages, got %d", n, len(h.messages()))
	return nil
}

// shutdownCtx is a context for Shutdown with a bound.
func shutdownCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
