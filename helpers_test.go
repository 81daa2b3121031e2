package smtpd

// The helpers of the in-package tests (package smtpd). The black-box tests (package
// smtpd_test) use package smtptest instead, which these cannot import: it imports
// smtpd.
//
// The helpers that start a server, find free ports or wrap a locked buffer live
// here, one of each kind, for every in-package test to build on (rather than a new
// one per file): serve and serveUntilClosed (Serve), startServer (Start), and on
// them tlsServe, tlsStartServer, authServe; freePorts; lockedBuffer,
// injectionConn. Set SMTPD_TEST_LOG=1 to see the servers' logs (Debug included) on
// stderr.

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testTimeout bounds every wait of these helpers: a dial, a reply, a server's stop.
const testTimeout = 10 * time.Second

// The reply texts of DESIGN.md's Protocol section, as a client reads them.
const (
	protoTextOK        = "OK"
	protoText354       = `Enter message, ending with "." on a line by itself`
	protoText250Data   = "Requested mail action okay, completed"
	protoText221       = "Service closing transmission channel"
	protoText421       = "Service not available, closing transmission channel"
	protoText421Busy   = "Service too busy or not available, closing transmission channel"
	protoText421Time   = "Timeout, closing transmission channel"
	protoText421Long   = "Line too long, closing transmission channel"
	protoText451       = "Requested action aborted: local error in processing"
	protoText500       = "Syntax error, command unrecognised or error in parameters or arguments"
	protoText500Pipe   = "Bad input, PIPELINING is not allowed"
	protoText501       = "Syntax error in parameters or arguments"
	protoText503       = "Bad sequence of commands"
	protoText530Auth   = "Authentication required"
	protoText530TLS    = "Encryption required, must issue STARTTLS command first"
	protoText552       = "Requested mail action aborted: exceeded storage allocation"
	protoText553       = "Requested action not taken: mailbox name not allowed"
	protoText555       = "MAIL FROM/RCPT TO parameters not recognized or not implemented"
	protoTextBanner    = "127.0.0.1 says welcome!"
	protoTextHelo      = "OK 127.0.0.1 at your service!"
	protoTextEhloFirst = "127.0.0.1 at your service!"
	protoTextEhloSize  = "SIZE 33554432" // SIZE is always listed (RFC 1870), with the default MaxMessageSize
)

// The same texts for the black-box tests (package smtpd_test), which see only
// exported names: one definition, two spellings.
const (
	ProtoTextOK        = protoTextOK
	ProtoText354       = protoText354
	ProtoText250Data   = protoText250Data
	ProtoText221       = protoText221
	ProtoText421       = protoText421
	ProtoText421Busy   = protoText421Busy
	ProtoText421Time   = protoText421Time
	ProtoText421Long   = protoText421Long
	ProtoText451       = protoText451
	ProtoText500       = protoText500
	ProtoText500Pipe   = protoText500Pipe
	ProtoText501       = protoText501
	ProtoText503       = protoText503
	ProtoText530Auth   = protoText530Auth
	ProtoText530TLS    = protoText530TLS
	ProtoText552       = protoText552
	ProtoText553       = protoText553
	ProtoText555       = protoText555
	ProtoTextBanner    = protoTextBanner
	ProtoTextHelo      = protoTextHelo
	ProtoTextEhloFirst = protoTextEhloFirst
	ProtoTextEhloSize  = protoTextEhloSize
)

// testLogger is the logger of the servers the tests start: it discards every record
// unless the environment variable SMTPD_TEST_LOG is set (non-empty); then every
// record, Debug included, goes to stderr.
func testLogger() *slog.Logger {
	if os.Getenv("SMTPD_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// serve runs srv (with testLogger when it has no Logger) through Serve on a fresh
// 127.0.0.1 port and returns the address. At the end of the test the server is
// closed; Serve must then return ErrServerClosed, and every session must end,
// within testTimeout.
func serve(tb testing.TB, srv *Server) string {
	tb.Helper()
	addr, _ := serveUntilClosed(tb, srv)
	return addr
}

// serveUntilClosed is serve for a test that closes the server itself: after Close
// (or Shutdown) it calls waitClosed, which waits until Serve has returned
// ErrServerClosed and every session has ended (testTimeout each). Should the test
// end first, the server is closed and waited for at cleanup.
func serveUntilClosed(tb testing.TB, srv *Server) (addr string, waitClosed func()) {
	tb.Helper()
	if srv.Logger == nil {
		srv.Logger = testLogger()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	var once sync.Once
	waitClosed = func() {
		tb.Helper()
		once.Do(func() {
			select {
			case err := <-served:
				require.ErrorIs(tb, err, ErrServerClosed)
			case <-time.After(testTimeout):
				require.FailNow(tb, "Serve did not return after Close")
			}
			waitServer(tb, srv)
		})
	}
	tb.Cleanup(func() {
		srv.Close()
		waitClosed()
	})
	return l.Addr().String(), waitClosed
}

// startServer starts srv (with testLogger when it has no Logger) through Start, on
// its Hosts and Ports, and returns the addresses it listens on. At the end of the
// test the server is closed and every session must end within testTimeout.
func startServer(tb testing.TB, srv *Server) []net.Addr {
	tb.Helper()
	if srv.Logger == nil {
		srv.Logger = testLogger()
	}
	require.NoError(tb, srv.Start())
	tb.Cleanup(func() {
		srv.Close()
		waitServer(tb, srv)
	})
	return srv.Addrs()
}

// tlsStartServer is startServer for the tests that need no addresses (Hosts 127.0.0.1).
func tlsStartServer(t *testing.T, srv *Server) {
	t.Helper()
	startServer(t, srv)
}

// waitServer waits until every session of srv has ended (Wait), failing the test
// after testTimeout.
func waitServer(tb testing.TB, srv *Server) {
	tb.Helper()
	waited := make(chan struct{})
	go func() { srv.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(testTimeout):
		require.FailNow(tb, "sessions still running after Close (Wait did not return)")
	}
}

// tlsServe serves srv like serve and waits until its TLS configuration is active; it
// returns the address and a pool that trusts the server's (first) certificate.
func tlsServe(t *testing.T, srv *Server) (string, *x509.CertPool) {
	t.Helper()
	addr := serve(t, srv)
	// Serve sets up TLS before it accepts: a banner proves it is done.
	c := dialGreeted(t, addr)
	c.cmd("QUIT", 221)
	cfg := srv.ActiveTLSConfig()
	require.NotNil(t, cfg, "ActiveTLSConfig after Serve")
	return addr, tlsPoolOf(t, cfg)
}

// authServe serves a plaintext server (TLS forbidden) with AUTH in mode and h; mod,
// when not nil, sets more options.
func authServe(t *testing.T, mode AuthMode, h *secHandler, mod func(*Server)) string {
	t.Helper()
	srv := &Server{Handler: h, AuthMode: mode}
	if mod != nil {
		mod(srv)
	}
	return serve(t, srv)
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a moment ago.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	ports := make([]string, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close() // all held open together: the ports differ
		ports[i] = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// shutdownCtx is a context for Shutdown that ends after d (or with the test).
func shutdownCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes (a logger's, a
// process's stderr, a connection's reads).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// injectionConn is the client side of a connection whose reads go through r (the
// client's buffered reader, so nothing it already buffered is lost) and are
// recorded, for a TLS client to run over.
type injectionConn struct {
	net.Conn
	r   io.Reader
	got lockedBuffer
}

func (c *injectionConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.got.Write(p[:n])
	return n, err
}

// received returns every byte read so far.
func (c *injectionConn) received() []byte { return []byte(c.got.String()) }

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
}

func newRecorder() *recorder { return &recorder{} }

func (h *recorder) OnMessage(s *Session) error {
	m := recorded{From: s.Envelope.From, To: append([]string(nil), s.Envelope.To...),
		Data: string(s.Message.Data), Helo: s.Helo, Body: s.Envelope.EncodingBody, UTF8: s.Envelope.EncodingUTF8}
	h.mu.Lock()
	h.msgs = append(h.msgs, m)
	h.mu.Unlock()
	return nil
}

func (h *recorder) messages() []recorded {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]recorded(nil), h.msgs...)
}

// waitMessages waits until n messages arrived (failing after testTimeout) and
// returns them all.
func (h *recorder) waitMessages(t *testing.T, n int) []recorded {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		m := h.messages()
		if len(m) >= n {
			return m
		}
		if time.Now().After(deadline) {
			require.FailNowf(t, "messages", "wanted %d messages, got %d", n, len(m))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
