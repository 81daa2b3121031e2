package smtpd

import (
	"bufio"
	"crypto/tls"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestTLSHandshakeNeverCompletes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after string // sent after the 220 to STARTTLS; "" sends nothing
	}{
		{"plaintext garbage", "EHLO x\r\nMAIL FROM:<a@b>\r\n"},
		{"short garbage", "x\r\n"},
		{"stall", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHandler()
			addr, _ := tlsServe(t, &Server{Handler: h, TLSMode: TLSOptional, IOCmdTimeout: 500 * time.Millisecond})
			h.waitDisconnects(t, 1) // tlsServe's probe
			c := dialGreeted(t, addr)
			c.ehloLines("x")
			c.cmd("STARTTLS", 220)
			if tc.after != "" {
				c.send(tc.after)
			}
			// Another client is served while the handshake hangs.
			other := dialGreeted(t, addr)
			other.ehloLines("other")
			other.sendMessage("a@example.com", "b@example.com")
			other.cmd("QUIT", 221)
			b := readUntilClosed(t, c.conn, c.r)
			require.False(t, smtpReply.Match(b), "plaintext reply after STARTTLS: %q", b)
			h.waitDisconnects(t, 3)
			require.Equal(t, []string{"a@example.com"}, h.mailCalls(), "only the other client's MAIL ran")
			require.Equal(t, []secHelo{{"x", false}, {"other", false}}, h.heloCalls())
		})
	}
}

// tlsRecordTypes returns the content types of the TLS records in b, in order.
func tlsRecordTypes(b []byte) []byte {
	var types []byte
	for len(b) >= 5 {
		types = append(types, b[0])
		n := int(b[3])<<8 | int(b[4])
		if len(b) < 5+n {
			break
		}
		b = b[5+n:]
	}
	return types
}

// TestTLSCloseNotify checks that the server ends a TLS session with a close_notify
// alert before closing the connection (RFC 8446 6.1; OpenSSL 3 clients report a
// close without it as an error). TLS 1.2 is forced so that alert records are
// visible on the wire (content type 21).
func TestTLSCloseNotify(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []authStep // over TLS, after EHLO; the last one ends the session
	}{
		{"QUIT", []authStep{{"QUIT", 221}}},
		{"421 after MaxAuthFailures", []authStep{{"AUTH PLAIN " + plainResp("", authUser, authWrong), 421}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHandler()
			addr, pool := tlsServe(t, &Server{Handler: h, TLSMode: TLSOptional, AuthMode: AuthOptional, MaxAuthFailures: 1})
			c := dialGreeted(t, addr)
			c.ehloLines("x")
			c.cmd("STARTTLS", 220)
			ic := &injectionConn{Conn: c.conn, r: c.r}
			cfg := tlsClientConfig(pool)
			cfg.MaxVersion = tls.VersionTLS12
			tconn := tls.Client(ic, cfg)
			tconn.SetDeadline(time.Now().Add(10 * time.Second))
			require.NoError(t, tconn.Handshake())
			sc := &client{t: t, conn: tconn, r: bufio.NewReader(tconn)}
			sc.ehloLines("x")
			for _, st := range tc.steps {
				sc.cmd(st.send, st.code)
			}
			readUntilClosed(t, tconn, sc.r)
			types := tlsRecordTypes(ic.received())
			require.NotEmpty(t, types)
			require.Equal(t, byte(21), types[len(types)-1],
				"the last record before the close must be an alert (close_notify); record types: %v", types)
		})
	}
}
