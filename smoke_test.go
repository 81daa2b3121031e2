package smtpd

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSmokeTransaction(t *testing.T) {
	h := newRecorder()
	addr := serve(t, &Server{Handler: h})
	c := dialGreeted(t, addr)
	require.Contains(t, c.cmd("EHLO client.example", 250), "OK")
	c.cmd("MAIL FROM:<a@example.com>", 250)
	c.cmd("RCPT TO:<b@example.com>", 250)
	c.cmd("DATA", 354)
	c.send("Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n")
	c.expect(250)
	c.cmd("QUIT", 221)
	m := h.waitMessages(t, 1)[0]
	require.Equal(t, "a@example.com", m.From)
	require.Equal(t, []string{"b@example.com"}, m.To)
	require.Equal(t, "Subject: hi\r\n\r\n.dot\r\nbody\r\n", m.Data)
}
