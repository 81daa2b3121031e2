package smtpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// limitsTrickle writes s one byte every interval, then keeps writing "X" bytes, never
// a line end, until the connection fails or stop is closed.
func limitsTrickle(c *client, s string, interval time.Duration, stop <-chan struct{}) {
	go func() {
		b := []byte(s)
		for i := 0; ; i++ {
			ch := byte('X')
			if i < len(b) {
				ch = b[i]
			}
			c.conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.conn.Write([]byte{ch}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
		}
	}()
}

// limitsFlood writes n bytes of 'a' (no line end) in the background, ignoring errors.
func limitsFlood(c *client, n int) {
	go func() {
		c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		c.conn.Write([]byte(strings.Repeat("a", n)))
	}()
}

func TestLimitsTimeout(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, c *client)
	}{
		{"silent after banner", func(t *testing.T, c *client) {}},
		{"silent after EHLO", func(t *testing.T, c *client) { c.cmd("EHLO client.example", 250) }},
		{"trickling NOOP", func(t *testing.T, c *client) {
			stop := make(chan struct{})
			t.Cleanup(func() { close(stop) })
			limitsTrickle(c, "NOOP", 100*time.Millisecond, stop)
		}},
		{"silent inside DATA", func(t *testing.T, c *client) {
			c.cmd("EHLO client.example", 250)
			c.cmd("MAIL FROM:<a@b.example>", 250)
			c.cmd("RCPT TO:<c@d.example>", 250)
			c.cmd("DATA", 354)
			c.send("Subject: half\r\n\r\nhalf a li")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newRecorder()
			addr := serve(t, &Server{Handler: h, IOCmdTimeout: 300 * time.Millisecond})
			c := dialGreeted(t, addr)
			tc.run(t, c)
			c.protoExpect(421, protoText421Time)
			c.expectClosed()
			require.Empty(t, h.messages())
		})
	}
}

func TestLimitsLineTooLong(t *testing.T) {
	tests := []struct {
		name   string
		before func(c *client)
	}{
		{"command line", func(c *client) {}},
		{"command line after EHLO", func(c *client) { c.cmd("EHLO client.example", 250) }},
		{"data line", func(c *client) {
			c.cmd("EHLO client.example", 250)
			c.cmd("MAIL FROM:<a@b.example>", 250)
			c.cmd("RCPT TO:<c@d.example>", 250)
			c.cmd("DATA", 354)
			c.send("Subject: long\r\n\r\n")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newRecorder()
			addr := serve(t, &Server{Handler: h, IOBufferMaxSize: 4096})
			c := dialGreeted(t, addr)
			tc.before(c)
			limitsFlood(c, 1<<20+1)
			c.protoExpect(421, protoText421Long)
			c.expectClosed()
			require.Empty(t, h.messages())
			// The server keeps serving others.
			c2 := dialGreeted(t, addr)
			c2.cmd("NOOP", 250)
		})
	}
}

// Lines up to IOBufferMaxSize pass, in commands and in DATA.
func TestLimitsLongLinesWithinLimit(t *testing.T) {
	h := newRecorder()
	addr := serve(t, &Server{Handler: h, IOBufferMaxSize: 4096})
	c := protoGreeted(t, addr)
	c.cmd("XFOO "+strings.Repeat("a", 4096-7), 500) // 4096 bytes with CRLF
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<c@d.example>", 250)
	c.cmd("DATA", 354)
	long := strings.Repeat("b", 4094) + "\r\n"
	c.send(long + long + ".\r\n")
	c.expect(250)
	require.Equal(t, long+long, h.waitMessages(t, 1)[0].Data)
}

func TestLimitsMaxMessageSize(t *testing.T) {
	h := newRecorder()
	addr := serve(t, &Server{Handler: h, MaxMessageSize: 1000})
	c := protoGreeted(t, addr)
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<c@d.example>", 250)
	c.cmd("DATA", 354)
	line := strings.Repeat("x", 98) + "\r\n" // 100 bytes
	c.send(strings.Repeat(line, 10) + "one more\r\n" + strings.Repeat(line, 50) + ".\r\n")
	c.protoExpect(552, protoText552)
	// The session goes on: the transaction is over, a new one works.
	c.protoCmd("RCPT TO:<c@d.example>", 503, protoText503)
	c.protoCmd("RSET", 250, protoTextOK)
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<c@d.example>", 250)
	c.cmd("DATA", 354)
	exact := strings.Repeat(line, 10) // exactly 1000 bytes: allowed
	c.send(exact + ".\r\n")
	c.protoExpect(250, protoText250Data)
	msgs := h.waitMessages(t, 1)
	require.Len(t, msgs, 1)
	require.Equal(t, exact, msgs[0].Data)
	c.cmd("QUIT", 221)
}

func TestLimitsMaxRecipients(t *testing.T) {
	h := newRecorder()
	addr := serve(t, &Server{Handler: h, MaxRecipients: 2})
	c := protoGreeted(t, addr)
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<r1@d.example>", 250)
	c.cmd("RCPT TO:<r2@d.example>", 250)
	c.protoCmd("RCPT TO:<r3@d.example>", 452, "Too many recipients")
	c.protoCmd("RCPT TO:<r4@d.example>", 452, "Too many recipients")
	c.cmd("DATA", 354)
	c.send("x\r\n.\r\n")
	c.expect(250)
	require.Equal(t, []string{"r1@d.example", "r2@d.example"}, h.waitMessages(t, 1)[0].To)
	// The count starts again with the next transaction.
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<r5@d.example>", 250)
	c.cmd("RCPT TO:<r6@d.example>", 250)
	c.cmd("RCPT TO:<r7@d.example>", 452)
}

func TestLimitsMaxConnections(t *testing.T) {
	srv := &Server{MaxProcessings: 2, MaxConnections: 2}
	addr := serve(t, srv)
	a := dialGreeted(t, addr)
	b := dialGreeted(t, addr)
	c := dial(t, addr)
	c.protoExpect(421, protoText421Busy)
	c.expectClosed()
	a.cmd("QUIT", 221)
	a.expectClosed()
	// A slot is free again once the server saw a leave.
	require.Eventually(t, func() bool { return srv.Connections() == 1 }, 5*time.Second, 5*time.Millisecond)
	d := dial(t, addr)
	d.protoExpect(220, protoTextBanner)
	b.cmd("NOOP", 250)
	d.cmd("NOOP", 250)
}

// Graceful Shutdown: the idle client gets 421 at once, and so does one still waiting
// for a processing slot; the client inside DATA finishes its message (250), then gets
// 421; Shutdown returns nil.
func TestLimitsShutdownDuringData(t *testing.T) {
	h := newRecorder()
	srv := &Server{Handler: h, MaxProcessings: 2}
	addr := serve(t, srv)
	a := protoGreeted(t, addr)
	b := protoGreeted(t, addr)
	b.cmd("MAIL FROM:<b@b.example>", 250)
	b.cmd("RCPT TO:<c@d.example>", 250)
	b.cmd("DATA", 354)
	b.send("Subject: in flight\r\n\r\nfirst part\r\n")
	waiting := dial(t, addr)
	require.Eventually(t, func() bool { return srv.Connections() == 3 }, 5*time.Second, 5*time.Millisecond)

	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(shutdownCtx(t, 5*time.Second)) }()

	a.protoExpect(421, protoText421)
	a.expectClosed()
	waiting.protoExpect(421, protoText421)
	waiting.expectClosed()
	// No new connection is accepted.
	require.Eventually(t, func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	}, 5*time.Second, 10*time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a message was in flight", err)
	default:
	}

	b.send("second part\r\n.\r\n")
	b.protoExpect(250, protoText250Data)
	b.protoExpect(421, protoText421)
	b.expectClosed()

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	msgs := h.waitMessages(t, 1)
	require.Len(t, msgs, 1)
	require.Equal(t, "b@b.example", msgs[0].From)
	require.Equal(t, "Subject: in flight\r\n\r\nfirst part\r\nsecond part\r\n", msgs[0].Data)
}

// Shutdown whose context ends first: the stuck session is cut with 421 and Shutdown
// returns the context's error; the message is not delivered.
func TestLimitsShutdownDeadline(t *testing.T) {
	h := newRecorder()
	srv := &Server{Handler: h}
	addr := serve(t, srv)
	c := protoGreeted(t, addr)
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<c@d.example>", 250)
	c.cmd("DATA", 354)
	c.send("Subject: never finished\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := srv.Shutdown(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	limitsReadNo250(t, c)
	require.Empty(t, h.messages())
}

// limitsReadNo250 reads until the connection ends and fails on any 250 reply.
func limitsReadNo250(t *testing.T, c *client) string {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(c.r)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the connection was not closed")
	for _, l := range strings.Split(string(rest), "\r\n") {
		require.False(t, strings.HasPrefix(l, "250"), "got %q after the server closed", rest)
	}
	if len(rest) > 0 {
		require.Equal(t, "421 "+protoText421+"\r\n", string(rest))
	}
	return string(rest)
}

// Close: every session gets 421 and is closed; a message whose OnMessage has not
// returned is never acknowledged.
func TestLimitsClose(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	delivered := make(chan struct{}, 1)
	h := &hookHandler{message: func(s *Session) error {
		close(entered)
		<-release
		delivered <- struct{}{}
		return nil
	}}
	srv := &Server{Handler: h}
	addr := serve(t, srv)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})

	idle1 := dialGreeted(t, addr)
	idle2 := protoGreeted(t, addr)
	idle2.cmd("MAIL FROM:<a@b.example>", 250)
	busy := protoGreeted(t, addr)
	busy.cmd("MAIL FROM:<a@b.example>", 250)
	busy.cmd("RCPT TO:<c@d.example>", 250)
	busy.cmd("DATA", 354)
	busy.send("Subject: blocked\r\n\r\nbody\r\n.\r\n")
	<-entered

	require.NoError(t, srv.Close())
	idle1.protoExpect(421, protoText421)
	idle1.expectClosed()
	idle2.protoExpect(421, protoText421)
	idle2.expectClosed()

	close(release)
	<-delivered // OnMessage returned nil, after Close
	limitsReadNo250(t, busy)

	_, err := net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, err, "the listener is closed")
}

// Close, repeated to catch races: a greeted idle session and one still waiting for
// the only processing slot each read exactly one 421 and then the end of the
// connection — never nothing, never two 421s, never a banner after Close.
func TestLimitsCloseEverySession421(t *testing.T) {
	const rounds = 200
	want := "421 " + protoText421 + "\r\n"
	bad := map[string]int{}
	for range rounds {
		srv := &Server{MaxProcessings: 1, Logger: testLogger()}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- srv.Serve(l) }()
		idle := dialGreeted(t, l.Addr().String())
		waiting := dial(t, l.Addr().String())
		require.Eventually(t, func() bool { return srv.Connections() == 2 }, 5*time.Second, time.Millisecond)
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-done, ErrServerClosed)
		for _, c := range []struct {
			name string
			c    *client
		}{{"idle", idle}, {"waiting", waiting}} {
			c.c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, _ := io.ReadAll(c.c.r)
			if string(got) != want {
				bad[fmt.Sprintf("%s session read %q", c.name, got)]++
			}
			c.c.conn.Close()
		}
	}
	require.Empty(t, bad, "in %d rounds", rounds)
}
