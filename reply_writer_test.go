package smtpd_test

// The reply writer: however long the hooks take and however many replies a burst
// of lines asks for, every line gets exactly one reply, in order.

import (
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// slowRcpt is a handler whose OnRcptTo takes d.
type slowRcpt struct {
	smtpd.BaseHandler
	d time.Duration
}

func (h slowRcpt) OnRcptTo(*smtpd.Session, string) (string, error) {
	time.Sleep(h.d)
	return "", nil
}

// The writer's buffer used to flush itself (when full) with the write deadline of
// the previous flush, long expired after slow hooks: replies were lost.
func TestReplyWriterFreshDeadlineAfterSlowHooks(t *testing.T) {
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
					require.Equal(t, smtpd.ProtoText500Pipe, text)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := smtptest.NewServer(t, slowRcpt{d: 5 * time.Millisecond}, func(s *smtpd.Server) {
				s.Pipelining, s.MaxErrors, s.MaxJunkCommands = tc.pipelining, -1, -1
				s.IOCmdTimeout = 300 * time.Millisecond
			})
			c := ts.DialGreeted(t)
			c.Cmd("EHLO writer.example", 250)
			c.Send(tc.burst) // one write; the client reads nothing until it is all sent
			for i := range tc.lines {
				code, text := c.Reply()
				tc.check(t, i, code, text)
			}
			c.Cmd("QUIT", 221) // in step: no reply was lost or duplicated
			c.ExpectClosed()
		})
	}
}
