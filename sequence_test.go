package smtpd

import (
	"io"
	"strings"
	"testing"
	"time"

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
			addr := serve(t, &Server{})
			c := dialGreeted(t, addr)
			for _, st := range tc.steps {
				c.cmd(st.line, st.code)
			}
		})
	}
}

// A transaction after a new EHLO delivers only what was sent after it.
func TestSequenceEHLOResetDelivers(t *testing.T) {
	h := newRecorder()
	addr := serve(t, &Server{Handler: h})
	c := protoGreeted(t, addr)
	c.cmd("MAIL FROM:<old@example.com>", 250)
	c.cmd("RCPT TO:<old-rcpt@example.com>", 250)
	c.cmd("HELO second.example", 250)
	c.cmd("MAIL FROM:<new@example.com>", 250)
	c.cmd("RCPT TO:<new-rcpt@example.com>", 250)
	c.cmd("DATA", 354)
	c.send("hi\r\n.\r\n")
	c.expect(250)
	m := h.waitMessages(t, 1)[0]
	require.Equal(t, "new@example.com", m.From)
	require.Equal(t, []string{"new-rcpt@example.com"}, m.To)
	require.Equal(t, "second.example", m.Helo)
}

func TestSequencePipeliningOff(t *testing.T) {
	t.Run("MAIL RCPT in one write", func(t *testing.T) {
		mails := make(chan string, 2)
		addr := serve(t, &Server{Handler: &hookHandler{mail: func(s *Session, from string) (string, error) {
			mails <- from
			return "", nil
		}}})
		c := protoGreeted(t, addr)
		c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
		c.protoExpect(500, protoText500Pipe)
		// The last line of the burst runs normally: MAIL was not executed, so 503.
		c.protoExpect(503, protoText503)
		require.Len(t, mails, 0, "a refused line must not run")
		c.protoCmd("QUIT", 221, protoText221)
		c.expectClosed()
	})
	t.Run("every line one reply", func(t *testing.T) {
		addr := serve(t, &Server{})
		c := protoGreeted(t, addr)
		c.send("NOOP\r\nRSET\r\nXFOO\r\nNOOP\r\n")
		c.protoExpect(500, protoText500Pipe)
		c.protoExpect(500, protoText500Pipe)
		c.protoExpect(500, protoText500Pipe)
		c.protoExpect(250, protoTextOK)
		// Any extra reply would come before the 221.
		c.protoCmd("QUIT", 221, protoText221)
		c.expectClosed()
	})
	t.Run("burst ending in QUIT", func(t *testing.T) {
		addr := serve(t, &Server{})
		c := protoGreeted(t, addr)
		c.send("QUIT\r\nNOOP\r\n")
		c.protoExpect(500, protoText500Pipe) // the QUIT was refused
		c.protoExpect(250, protoTextOK)
		c.protoCmd("QUIT", 221, protoText221)
		c.expectClosed()
	})
	t.Run("whole transaction in one write delivers nothing", func(t *testing.T) {
		h := newRecorder()
		addr := serve(t, &Server{Handler: h})
		c := protoGreeted(t, addr)
		c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nhello\r\n.\r\n")
		c.protoExpect(500, protoText500Pipe) // MAIL
		c.protoExpect(500, protoText500Pipe) // RCPT
		c.protoExpect(500, protoText500Pipe) // DATA
		c.protoExpect(500, protoText500Pipe) // hello
		c.protoExpect(500, protoText500)     // "." runs as a command: unknown
		c.protoCmd("QUIT", 221, protoText221)
		c.expectClosed()
		require.Empty(t, h.messages())
	})
}

// seqReadBurst reads exactly want with raw reads and reports how many reads it took.
func seqReadBurst(t *testing.T, c *client, want string) int {
	t.Helper()
	require.Zero(t, c.r.Buffered())
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	reads := 0
	buf := make([]byte, 4096)
	for len(got) < len(want) {
		n, err := c.conn.Read(buf)
		require.NoError(t, err, "read so far %q", got)
		got = append(got, buf[:n]...)
		reads++
	}
	require.Equal(t, want, string(got))
	return reads
}

func TestSequencePipeliningOn(t *testing.T) {
	t.Run("groups as RFC 2920", func(t *testing.T) {
		h := newRecorder()
		addr := serve(t, &Server{Handler: h, Pipelining: true})
		c := protoGreeted(t, addr)
		// DATA ends a group: the four replies come in one flush, so one read.
		c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@f.example>\r\nDATA\r\n")
		require.Equal(t, 1, seqReadBurst(t, c, "250 OK\r\n250 OK\r\n250 OK\r\n354 "+protoText354+"\r\n"),
			"the replies of one group arrive together")
		// The message content starts the next group; QUIT ends it.
		c.send("Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\nRSET\r\nQUIT\r\n")
		require.Equal(t, 1, seqReadBurst(t, c, "250 "+protoText250Data+"\r\n250 OK\r\n250 OK\r\n221 "+protoText221+"\r\n"),
			"the replies of one group arrive together")
		c.expectClosed()
		m := h.waitMessages(t, 1)[0]
		require.Equal(t, "a@b.example", m.From)
		require.Equal(t, []string{"c@d.example", "e@f.example"}, m.To)
		require.Equal(t, "Subject: p\r\n\r\nbody\r\n", m.Data)
	})
	t.Run("whole transaction in one write", func(t *testing.T) {
		h := newRecorder()
		addr := serve(t, &Server{Handler: h, Pipelining: true})
		c := protoGreeted(t, addr)
		c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n" +
			"Subject: q\r\n\r\nbody\r\n.\r\nQUIT\r\n")
		seqReadBurst(t, c, "250 OK\r\n250 OK\r\n354 "+protoText354+"\r\n250 "+protoText250Data+
			"\r\n221 "+protoText221+"\r\n")
		rest, _ := io.ReadAll(c.conn)
		require.Empty(t, rest)
		m := h.waitMessages(t, 1)[0]
		require.Equal(t, "Subject: q\r\n\r\nbody\r\n", m.Data)
	})
}

func TestSequencePipeliningOnErrorsInBatch(t *testing.T) {
	h := newRecorder()
	addr := serve(t, &Server{Handler: h, Pipelining: true})
	c := protoGreeted(t, addr)
	// A refused RCPT in the batch does not stop the others; DATA with one good
	// recipient works.
	c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<bad address>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nx\r\n.\r\n")
	c.protoExpect(250, protoTextOK)
	c.protoExpect(501, protoText501)
	c.protoExpect(250, protoTextOK)
	c.protoExpect(354, protoText354)
	c.protoExpect(250, protoText250Data)
	m := h.waitMessages(t, 1)[0]
	require.Equal(t, []string{"c@d.example"}, m.To)
	// Ten NOOPs in one write: ten replies.
	c.send(strings.Repeat("NOOP\r\n", 10))
	for range 10 {
		c.protoExpect(250, protoTextOK)
	}
	c.protoCmd("QUIT", 221, protoText221)
	c.expectClosed()
}
