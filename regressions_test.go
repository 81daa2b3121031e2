package smtpd

// Regression tests for the review findings R1-R11 (R8 and R12 have no behaviour
// observable over TCP). Each test runs the fixed behaviour over real loopback TCP.
// The Close/Shutdown ones (R3, R4, R9) are in regressions_close_test.go.

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	regClose421 = "421 Service not available, closing transmission channel\r\n"
	regBye221   = "221 Service closing transmission channel\r\n"
	regBusy421  = "Service too busy or not available, closing transmission channel"
)

// regServe serves srv on a fresh 127.0.0.1 port for a test that closes the server
// itself (then regWaitServer); a cleanup closes it anyway should the test fail first.
func regServe(t *testing.T, srv *Server) (string, <-chan error) {
	t.Helper()
	if srv.Logger == nil {
		srv.Logger = testLogger()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), served
}

// regWaitServer waits (bounded) for Serve to return ErrServerClosed and for Wait.
func regWaitServer(t *testing.T, srv *Server, served <-chan error) {
	t.Helper()
	if served != nil {
		select {
		case err := <-served:
			require.ErrorIs(t, err, ErrServerClosed)
		case <-time.After(10 * time.Second):
			require.FailNow(t, "Serve did not return after Close")
		}
	}
	waited := make(chan struct{})
	go func() { srv.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Wait did not return after Close")
	}
}

// regDial is dial for loops: the caller closes the connection at the end of its
// round (the cleanup only covers a round that failed).
func regDial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// regReadToEnd reads everything until the server closes the connection (EOF, or a
// reset after the data); a read that times out fails the test.
func regReadToEnd(t *testing.T, c *client) string {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c.r)
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET, "reading to the end; got %q", b)
	}
	return string(b)
}

// regTransaction runs EHLO, MAIL, RCPT and DATA, each waiting for its reply.
func regTransaction(c *client) {
	c.t.Helper()
	c.cmd("EHLO regression.example", 250)
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<c@d.example>", 250)
	c.cmd("DATA", 354)
}

// R1: the writer's buffer flushed itself (when full) with the write deadline of the
// previous flush, long expired after slow hooks; replies were lost.
type regSlowRcpt struct {
	BaseHandler
	d time.Duration
}

func (h regSlowRcpt) OnRcptTo(*Session, string) (string, error) {
	time.Sleep(h.d)
	return "", nil
}

func TestRegressionStaleWriteDeadline(t *testing.T) {
	const n = 150
	tests := []struct {
		name       string
		pipelining bool
		burst      string
		lines      int
		check      func(t *testing.T, i, code int, text string)
	}{
		{
			// 150 RCPT at 5 ms each outlast IOCmdTimeout (300ms); their 151 replies
			// (over 1024 bytes) overflow the writer's buffer on the way.
			name:       "pipelining on, slow OnRcptTo",
			pipelining: true,
			burst:      "MAIL FROM:<a@b.example>\r\n" + strings.Repeat("RCPT TO:<c@d.example>\r\n", n),
			lines:      n + 1,
			check: func(t *testing.T, i, code int, text string) {
				require.Equal(t, 250, code, "reply %d of %d: %q", i+1, n+1, text)
			},
		},
		{
			// Pipelining off: every line still gets exactly one reply (500 for a line
			// sent ahead of its turn, the last one 250); 44-byte 500s overflow the buffer.
			name:  "pipelining off, burst of lines",
			burst: strings.Repeat("NOOP\r\n", n),
			lines: n,
			check: func(t *testing.T, i, code int, text string) {
				if i == n-1 {
					require.Equal(t, 250, code, "last line: %q", text)
					return
				}
				if code != 250 {
					require.Equal(t, 500, code, "reply %d: %q", i+1, text)
					require.Equal(t, "Bad input, PIPELINING is not allowed", text)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := &Server{Handler: regSlowRcpt{d: 5 * time.Millisecond}, Pipelining: tc.pipelining, MaxErrors: -1, MaxJunkCommands: -1,
				IOCmdTimeout: 300 * time.Millisecond}
			c := dialGreeted(t, serve(t, srv))
			c.cmd("EHLO regression.example", 250)
			c.send(tc.burst) // one write; the client reads nothing until it is all sent
			for i := range tc.lines {
				code, text := c.reply()
				tc.check(t, i, code, text)
			}
			c.cmd("QUIT", 221) // in step: no reply was lost or duplicated
			c.expectClosed()
		})
	}
}

// R2: Close aborted sessions one after the other, each stuck in a write to a client
// that does not read for up to a second.
type regLongHelo struct{ BaseHandler }

func (regLongHelo) OnHelo(s *Session, _ string) error {
	s.HeloResponse = strings.Repeat("h", 900)
	return nil
}

func TestRegressionCloseStuckWriters(t *testing.T) {
	// IOCmdTimeout is 30 s: a write to a client that does not read stays stuck.
	srv := &Server{Handler: regLongHelo{}, Pipelining: true, MaxProcessings: 8, MaxJunkCommands: -1}
	addr := serve(t, srv)
	const clients = 5
	// 8 bytes in, over 900 out: the server's socket buffers fill within a few
	// thousand lines, also under -race (with NOOP's 8-byte replies it takes MBs).
	flood := []byte(strings.Repeat("HELO x\r\n", 375))
	stuck := make(chan error, clients)
	for range clients {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		tcp := conn.(*net.TCPConn)
		require.NoError(t, tcp.SetReadBuffer(4096))
		require.NoError(t, tcp.SetWriteBuffer(16384)) // small: a stall shows at once
		go func() {
			// Flood without ever reading. Once the server's replies fill the socket
			// buffers its write blocks and it stops reading: a whole second without
			// room for 3000 bytes means the server is stuck in that write.
			for {
				conn.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := conn.Write(flood); err != nil {
					stuck <- err
					return
				}
			}
		}()
	}
	for range clients {
		select {
		case err := <-stuck:
			var ne net.Error
			require.True(t, errors.As(err, &ne) && ne.Timeout(), "flood ended by %v, not by a stall", err)
		case <-time.After(30 * time.Second):
			require.FailNow(t, "the server never stopped reading a flooding client")
		}
	}
	require.Equal(t, clients, srv.Connections())
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	// A liveness bound, not a speed measurement: the sessions are aborted together
	// (about 1 s of grace each at most); one after the other they took over 5 s.
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(3 * time.Second):
		require.FailNow(t, "Close still blocked after 3 s with 5 stuck clients")
	}
	_, err := net.DialTimeout("tcp", addr, 2*time.Second)
	require.Error(t, err, "the listener is still open after Close")
}

// R5: MaxConnections counted connections whose check had not run yet, so a burst
// could refuse the wrong ones (or none). The check is now made in accept order.
type regBarrierConnect struct {
	BaseHandler
	n    atomic.Int32
	want int32
	all  chan struct{}
}

func (h *regBarrierConnect) OnConnect(*Session) error {
	if h.n.Add(1) == h.want {
		close(h.all)
	}
	select { // every OnConnect waits until all the connections are open
	case <-h.all:
	case <-time.After(10 * time.Second):
	}
	return nil
}

func TestRegressionMaxConnectionsAcceptOrder(t *testing.T) {
	for round := range 10 {
		h := &regBarrierConnect{want: 3, all: make(chan struct{})}
		srv := &Server{Handler: h, MaxProcessings: 2, MaxConnections: 2}
		addr, served := regServe(t, srv)
		var cls []*client
		for i := range 3 {
			c := regDial(t, addr)
			cls = append(cls, c)
			if i < 2 { // accepted (and held in OnConnect) before the next dial
				require.Eventually(t, func() bool { return srv.Connections() == i+1 },
					5*time.Second, time.Millisecond, "round %d: connection %d not accepted", round, i+1)
			}
		}
		cls[0].expect(220)
		cls[1].expect(220)
		require.Equal(t, regBusy421, cls[2].expect(421), "round %d", round)
		cls[2].expectClosed()
		cls[0].cmd("QUIT", 221)
		cls[1].cmd("QUIT", 221)
		require.NoError(t, srv.Close())
		regWaitServer(t, srv, served)
		for _, c := range cls {
			c.conn.Close()
		}
	}
}

// R6: on an implicit-TLS port, a connection over MaxConnections got a plaintext 421
// before any handshake. It is now closed without a byte.
func TestRegressionImplicitTLSNoPlaintext421(t *testing.T) {
	srv := &Server{Hosts: "127.0.0.1", Ports: "0", TLSMode: TLSOptional, ImplicitTLSPorts: "0",
		MaxProcessings: 1, MaxConnections: 1, Logger: testLogger()}
	require.NoError(t, srv.Start())
	t.Cleanup(func() { srv.Close(); srv.Wait() })
	addr := srv.Addrs()[0].String()
	cfg := &tls.Config{InsecureSkipVerify: true}
	d := &net.Dialer{Timeout: 5 * time.Second}

	first, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { first.Close() })
	fc := &client{t: t, conn: first, r: bufio.NewReader(first)}
	fc.expect(220)
	require.Equal(t, 1, srv.Connections())

	// A plain TCP client over the limit: nothing at all may come in plaintext.
	raw := dial(t, addr)
	raw.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(raw.r)
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET, "the connection over the limit was not closed; got %q", got)
	}
	require.False(t, strings.HasPrefix(string(got), "421"), "plaintext 421 on an implicit-TLS port: %q", got)
	require.Empty(t, got, "bytes sent before any TLS handshake")

	// A TLS client over the limit: the handshake fails (the connection just closes).
	tc, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err == nil {
		tc.Close()
	}
	require.Error(t, err, "TLS handshake over MaxConnections succeeded")

	fc.cmd("QUIT", 221) // the session within the limit is untouched
}

// R7: after a refused AUTH (503 inside a transaction, or 500 for a line sent ahead of
// its turn) the client's base64 credentials arrive as command lines and were traced.
func TestRegressionAuthCredentialsNotLogged(t *testing.T) {
	const user, pass = "regression-user", "Regr3ssion-Secret!"
	tests := []struct {
		name    string
		steps   []string // one write each
		replies []int    // replies per step (codes, or 0 for any)
	}{
		{
			name:    "AUTH LOGIN refused inside a transaction",
			steps:   []string{"EHLO x\r\n", "MAIL FROM:<a@b.example>\r\n", "AUTH LOGIN\r\n", b64(pass) + "\r\n"},
			replies: []int{250, 250, 503, 500},
		},
		{
			name:    "AUTH LOGIN with both responses in one write, pipelining off",
			steps:   []string{"EHLO x\r\n", "AUTH LOGIN\r\n" + b64(user) + "\r\n" + b64(pass) + "\r\n"},
			replies: []int{250, 0, 0, 0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs lockedBuffer
			srv := &Server{AuthMode: AuthOptional,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			c := dialGreeted(t, serve(t, srv))
			r := 0
			for _, step := range tc.steps {
				c.send(step)
				for range strings.Count(step, "\n") {
					code, text := c.reply()
					if want := tc.replies[r]; want != 0 {
						require.Equal(t, want, code, "reply %d: %q", r+1, text)
					}
					r++
				}
			}
			c.cmd("QUIT", 221) // every line above was traced before its reply
			out := logs.String()
			require.Contains(t, out, "AUTH LOGIN", "the debug trace is not captured")
			require.NotContains(t, out, b64(pass))
			require.NotContains(t, out, pass)
		})
	}
}

// R10: Start closed none of the remaining listeners when Close came between binding
// and tracking them; the ports stayed bound.
func TestRegressionStartCloseNoLeakedListener(t *testing.T) {
	for round := range 100 {
		p1, p2 := regFreePorts(t)
		srv := &Server{Hosts: "127.0.0.1", Ports: p1 + ":" + p2, TLSMode: TLSOptional, Logger: testLogger()}
		started := make(chan error, 1)
		closed := make(chan error, 1)
		go func() { started <- srv.Start() }()
		go func() {
			time.Sleep(time.Duration(round%10) * 100 * time.Microsecond) // vary the interleaving
			closed <- srv.Close()
		}()
		for _, ch := range []chan error{started, closed} {
			select {
			case <-ch: // Start may succeed or fail: either way nothing may stay bound
			case <-time.After(10 * time.Second):
				require.FailNow(t, "Start or Close blocked", "round %d", round)
			}
		}
		regWaitServer(t, srv, nil)
		for _, p := range []string{p1, p2} {
			l, err := net.Listen("tcp", "127.0.0.1:"+p)
			require.NoError(t, err, "round %d: port %s still bound after Close", round, p)
			l.Close()
		}
	}
}

// regFreePorts returns two distinct ports that were free a moment ago.
func regFreePorts(t *testing.T) (string, string) {
	t.Helper()
	var ports [2]string
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		_, ports[i], err = net.SplitHostPort(l.Addr().String())
		require.NoError(t, err)
	}
	return ports[0], ports[1]
}

// R11: a hook returning a 2xx SMTPError got it counted as a failure (OnRcptTo's 251
// dropped the recipient the client believed accepted). OnRcptTo and OnMessage may
// now succeed with their own reply; OnDataStart cannot, and its 2xx is a 451.
type regReplyHook struct {
	*recorder
	dataStart error
	message   error
}

func (h regReplyHook) OnRcptTo(_ *Session, to string) (string, error) {
	if strings.HasPrefix(to, "remote@") {
		return "", &SMTPError{Code: 251, Message: "User not local; will forward"}
	}
	return "", nil
}

func (h regReplyHook) OnDataStart(*Session) error { return h.dataStart }

func (h regReplyHook) OnMessage(s *Session) error {
	h.recorder.OnMessage(s)
	return h.message
}

func TestRegressionSuccessReplyFromHook(t *testing.T) {
	tests := []struct {
		name      string
		dataStart error
		message   error
		final     int
		finalText string
		delivered bool
	}{
		{name: "OnRcptTo 251 keeps the recipient", final: 250,
			finalText: "Requested mail action okay, completed", delivered: true},
		{name: "OnMessage custom 250", message: &SMTPError{Code: 250, EnhancedCode: "2.0.0", Message: "Queued as R11"},
			final: 250, finalText: "2.0.0 Queued as R11", delivered: true},
		{name: "OnDataStart 2xx is a mistake", dataStart: &SMTPError{Code: 250, Message: "fine"},
			final: 451, delivered: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := regReplyHook{recorder: newRecorder(), dataStart: tc.dataStart, message: tc.message}
			c := dialGreeted(t, serve(t, &Server{Handler: h}))
			c.cmd("EHLO x", 250)
			c.cmd("MAIL FROM:<a@b.example>", 250)
			c.cmd("RCPT TO:<local@b.example>", 250)
			require.Equal(t, "User not local; will forward", c.cmd("RCPT TO:<remote@b.example>", 251))
			c.cmd("DATA", 354)
			text := c.cmd("Subject: r11\r\n\r\nbody\r\n.", tc.final)
			if tc.finalText != "" {
				require.Equal(t, tc.finalText, text)
			}
			if tc.delivered {
				m := h.waitMessages(t, 1)
				require.Equal(t, []string{"local@b.example", "remote@b.example"}, m[0].To)
			} else {
				require.Empty(t, h.messages(), "delivered although the reply was %d", tc.final)
			}
			c.cmd("QUIT", 221)
		})
	}
}
