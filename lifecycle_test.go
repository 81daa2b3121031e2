package smtpd

import (
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd/internal/certs"
	"github.com/stretchr/testify/require"
)

// The regression tests of the lifecycle defects (issue 14): each failed before the
// connection got its own goroutine for life and one state.

// goexitHandler calls runtime.Goexit — what t.FailNow and require do — in the hook
// named by at.
type goexitHandler struct {
	BaseHandler
	at string
}

func (h *goexitHandler) exit(hook string) {
	if h.at == hook {
		runtime.Goexit()
	}
}

func (h *goexitHandler) OnHelo(*Session, string) error { h.exit("OnHelo"); return nil }
func (h *goexitHandler) OnMailFrom(*Session, string) (string, error) {
	h.exit("OnMailFrom")
	return "", nil
}
func (h *goexitHandler) OnDataStart(*Session) error { h.exit("OnDataStart"); return nil }
func (h *goexitHandler) OnMessage(*Session) error   { h.exit("OnMessage"); return nil }
func (h *goexitHandler) OnDisconnect(*Session)      { h.exit("OnDisconnect") }

// streamGoexit is goexitHandler with a stream hook that calls runtime.Goexit.
type streamGoexit struct{ goexitHandler }

func (h *streamGoexit) OnMessageStream(_ *Session, r io.Reader) error {
	io.Copy(io.Discard, r)
	runtime.Goexit()
	return nil
}

// TestGoexitInHook: a hook that calls runtime.Goexit ends its session cleanly —
// 421, never a 250, the slot given back, Wait returns.
func TestGoexitInHook(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    Handler
		last int // the reply to the command at which the hook exits
	}{
		{"OnHelo", &goexitHandler{at: "OnHelo"}, 421},
		{"OnMailFrom", &goexitHandler{at: "OnMailFrom"}, 421},
		{"OnDataStart", &goexitHandler{at: "OnDataStart"}, 421},
		{"OnMessage", &goexitHandler{at: "OnMessage"}, 421},
		{"OnMessageStream", &streamGoexit{}, 421},
		{"OnDisconnect", &goexitHandler{at: "OnDisconnect"}, 250},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &Server{Handler: tc.h, MaxProcessings: 1}
			addr, waitClosed := serveUntilClosed(t, srv)
			c := dialGreeted(t, addr)
			replies := []int{}
			for _, line := range []string{"EHLO client.example", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.org>", "DATA"} {
				c.send(line + "\r\n")
				code, _ := c.reply()
				replies = append(replies, code)
				if code == 421 {
					break
				}
			}
			if replies[len(replies)-1] == 354 {
				c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
				code, _ := c.reply()
				replies = append(replies, code)
			}
			require.Equal(t, tc.last, replies[len(replies)-1], "replies %v", replies)
			if tc.last == 421 {
				c.expectClosed()
			} else {
				c.cmd("QUIT", 221)
			}
			// The slot is free again: with MaxProcessings 1 a new client gets its banner.
			dialGreeted(t, addr).cmd("QUIT", 221)
			require.Eventually(t, func() bool { return srv.Processings() == 0 }, testTimeout, 10*time.Millisecond)
			srv.Close()
			waitClosed()
		})
	}
}

// TestServeTLSListenerHandshakeDeadline: on a TLS listener given to Serve, the
// handshake runs first, under IOCmdTimeout: a client that connects and sends
// nothing is closed in time, and Close never waits for a handshake.
func TestServeTLSListenerHandshakeDeadline(t *testing.T) {
	cert, err := certs.SelfSigned("localhost", []string{"127.0.0.1"}, time.Now())
	require.NoError(t, err)
	cfg := certs.Config(cert, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &Server{IOCmdTimeout: 300 * time.Millisecond, Logger: testLogger()}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(tls.NewListener(l, cfg)) }()
	t.Cleanup(func() { srv.Close() })

	silent := dial(t, l.Addr().String())
	start := time.Now()
	silent.expectClosed()
	require.Less(t, time.Since(start), 3*time.Second, "the silent client is closed at IOCmdTimeout")

	// A client that completes the handshake is served over TLS.
	tc, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	require.NoError(t, err)
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, 512)
	n, err := tc.Read(buf)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(buf[:n]), "220 "), "banner over TLS: %q", buf[:n])
	tc.Write([]byte("EHLO client.example\r\n"))
	n, err = tc.Read(buf)
	require.NoError(t, err)
	require.NotContains(t, string(buf[:n]), "STARTTLS", "already encrypted")

	// Close with a client stuck before its handshake: it returns at once.
	dial(t, l.Addr().String())
	time.Sleep(50 * time.Millisecond)
	start = time.Now()
	srv.Close()
	require.Less(t, time.Since(start), time.Second, "Close waits for no handshake")
	require.ErrorIs(t, <-served, ErrServerClosed)
	waitServer(t, srv)
}

// TestStressReachesQuietSessions: a session that went quiet before stress mode
// began — a moment before (still keeping its buffers) or long before — gets stress
// mode's 10 s for its next line, even with no command timeout at all.
func TestStressReachesQuietSessions(t *testing.T) {
	t.Parallel()
	for _, quiet := range []time.Duration{20 * time.Millisecond, keepBuffers + 300*time.Millisecond} {
		t.Run(quiet.String(), func(t *testing.T) {
			t.Parallel()
			srv := &Server{MaxProcessings: 1, IOCmdTimeout: -1, WaitTimeout: -1}
			addr := serve(t, srv)
			old := dialGreeted(t, addr)
			old.cmd("EHLO client.example", 250)
			time.Sleep(quiet)
			newcomer := dial(t, addr) // waits for the slot: stress mode begins
			start := time.Now()
			old.conn.SetReadDeadline(time.Now().Add(stressTimeout + 5*time.Second))
			line, err := old.r.ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "421 "+errTimeout.Message+"\r\n", line)
			waited := time.Since(start)
			require.Greater(t, waited, stressTimeout-time.Second)
			require.Less(t, waited, stressTimeout+3*time.Second)
			newcomer.expect(220)
		})
	}
}

// TestIdleSessionHoldsNoBuffers: an idle session gives its read, reply and
// long-line buffers back, whatever the lines before were.
func TestIdleSessionHoldsNoBuffers(t *testing.T) {
	srv := &Server{}
	addr := serve(t, srv)
	c := dialGreeted(t, addr)
	c.cmd("EHLO client.example", 250)
	c.cmd("MAIL FROM:<a@example.org>", 250)
	c.cmd("RCPT TO:<b@example.org>", 250)
	c.cmd("DATA", 354)
	c.send("X-Long: " + strings.Repeat("a", 60_000) + "\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
	c.cmd("NOOP "+strings.Repeat("b", 12_000), 500) // gathered in the long-line buffer, refused: over 2048 bytes
	var cn *conn
	require.Eventually(t, func() bool {
		list := srv.connList()
		if len(list) != 1 {
			return false
		}
		cn = list[0]
		return connState(cn.state.Load()) == connIdle
	}, testTimeout, 5*time.Millisecond)
	time.Sleep(keepBuffers + 200*time.Millisecond)
	// The session is blocked in its small read. It gave its buffers back before it
	// set the line's deadline again under dmu: taking dmu orders those writes before
	// these reads.
	cn.dmu.Lock()
	br, long, w := cn.r.br, cn.r.long, cn.w
	cn.dmu.Unlock()
	require.Nil(t, br, "read buffer")
	require.Nil(t, long, "long-line buffer")
	require.Nil(t, w, "reply buffer")
	c.cmd("NOOP", 250)
}

// TestPipeliningVerdictIndependentOfTiming: with PIPELINING off, a command line
// sent together with more is refused whether the session was busy or idle for a
// while before (it used to be run after an idle pause: the small idle read saw no
// second line).
func TestPipeliningVerdictIndependentOfTiming(t *testing.T) {
	burst := "NOOP\r\nRSET " + strings.Repeat("x", 200) + "\r\n"
	for _, pause := range []time.Duration{0, keepBuffers + 200*time.Millisecond} {
		t.Run(pause.String(), func(t *testing.T) {
			addr := serve(t, &Server{})
			c := dialGreeted(t, addr)
			c.cmd("EHLO client.example", 250)
			time.Sleep(pause)
			c.send(burst)
			c.expect(500) // NOOP: PIPELINING is not allowed
			c.expect(501) // RSET x...: the last line of the burst runs
		})
	}
}

// TestQuietSessionTakesLinesInPieces: a session whose client went quiet waits on a
// fresh goroutine in a small read; the line that wakes it may come in pieces, and
// be longer than that read, without a byte lost.
func TestQuietSessionTakesLinesInPieces(t *testing.T) {
	addr := serve(t, &Server{Handler: unknownEcho{}})
	c := dialGreeted(t, addr)
	for _, line := range []string{"XA " + strings.Repeat("a", 30), "XB " + strings.Repeat("b", 1500)} {
		time.Sleep(keepBuffers + 100*time.Millisecond) // quiet: the wait goes to a fresh goroutine
		c.send(line[:10])
		time.Sleep(50 * time.Millisecond)
		c.send(line[10:] + "\r\n")
		require.Equal(t, line, c.expect(250))
	}
}

// unknownEcho answers an unknown command with 250 and the line.
type unknownEcho struct{ BaseHandler }

func (unknownEcho) OnUnknown(_ *Session, line string) error {
	return &SMTPError{Code: 250, Message: line}
}
