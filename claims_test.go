package smtpd

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A declared SIZE= is a claim: it never reserves memory or MaxBufferedData
// beyond the bytes received (issue 14; the old core sized the buffer to it past 1
// MiB of data).
func TestSizeClaimReservesNothing(t *testing.T) {
	t.Run("stalled claims leave the budget to others", func(t *testing.T) {
		srv := &Server{MaxBufferedData: 12 << 20}
		addr, _ := abuseServe(t, srv)
		for i := range 3 {
			c := dialGreeted(t, addr)
			c.cmd("EHLO stall.example", 250)
			c.cmd(fmt.Sprintf("MAIL FROM:<s%d@example.com> SIZE=4000000", i), 250)
			c.cmd("RCPT TO:<rcpt@example.com>", 250)
			c.cmd("DATA", 354)
			c.send(abuseBody(1100 << 10)) // and then nothing: the transfer stalls
		}
		// Wait until the three hold their data.
		require.Eventually(t, func() bool { return srv.buffered.used.Load() >= 3*(1100<<10) }, testTimeout, 10*time.Millisecond)
		require.Less(t, srv.buffered.used.Load(), int64(3*2<<20), "each holds about what it sent, not its claim")
		c := dialGreeted(t, addr)
		c.cmd("EHLO other.example", 250)
		code, text := abuseMessage(c, "other@example.com", abuseBody(2<<20))
		require.Equal(t, 250, code, text)
	})
	t.Run("a huge claim with no size limit", func(t *testing.T) {
		srv := &Server{MaxMessageSize: -1}
		addr, _ := abuseServe(t, srv)
		c := dialGreeted(t, addr)
		c.cmd("EHLO client.example", 250)
		c.cmd("MAIL FROM:<a@example.com> SIZE=999999999999", 250)
		c.cmd("RCPT TO:<rcpt@example.com>", 250)
		c.cmd("DATA", 354)
		c.send(abuseBody(3<<20) + ".\r\n")
		code, text := c.reply()
		require.Equal(t, 250, code, text)
	})
}

// grownCap: without a claim the buffer follows the data; a claim caps growth.
func TestGrownCapFollowsData(t *testing.T) {
	for _, tc := range []struct {
		cur, need, declared, maxMessage int
		lo, hi                          int
	}{
		{cur: 1 << 20, need: 1<<20 + 1, declared: 0, maxMessage: 32 << 20, lo: 1<<20 + 1, hi: 1<<20 + 1<<18},
		{cur: 1 << 20, need: 1<<20 + 1, declared: 30 << 20, maxMessage: 32 << 20, lo: 1<<20 + 1, hi: 1<<20 + 1<<18},
		{cur: 1 << 20, need: 1<<20 + 1, declared: 1<<20 + 100, maxMessage: 32 << 20, lo: 1<<20 + 100, hi: 1<<20 + 100},
		{cur: 1 << 20, need: 1<<20 + 1, declared: 2147483647, maxMessage: 0, lo: 1<<20 + 1, hi: 1<<20 + 1<<18},
		{cur: 4096, need: 5000, declared: 0, maxMessage: 4500 + 1000, lo: 5000, hi: 5500},
	} {
		c := &conn{cfg: &config{maxMessage: tc.maxMessage}, s: &Session{}}
		c.s.Message.Data = make([]byte, 0, tc.cur)
		c.s.Envelope.Size = tc.declared
		got := c.grownCap(tc.need)
		require.GreaterOrEqual(t, got, tc.lo, "%+v", tc)
		require.LessOrEqual(t, got, tc.hi, "%+v", tc)
	}
}

// Recipients past MaxRecipients get 452 (RFC 5321 4.5.3.1.10) and count as errors
// only past a second MaxRecipients of them, as Postfix's
// smtpd_recipient_overshoot_limit: a client with many recipients is told to send
// the rest later, not cut off for errors.
func TestRecipientOvershoot(t *testing.T) {
	srv := &Server{MaxRecipients: 3, MaxErrors: 1}
	addr, _ := abuseServe(t, srv)
	c := dialGreeted(t, addr)
	c.cmd("EHLO client.example", 250)
	c.cmd("MAIL FROM:<a@example.com>", 250)
	rcpt := func(i int) string { return fmt.Sprintf("RCPT TO:<r%d@example.com>", i) }
	for i := range 3 {
		c.cmd(rcpt(i), 250)
	}
	for i := 3; i < 6; i++ { // the overshoot: not errors
		require.Equal(t, errTooManyRecipients.Message, c.cmd(rcpt(i), 452))
	}
	require.Equal(t, errTooManyRecipients.Message, c.cmd(rcpt(6), 452)) // an error: the first
	c.send(rcpt(7) + "\r\n")                                            // the second: past MaxErrors
	require.Equal(t, errTooManyErrors.Message, c.expect(421))
	c.expectClosed()
	require.EqualValues(t, 5, srv.Stats().Limits.MaxRecipients)
}
