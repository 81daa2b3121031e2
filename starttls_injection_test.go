package smtpd

import (
	"bufio"
	"crypto/tls"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// STARTTLS with commands pipelined behind it in the same write (CVE-2011-0411 class).
var starttlsInjections = []struct {
	name     string
	injected string
}{
	{"EHLO", "EHLO injected.example\r\n"},
	{"MAIL", "MAIL FROM:<a@b>\r\n"},
	{"RSET NOOP", "RSET\r\nNOOP\r\n"},
}

func TestSTARTTLSInjectionPipelining(t *testing.T) {
	for _, tc := range starttlsInjections {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHandler()
			addr, pool := tlsServe(t, &Server{Handler: h, TLSMode: TLSOptional, Pipelining: true})
			c := dialGreeted(t, addr)
			require.Contains(t, c.ehloLines("before.example"), "PIPELINING")
			c.send("STARTTLS\r\n" + tc.injected)
			// Exactly one plaintext reply: the 220.
			require.Equal(t, "220 Ready to start TLS\r\n", c.rawLine())

			// The handshake reads through c.r: a plaintext reply to an injected line,
			// sent before the handshake, would be read as a TLS record.
			ic := &injectionConn{Conn: c.conn, r: c.r}
			tconn := tls.Client(ic, tlsClientConfig(pool))
			tconn.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tconn.Handshake(); err != nil {
				// Acceptable only as "the connection is closed", without a plaintext reply.
				t.Logf("handshake refused (%v): checking that the connection is closed", err)
				got := ic.received()
				require.False(t, smtpReply.Match(got), "plaintext reply after STARTTLS: %q (handshake: %v)", got, err)
				rest := readUntilClosed(t, c.conn, c.r)
				require.False(t, smtpReply.Match(rest), "plaintext reply after STARTTLS: %q", rest)
				require.Equal(t, []secHelo{{"before.example", false}}, h.heloCalls())
				require.Empty(t, h.mailCalls())
				return
			}
			tconn.SetDeadline(time.Time{})
			sc := &client{t: t, conn: tconn, r: bufio.NewReader(tconn)}
			// Nothing injected was answered over TLS either: each reply below is the
			// reply to our own command, in order.
			require.Equal(t, "OK", sc.cmd("NOOP", 250))
			sc.cmd("MAIL FROM:<c@d.example>", 503) // no EHLO since TLS began
			lines := sc.ehloLines("after.example")
			require.NotContains(t, lines, "STARTTLS")
			sc.cmd("QUIT", 221)
			readUntilClosed(t, tconn, sc.r)
			h.waitDisconnects(t, 2) // tlsServe's probe and this session
			require.Equal(t, []secHelo{{"before.example", false}, {"after.example", true}}, h.heloCalls(),
				"no injected EHLO ran")
			require.Empty(t, h.mailCalls(), "no injected MAIL ran")
		})
	}
}

func TestSTARTTLSInjectionNoPipelining(t *testing.T) {
	for _, tc := range []struct {
		name     string
		injected string
		replies  []int // after the 500 to STARTTLS
		mails    []string
		helos    []secHelo
	}{
		{"EHLO", "EHLO injected.example\r\n", []int{250}, nil,
			[]secHelo{{"before.example", false}, {"injected.example", false}}},
		{"MAIL", "MAIL FROM:<a@b>\r\n", []int{250}, []string{"a@b"},
			[]secHelo{{"before.example", false}}},
		{"RSET NOOP", "RSET\r\nNOOP\r\n", []int{500, 250}, nil,
			[]secHelo{{"before.example", false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHandler()
			addr, pool := tlsServe(t, &Server{Handler: h, TLSMode: TLSOptional})
			c := dialGreeted(t, addr)
			c.ehloLines("before.example")
			c.send("STARTTLS\r\n" + tc.injected)
			require.Equal(t, "Bad input, PIPELINING is not allowed", c.expect(500))
			for _, code := range tc.replies {
				c.expect(code)
			}
			// No TLS started: the connection is still plaintext.
			require.Equal(t, "250 OK\r\n", func() string { c.send("NOOP\r\n"); return c.rawLine() }())
			require.Equal(t, tc.mails, h.mailCalls())
			require.Equal(t, tc.helos, h.heloCalls())
			// A STARTTLS on its own works afterwards.
			c.cmd("RSET", 250)
			sc := tlsStart(t, c, tlsClientConfig(pool))
			sc.ehloLines("after.example")
			sc.cmd("QUIT", 221)
		})
	}
}
