package smtpd_test

import (
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// limitsTrickle writes s one byte every interval, then keeps writing "X" bytes, never
// a line end, until the connection fails or stop is closed.
func limitsTrickle(c *smtptest.Conn, s string, interval time.Duration, stop <-chan struct{}) {
	conn := c.NetConn()
	go func() {
		b := []byte(s)
		for i := 0; ; i++ {
			ch := byte('X')
			if i < len(b) {
				ch = b[i]
			}
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := conn.Write([]byte{ch}); err != nil {
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
func limitsFlood(c *smtptest.Conn, n int) {
	conn := c.NetConn()
	go func() {
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		conn.Write([]byte(strings.Repeat("a", n)))
	}()
}

func TestLimitsTimeout(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, c *smtptest.Conn)
	}{
		{"silent after banner", func(t *testing.T, c *smtptest.Conn) {}},
		{"silent after EHLO", func(t *testing.T, c *smtptest.Conn) { c.Cmd("EHLO client.example", 250) }},
		{"trickling NOOP", func(t *testing.T, c *smtptest.Conn) {
			stop := make(chan struct{})
			t.Cleanup(func() { close(stop) })
			limitsTrickle(c, "NOOP", 100*time.Millisecond, stop)
		}},
		{"silent inside DATA", func(t *testing.T, c *smtptest.Conn) {
			c.Cmd("EHLO client.example", 250)
			c.Cmd("MAIL FROM:<a@b.example>", 250)
			c.Cmd("RCPT TO:<c@d.example>", 250)
			c.Cmd("DATA", 354)
			c.Send("Subject: half\r\n\r\nhalf a li")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &smtptest.Recorder{}
			ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.IOCmdTimeout = 300 * time.Millisecond })
			c := ts.DialGreeted(t)
			tc.run(t, c)
			require.Equal(t, smtpd.ProtoText421Time, c.Expect(421))
			c.ExpectClosed()
			require.Empty(t, h.Messages())
		})
	}
}

func TestLimitsLineTooLong(t *testing.T) {
	tests := []struct {
		name   string
		before func(c *smtptest.Conn)
	}{
		{"command line", func(c *smtptest.Conn) {}},
		{"command line after EHLO", func(c *smtptest.Conn) { c.Cmd("EHLO client.example", 250) }},
		{"data line", func(c *smtptest.Conn) {
			c.Cmd("EHLO client.example", 250)
			c.Cmd("MAIL FROM:<a@b.example>", 250)
			c.Cmd("RCPT TO:<c@d.example>", 250)
			c.Cmd("DATA", 354)
			c.Send("Subject: long\r\n\r\n")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &smtptest.Recorder{}
			ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.IOBufferMaxSize = 4096 })
			c := ts.DialGreeted(t)
			tc.before(c)
			limitsFlood(c, 1<<20+1)
			require.Equal(t, smtpd.ProtoText421Long, c.Expect(421))
			c.ExpectClosed()
			require.Empty(t, h.Messages())
			// The server keeps serving others.
			c2 := ts.DialGreeted(t)
			c2.Cmd("NOOP", 250)
		})
	}
}

// Lines up to IOBufferMaxSize pass, in commands and in DATA.
func TestLimitsLongLinesWithinLimit(t *testing.T) {
	h := &smtptest.Recorder{}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.IOBufferMaxSize = 4096 })
	c := greeted(t, ts)
	c.Cmd("XFOO "+strings.Repeat("a", 4096-7), 500) // 4096 bytes with CRLF
	c.Cmd("MAIL FROM:<a@b.example>", 250)
	c.Cmd("RCPT TO:<c@d.example>", 250)
	c.Cmd("DATA", 354)
	long := strings.Repeat("b", 4094) + "\r\n"
	c.Send(long + long + ".\r\n")
	c.Expect(250)
	require.Equal(t, long+long, string(h.Wait(t, 1)[0].Data))
}

func TestLimitsMaxMessageSize(t *testing.T) {
	h := &smtptest.Recorder{}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.MaxMessageSize = 1000 })
	c := greeted(t, ts)
	c.Cmd("MAIL FROM:<a@b.example>", 250)
	c.Cmd("RCPT TO:<c@d.example>", 250)
	c.Cmd("DATA", 354)
	line := strings.Repeat("x", 98) + "\r\n" // 100 bytes
	c.Send(strings.Repeat(line, 10) + "one more\r\n" + strings.Repeat(line, 50) + ".\r\n")
	require.Equal(t, smtpd.ProtoText552, c.Expect(552))
	// The session goes on: the transaction is over, a new one works.
	require.Equal(t, smtpd.ProtoText503, c.Cmd("RCPT TO:<c@d.example>", 503))
	require.Equal(t, smtpd.ProtoTextOK, c.Cmd("RSET", 250))
	c.Cmd("MAIL FROM:<a@b.example>", 250)
	c.Cmd("RCPT TO:<c@d.example>", 250)
	c.Cmd("DATA", 354)
	exact := strings.Repeat(line, 10) // exactly 1000 bytes: allowed
	c.Send(exact + ".\r\n")
	require.Equal(t, smtpd.ProtoText250Data, c.Expect(250))
	msgs := h.Wait(t, 1)
	require.Len(t, msgs, 1)
	require.Equal(t, exact, string(msgs[0].Data))
	c.Cmd("QUIT", 221)
}

func TestLimitsMaxRecipients(t *testing.T) {
	h := &smtptest.Recorder{}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.MaxRecipients = 2 })
	c := greeted(t, ts)
	c.Cmd("MAIL FROM:<a@b.example>", 250)
	c.Cmd("RCPT TO:<r1@d.example>", 250)
	c.Cmd("RCPT TO:<r2@d.example>", 250)
	require.Equal(t, "Too many recipients", c.Cmd("RCPT TO:<r3@d.example>", 452))
	require.Equal(t, "Too many recipients", c.Cmd("RCPT TO:<r4@d.example>", 452))
	c.Cmd("DATA", 354)
	c.Send("x\r\n.\r\n")
	c.Expect(250)
	require.Equal(t, []string{"r1@d.example", "r2@d.example"}, h.Wait(t, 1)[0].To)
	// The count starts again with the next transaction.
	c.Cmd("MAIL FROM:<a@b.example>", 250)
	c.Cmd("RCPT TO:<r5@d.example>", 250)
	c.Cmd("RCPT TO:<r6@d.example>", 250)
	c.Cmd("RCPT TO:<r7@d.example>", 452)
}
