package smtpd_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// seqStep is one command and the reply it must get.
type seqStep struct {
	line string
	code int
}

func TestSequenceErrors(t *testing.T) {
	tests := []struct {
		name  string
		steps []seqStep
	}{
		{"MAIL before HELO", []seqStep{{"MAIL FROM:<a@b.example>", 503}}},
		{"RCPT before HELO", []seqStep{{"RCPT TO:<c@d.example>", 503}}},
		{"DATA before HELO", []seqStep{{"DATA", 503}}},
		{"RCPT before MAIL", []seqStep{{"EHLO x.example", 250}, {"RCPT TO:<c@d.example>", 503}}},
		{"DATA before MAIL", []seqStep{{"EHLO x.example", 250}, {"DATA", 503}}},
		{"DATA before RCPT", []seqStep{{"EHLO x.example", 250}, {"MAIL FROM:<a@b.example>", 250}, {"DATA", 503}}},
		{"MAIL inside a transaction", []seqStep{{"EHLO x.example", 250}, {"MAIL FROM:<a@b.example>", 250}, {"MAIL FROM:<a@b.example>", 503}}},
		{"MAIL after RCPT", []seqStep{{"EHLO x.example", 250}, {"MAIL FROM:<a@b.example>", 250}, {"RCPT TO:<c@d.example>", 250}, {"MAIL FROM:<a@b.example>", 503}}},
		{"HELO then MAIL works", []seqStep{{"HELO x.example", 250}, {"MAIL FROM:<a@b.example>", 250}}},
		{"RSET before HELO", []seqStep{{"RSET", 250}, {"MAIL FROM:<a@b.example>", 503}}},
		{"RSET ends the transaction", []seqStep{{"EHLO x.example", 250}, {"MAIL FROM:<a@b.example>", 250}, {"RCPT TO:<c@d.example>", 250}, {"RSET", 250}, {"DATA", 503}, {"RCPT TO:<c@d.example>", 503}, {"MAIL FROM:<a@b.example>", 250}}},
		{"failed HELO does not greet", []seqStep{{"HELO", 501}, {"MAIL FROM:<a@b.example>", 503}}},
		{"EHLO again resets (MAIL RCPT EHLO DATA)", []seqStep{{"EHLO x.example", 250}, {"MAIL FROM:<a@b.example>", 250}, {"RCPT TO:<c@d.example>", 250}, {"EHLO y.example", 250}, {"DATA", 503}, {"RCPT TO:<c@d.example>", 503}, {"MAIL FROM:<a@b.example>", 250}}},
		{"HELO again resets (MAIL RCPT HELO DATA)", []seqStep{{"EHLO x.example", 250}, {"MAIL FROM:<a@b.example>", 250}, {"RCPT TO:<c@d.example>", 250}, {"HELO y.example", 250}, {"DATA", 503}}},
		{"EHLO again after MAIL", []seqStep{{"EHLO x.example", 250}, {"MAIL FROM:<a@b.example>", 250}, {"EHLO x.example", 250}, {"RCPT TO:<c@d.example>", 503}, {"MAIL FROM:<a@b.example>", 250}}},
		{"EHLO twice", []seqStep{{"EHLO x.example", 250}, {"EHLO x.example", 250}, {"HELO x.example", 250}, {"MAIL FROM:<a@b.example>", 250}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := smtptest.NewServer(t, nil)
			c := ts.DialGreeted(t)
			for _, st := range tc.steps {
				c.Cmd(st.line, st.code)
			}
		})
	}
}

// A transaction after a new EHLO delivers only what was sent after it.
func TestSequenceEHLOResetDelivers(t *testing.T) {
	h := &smtptest.Recorder{}
	ts := smtptest.NewServer(t, h)
	c := greeted(t, ts)
	c.Cmd("MAIL FROM:<old@example.com>", 250)
	c.Cmd("RCPT TO:<old-rcpt@example.com>", 250)
	c.Cmd("HELO second.example", 250)
	c.Cmd("MAIL FROM:<new@example.com>", 250)
	c.Cmd("RCPT TO:<new-rcpt@example.com>", 250)
	c.Cmd("DATA", 354)
	c.Send("hi\r\n.\r\n")
	c.Expect(250)
	m := h.Wait(t, 1)[0]
	require.Equal(t, "new@example.com", m.From)
	require.Equal(t, []string{"new-rcpt@example.com"}, m.To)
	require.Equal(t, "second.example", m.Helo)
}

func TestSequencePipeliningOff(t *testing.T) {
	t.Run("MAIL RCPT in one write", func(t *testing.T) {
		mails := make(chan string, 2)
		ts := smtptest.NewServer(t, &hookHandler{mail: func(s *smtpd.Session, from string) (string, error) {
			mails <- from
			return "", nil
		}})
		c := greeted(t, ts)
		c.Send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
		require.Equal(t, smtpd.ProtoText500Pipe, c.Expect(500))
		// The last line of the burst runs normally: MAIL was not executed, so 503.
		require.Equal(t, smtpd.ProtoText503, c.Expect(503))
		require.Len(t, mails, 0, "a refused line must not run")
		require.Equal(t, smtpd.ProtoText221, c.Cmd("QUIT", 221))
		c.ExpectClosed()
	})
	t.Run("every line one reply", func(t *testing.T) {
		ts := smtptest.NewServer(t, nil)
		c := greeted(t, ts)
		c.Send("NOOP\r\nRSET\r\nXFOO\r\nNOOP\r\n")
		require.Equal(t, smtpd.ProtoText500Pipe, c.Expect(500))
		require.Equal(t, smtpd.ProtoText500Pipe, c.Expect(500))
		require.Equal(t, smtpd.ProtoText500Pipe, c.Expect(500))
		require.Equal(t, smtpd.ProtoTextOK, c.Expect(250))
		// Any extra reply would come before the 221.
		require.Equal(t, smtpd.ProtoText221, c.Cmd("QUIT", 221))
		c.ExpectClosed()
	})
	t.Run("burst ending in QUIT", func(t *testing.T) {
		ts := smtptest.NewServer(t, nil)
		c := greeted(t, ts)
		c.Send("QUIT\r\nNOOP\r\n")
		require.Equal(t, smtpd.ProtoText500Pipe, c.Expect(500)) // the QUIT was refused
		require.Equal(t, smtpd.ProtoTextOK, c.Expect(250))
		require.Equal(t, smtpd.ProtoText221, c.Cmd("QUIT", 221))
		c.ExpectClosed()
	})
	t.Run("whole transaction in one write delivers nothing", func(t *testing.T) {
		h := &smtptest.Recorder{}
		ts := smtptest.NewServer(t, h)
		c := greeted(t, ts)
		c.Send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nhello\r\n.\r\n")
		require.Equal(t, smtpd.ProtoText500Pipe, c.Expect(500)) // MAIL
		require.Equal(t, smtpd.ProtoText500Pipe, c.Expect(500)) // RCPT
		require.Equal(t, smtpd.ProtoText500Pipe, c.Expect(500)) // DATA
		require.Equal(t, smtpd.ProtoText500Pipe, c.Expect(500)) // hello
		require.Equal(t, smtpd.ProtoText500, c.Expect(500))     // "." runs as a command: unknown
		require.Equal(t, smtpd.ProtoText221, c.Cmd("QUIT", 221))
		c.ExpectClosed()
		require.Empty(t, h.Messages())
	})
}

// seqReadBurst reads exactly want with raw reads from c's connection and reports
// how many reads it took. It bypasses c's buffer: call it only when every reply sent
// before the burst has been read (the server sends nothing unasked).
func seqReadBurst(t *testing.T, c *smtptest.Conn, want string) int {
	t.Helper()
	conn := c.NetConn()
	conn.SetReadDeadline(time.Now().Add(smtptest.DefaultTimeout))
	var got []byte
	reads := 0
	buf := make([]byte, 4096)
	for len(got) < len(want) {
		n, err := conn.Read(buf)
		require.NoError(t, err, "read so far %q", got)
		got = append(got, buf[:n]...)
		reads++
	}
	require.Equal(t, want, string(got))
	return reads
}

func TestSequencePipeliningOn(t *testing.T) {
	t.Run("groups as RFC 2920", func(t *testing.T) {
		h := &smtptest.Recorder{}
		ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.Pipelining = true })
		c := greeted(t, ts)
		// DATA ends a group: the four replies come in one flush, so one read.
		c.Send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@f.example>\r\nDATA\r\n")
		require.Equal(t, 1, seqReadBurst(t, c, "250 OK\r\n250 OK\r\n250 OK\r\n354 "+smtpd.ProtoText354+"\r\n"),
			"the replies of one group arrive together")
		// The message content starts the next group; QUIT ends it.
		c.Send("Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\nRSET\r\nQUIT\r\n")
		require.Equal(t, 1, seqReadBurst(t, c, "250 "+smtpd.ProtoText250Data+"\r\n250 OK\r\n250 OK\r\n221 "+smtpd.ProtoText221+"\r\n"),
			"the replies of one group arrive together")
		c.ExpectClosed()
		m := h.Wait(t, 1)[0]
		require.Equal(t, "a@b.example", m.From)
		require.Equal(t, []string{"c@d.example", "e@f.example"}, m.To)
		require.Equal(t, "Subject: p\r\n\r\nbody\r\n", string(m.Data))
	})
	t.Run("whole transaction in one write", func(t *testing.T) {
		h := &smtptest.Recorder{}
		ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.Pipelining = true })
		c := greeted(t, ts)
		c.Send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n" +
			"Subject: q\r\n\r\nbody\r\n.\r\nQUIT\r\n")
		seqReadBurst(t, c, "250 OK\r\n250 OK\r\n354 "+smtpd.ProtoText354+"\r\n250 "+smtpd.ProtoText250Data+
			"\r\n221 "+smtpd.ProtoText221+"\r\n")
		rest, _ := io.ReadAll(c.NetConn())
		require.Empty(t, rest)
		m := h.Wait(t, 1)[0]
		require.Equal(t, "Subject: q\r\n\r\nbody\r\n", string(m.Data))
	})
}

func TestSequencePipeliningOnErrorsInBatch(t *testing.T) {
	h := &smtptest.Recorder{}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.Pipelining = true })
	c := greeted(t, ts)
	// A refused RCPT in the batch does not stop the others; DATA with one good
	// recipient works.
	c.Send("MAIL FROM:<a@b.example>\r\nRCPT TO:<bad address>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nx\r\n.\r\n")
	require.Equal(t, smtpd.ProtoTextOK, c.Expect(250))
	require.Equal(t, smtpd.ProtoText501, c.Expect(501))
	require.Equal(t, smtpd.ProtoTextOK, c.Expect(250))
	require.Equal(t, smtpd.ProtoText354, c.Expect(354))
	require.Equal(t, smtpd.ProtoText250Data, c.Expect(250))
	m := h.Wait(t, 1)[0]
	require.Equal(t, []string{"c@d.example"}, m.To)
	// Ten NOOPs in one write: ten replies.
	c.Send(strings.Repeat("NOOP\r\n", 10))
	for range 10 {
		require.Equal(t, smtpd.ProtoTextOK, c.Expect(250))
	}
	require.Equal(t, smtpd.ProtoText221, c.Cmd("QUIT", 221))
	c.ExpectClosed()
}
