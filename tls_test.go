package smtpd

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tlsPoolOf returns a pool holding the leaf of cfg's first certificate.
func tlsPoolOf(t *testing.T, cfg *tls.Config) *x509.CertPool {
	t.Helper()
	require.NotEmpty(t, cfg.Certificates)
	leaf := cfg.Certificates[0].Leaf
	if leaf == nil {
		var err error
		leaf, err = x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
		require.NoError(t, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return pool
}

// tlsClientConfig verifies the server as 127.0.0.1 (its IP SAN) against pool.
func tlsClientConfig(pool *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

// tlsHandshake runs a client handshake on c (whose banner and 220 to STARTTLS have
// been read) and returns a client speaking over TLS.
func tlsHandshake(t *testing.T, c *client, cfg *tls.Config) (*client, error) {
	t.Helper()
	require.Zero(t, c.r.Buffered(), "plaintext after the 220 to STARTTLS")
	tc := tls.Client(c.conn, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return &client{t: t, conn: tc, r: bufio.NewReader(tc)}, nil
}

// tlsStart sends STARTTLS, expects "220 Ready to start TLS" and does the handshake.
func tlsStart(t *testing.T, c *client, cfg *tls.Config) *client {
	t.Helper()
	require.Equal(t, "Ready to start TLS", c.cmd("STARTTLS", 220))
	tc, err := tlsHandshake(t, c, cfg)
	require.NoError(t, err, "TLS handshake")
	return tc
}

// tlsDial connects to an implicit TLS port and reads the banner over TLS.
func tlsDial(t *testing.T, addr string, cfg *tls.Config) *client {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	require.NoError(t, err, "TLS dial %s", addr)
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect(220)
	return c
}

// smtpReply matches a plaintext SMTP reply line at the start of a line.
var smtpReply = regexp.MustCompile(`(?m)^[2-5][0-9][0-9][ -]`)

func TestTLSStartTLS(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode TLSMode
	}{{"optional", TLSOptional}, {"required", TLSRequired}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHandler()
			addr, pool := tlsServe(t, &Server{Handler: h, TLSMode: tc.mode, AuthMode: AuthOptional})
			c := dialGreeted(t, addr)
			lines := c.ehloLines("client.example")
			require.Contains(t, lines, "STARTTLS")
			require.NotContains(t, lines, "AUTH LOGIN PLAIN", "no AUTH offered on plaintext when TLS is available")
			require.Equal(t, text538, c.cmd("AUTH PLAIN "+plainResp("", authUser, authPass), 538))
			require.Empty(t, h.authCalls())

			sc := tlsStart(t, c, tlsClientConfig(pool))
			sc.cmd("MAIL FROM:<a@example.com>", 503) // EHLO needed again
			sc.cmd("AUTH PLAIN "+plainResp("", authUser, authPass), 503)
			lines = sc.ehloLines("client.example")
			require.NotContains(t, lines, "STARTTLS")
			require.Contains(t, lines, "AUTH LOGIN PLAIN")
			sc.cmd("STARTTLS", 503)
			sc.cmd("STARTTLS x", 501)
			sc.cmd("AUTH PLAIN "+plainResp("", authUser, authPass), 235)
			sc.sendMessage("a@example.com", "b@example.com")
			sc.cmd("QUIT", 221)
			snap := h.snapshots(t, 1)[0]
			require.True(t, snap.Encrypted)
			require.False(t, snap.EncryptedAt.IsZero())
			require.True(t, snap.TLSOK, "TLSState visible to hooks")
			require.True(t, snap.TLS.HandshakeComplete)
			require.GreaterOrEqual(t, snap.TLS.Version, uint16(tls.VersionTLS12))
			require.Equal(t, authUser, snap.AuthenticationID)
			require.False(t, snap.EncryptedAt.After(snap.AuthenticatedAt), "TLS came before AUTH")
		})
	}
}

func TestTLSPlaintextSessionState(t *testing.T) {
	h := newSecHandler()
	addr, _ := tlsServe(t, &Server{Handler: h, TLSMode: TLSOptional})
	c := dialGreeted(t, addr)
	c.ehloLines("x")
	c.sendMessage("a@example.com", "b@example.com")
	snap := h.snapshots(t, 1)[0]
	require.False(t, snap.Encrypted)
	require.True(t, snap.EncryptedAt.IsZero())
	require.False(t, snap.TLSOK)
}

func TestTLSStartTLSErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  TLSMode
		steps []authStep
	}{
		{"before EHLO", TLSOptional, []authStep{{"STARTTLS", 503}, {"HELO x", 250}}},
		{"with a parameter", TLSOptional, []authStep{{"EHLO x", 250}, {"STARTTLS x", 501}, {"STARTTLS  now", 501}}},
		{"with a parameter before EHLO", TLSOptional, []authStep{{"STARTTLS x", 501}}},
		{"forbidden", TLSForbidden, []authStep{{"EHLO x", 250}, {"STARTTLS", 500}}},
		{"required before EHLO", TLSRequired, []authStep{{"STARTTLS", 503}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &Server{TLSMode: tc.mode}
			var addr string
			if tc.mode == TLSForbidden {
				addr = serve(t, srv)
			} else {
				addr, _ = tlsServe(t, srv)
			}
			c := dialGreeted(t, addr)
			for _, st := range tc.steps {
				c.cmd(st.send, st.code)
			}
			// Still plaintext and in command mode.
			c.cmd("NOOP", 250)
			c.cmd("QUIT", 221)
		})
	}
	t.Run("forbidden: no STARTTLS keyword", func(t *testing.T) {
		c := dialGreeted(t, serve(t, &Server{}))
		require.NotContains(t, c.ehloLines("x"), "STARTTLS")
	})
}

func TestTLSRequired(t *testing.T) {
	h := newSecHandler()
	addr, pool := tlsServe(t, &Server{Handler: h, TLSMode: TLSRequired, AuthMode: AuthOptional})
	c := dialGreeted(t, addr)
	c.cmd("NOOP", 250)
	c.cmd("HELO x", 250)
	lines := c.ehloLines("client.example")
	require.Contains(t, lines, "STARTTLS")
	require.NotContains(t, lines, "AUTH LOGIN PLAIN")
	for _, cmd := range []string{
		"MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA", "RSET", "RSET x",
		"VRFY alice", "EXPN list", "HELP", "XYZZY", "mail from:<a@example.com>",
	} {
		require.Equal(t, protoText530TLS, c.cmd(cmd, 530), cmd)
	}
	require.Equal(t, text538, c.cmd("AUTH PLAIN "+plainResp("", authUser, authPass), 538))
	require.Equal(t, text538, c.cmd("AUTH LOGIN", 538))
	require.Empty(t, h.authCalls())
	require.Empty(t, h.mailCalls())

	sc := tlsStart(t, c, tlsClientConfig(pool))
	sc.cmd("RSET", 250)
	sc.ehloLines("client.example")
	sc.sendMessage("a@example.com", "b@example.com")
	sc.cmd("QUIT", 221)
	require.True(t, h.snapshots(t, 1)[0].Encrypted)

	t.Run("QUIT before TLS", func(t *testing.T) {
		c := dialGreeted(t, addr)
		c.cmd("QUIT", 221)
		c.expectClosed()
	})
}

func TestTLSStateReset(t *testing.T) {
	h := newSecHandler()
	addr, pool := tlsServe(t, &Server{Handler: h, TLSMode: TLSOptional, AuthMode: AuthOptional})
	c := dialGreeted(t, addr)
	c.ehloLines("before.example")
	c.cmd("MAIL FROM:<a@example.com>", 250)
	c.cmd("RCPT TO:<a@example.com>", 250)
	sc := tlsStart(t, c, tlsClientConfig(pool))
	sc.cmd("MAIL FROM:<a@example.com>", 503)
	sc.ehloLines("after.example")
	sc.cmd("DATA", 503) // the envelope is gone
	sc.cmd("AUTH PLAIN "+plainResp("", authUser, authPass), 235)
	sc.cmd("MAIL FROM:<a@example.com>", 250)
	sc.cmd("RCPT TO:<b@example.com>", 250)
	sc.cmd("DATA", 354)
	sc.send("Subject: reset\r\n\r\nx\r\n.\r\n")
	sc.expect(250)
	m := h.waitMessages(t, 1)[0]
	require.Equal(t, []string{"b@example.com"}, m.To)
	require.Equal(t, "after.example", m.Helo)
	require.Equal(t, "Subject: reset\r\n\r\nx\r\n", m.Data)
	require.Equal(t, []secHelo{{"before.example", false}, {"after.example", true}}, h.heloCalls())
}

// TestTLSAuthClearedBySTARTTLS checks that STARTTLS forgets an authentication made
// before it. Plaintext AUTH is refused whenever TLS is available, so the handler's
// OnHelo marks the plaintext session authenticated itself (the fields are exported),
// standing for any way a session got authenticated before STARTTLS.
func TestTLSAuthClearedBySTARTTLS(t *testing.T) {
	h := newSecHandler()
	type seen struct {
		authenticated   bool
		authcID, authzD string
	}
	got := make(chan seen, 4)
	h.onHelo = func(s *Session) {
		if !s.IsEncrypted() {
			s.AuthenticationID, s.AuthorizationID, s.AuthenticatedAt = "mallory", "mallory", time.Now()
			return
		}
		got <- seen{s.IsAuthenticated(), s.AuthenticationID, s.AuthorizationID}
	}
	addr, pool := tlsServe(t, &Server{Handler: h, TLSMode: TLSOptional, AuthMode: AuthRequired})
	c := dialGreeted(t, addr)
	c.ehloLines("x")
	c.cmd("MAIL FROM:<a@example.com>", 250) // authenticated, by the hook
	sc := tlsStart(t, c, tlsClientConfig(pool))
	sc.ehloLines("x")
	require.Equal(t, seen{}, <-got, "authentication state after STARTTLS")
	sc.cmd("MAIL FROM:<a@example.com>", 530)
	sc.cmd("AUTH PLAIN "+plainResp("", authUser, authPass), 235) // not 503: no longer authenticated
	sc.sendMessage("a@example.com", "b@example.com")
	snap := h.snapshots(t, 1)[0]
	require.Equal(t, authUser, snap.AuthenticationID)
	require.Equal(t, authUser, snap.AuthorizationID)
}

func TestTLSImplicit(t *testing.T) {
	ports := freePorts(t, 2)
	h := newSecHandler()
	srv := &Server{Handler: h, Hosts: "127.0.0.1", Ports: ports[0] + ":" + ports[1], ImplicitTLSPorts: ports[1],
		TLSMode: TLSOptional, AuthMode: AuthOptional}
	tlsStartServer(t, srv)
	require.Len(t, srv.Addrs(), 2)
	cfg := tlsClientConfig(tlsPoolOf(t, srv.ActiveTLSConfig()))
	plainAddr := net.JoinHostPort("127.0.0.1", ports[0])
	implicitAddr := net.JoinHostPort("127.0.0.1", ports[1])

	t.Run("implicit port", func(t *testing.T) {
		c := tlsDial(t, implicitAddr, cfg)
		lines := c.ehloLines("x")
		require.NotContains(t, lines, "STARTTLS")
		require.Contains(t, lines, "AUTH LOGIN PLAIN")
		c.cmd("STARTTLS", 503)
		c.cmd("AUTH PLAIN "+plainResp("", authUser, authPass), 235)
		c.sendMessage("a@example.com", "implicit@example.com")
		c.cmd("QUIT", 221)
		snap := h.snapshots(t, 1)[0]
		require.Equal(t, []string{"implicit@example.com"}, snap.To)
		require.True(t, snap.Encrypted)
		require.True(t, snap.TLSOK)
		require.Equal(t, authUser, snap.AuthenticationID)
	})
	t.Run("STARTTLS port", func(t *testing.T) {
		c := dialGreeted(t, plainAddr)
		require.Contains(t, c.ehloLines("x"), "STARTTLS")
		sc := tlsStart(t, c, cfg)
		sc.ehloLines("x")
		sc.cmd("QUIT", 221)
	})
	t.Run("plaintext client on the implicit port", func(t *testing.T) {
		c := dial(t, implicitAddr)
		c.send("EHLO x\r\n")
		b := readUntilClosed(t, c.conn, c.r)
		require.False(t, smtpReply.Match(b), "plaintext reply on an implicit TLS port: %q", b)
	})
}

func TestTLSImplicitStartErrors(t *testing.T) {
	ports := freePorts(t, 2)
	for _, tc := range []struct {
		name string
		srv  *Server
		want string
	}{
		{"port not bound", &Server{Ports: ports[0], ImplicitTLSPorts: ports[1], TLSMode: TLSOptional}, ports[1]},
		{"TLS forbidden", &Server{Ports: ports[0], ImplicitTLSPorts: ports[0]}, "ImplicitTLSPorts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.srv.Hosts = "127.0.0.1"
			tc.srv.Logger = testLogger()
			err := tc.srv.Start()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			// Nothing stays bound.
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", ports[0]))
			require.NoError(t, err, "port %s still bound after a failed Start", ports[0])
			l.Close()
		})
	}
}
