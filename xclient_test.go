package smtpd

import (
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// The tests of Postfix's XCLIENT (DESIGN.md, "Internet-facing"), over real loopback TCP.

// xclSeen is what a session looked like when its message arrived.
type xclSeen struct {
	RemoteIP, RemoteHost, Helo, AuthenticationID string
	RemotePort                                   int
	Authenticated                                bool
}

// xclHandler records xclSeen for every message.
type xclHandler struct {
	BaseHandler
	mu   sync.Mutex
	seen []xclSeen
}

func (h *xclHandler) OnMessage(s *Session) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, xclSeen{RemoteIP: s.RemoteIP, RemoteHost: s.RemoteHost, Helo: s.Helo,
		AuthenticationID: s.AuthenticationID, RemotePort: s.RemotePort, Authenticated: s.IsAuthenticated()})
	return nil
}

func (h *xclHandler) last(t *testing.T) xclSeen {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	require.NotEmpty(t, h.seen, "no message arrived")
	return h.seen[len(h.seen)-1]
}

// xclServe serves an xclHandler with XCLIENT allowed from trusted.
func xclServe(t *testing.T, trusted string, mod func(*Server)) (*Server, string, *xclHandler) {
	t.Helper()
	h := &xclHandler{}
	srv := &Server{Handler: h, XClientTrustedNetworks: trusted}
	if mod != nil {
		mod(srv)
	}
	return srv, serve(t, srv), h
}

const xclKeyword = "XCLIENT ADDR PORT NAME HELO PROTO LOGIN"

// From a trusted client XCLIENT replaces the client's attributes and restarts the
// session with a new banner: a new EHLO is needed, and the message carries them.
func TestXClientTrusted(t *testing.T) {
	_, addr, h := xclServe(t, "127.0.0.1/32", nil)
	c := dialGreeted(t, addr)
	require.Contains(t, c.ehloLines("proxy.example"), xclKeyword)
	require.Equal(t, "127.0.0.1 says welcome!",
		c.cmd("XCLIENT ADDR=192.0.2.7 PORT=4711 NAME=mail.example HELO=client.example LOGIN=alice", 220))
	c.cmd("MAIL FROM:<a@example.com>", 503)
	c.ehloLines("other.example") // HELO= stays: the proxy's word about the client wins
	c.sendMessage("a@example.com", "b@example.com")
	require.Equal(t, xclSeen{RemoteIP: "192.0.2.7", RemotePort: 4711, RemoteHost: "mail.example",
		Helo: "client.example", AuthenticationID: "alice", Authenticated: true}, h.last(t))

	// An IPv6 address; ADDR alone makes the host name the address, and the LOGIN of
	// the previous XCLIENT is gone.
	c.cmd("XCLIENT ADDR=IPV6:2001:DB8::1 PROTO=ESMTP", 220)
	c.ehloLines("v6.example")
	c.sendMessage("a@example.com", "b@example.com")
	require.Equal(t, xclSeen{RemoteIP: "2001:db8::1", RemotePort: 4711, RemoteHost: "2001:db8::1",
		Helo: "v6.example"}, h.last(t))

	// The special values, and xtext ("+2E" is ".").
	c.cmd("XCLIENT NAME=[UNAVAILABLE] PORT=[TEMPUNAVAIL] HELO=[UNAVAILABLE] LOGIN=[TEMPUNAVAIL]", 220)
	c.ehloLines("real.example")
	c.sendMessage("a@example.com", "b@example.com")
	require.Equal(t, xclSeen{RemoteIP: "2001:db8::1", RemoteHost: "[UNAVAILABLE]", Helo: "real.example"}, h.last(t))
	c.cmd("XCLIENT ADDR=[UNAVAILABLE] NAME=relay+2Eexample", 220)
	c.ehloLines("real.example")
	c.sendMessage("a@example.com", "b@example.com")
	require.Equal(t, "[UNAVAILABLE]", h.last(t).RemoteIP)
	require.Equal(t, "relay.example", h.last(t).RemoteHost)
	c.cmd("QUIT", 221)
}

// A malformed or unknown attribute is 501 and changes nothing.
func TestXClientMalformed(t *testing.T) {
	_, addr, h := xclServe(t, "127.0.0.1", nil)
	c := dialGreeted(t, addr)
	c.ehloLines("proxy.example")
	for _, args := range []string{
		"", "ADDR", "ADDR=", "ADDR=999.0.2.7", "ADDR=2001:db8::1", "ADDR=IPV6:192.0.2.7", "ADDR=IPV6:fe80::1%eth0",
		"PORT=65536", "PORT=-1", "PORT=+25", "PORT=x", "FOO=bar", "NAME=a+zz", "NAME=a+2e", "NAME=a+2",
		"HELO=" + strings.Repeat("h", 256), "HELO=a+01b", "PROTO=HTTP", "ADDR=192.0.2.7 NAME=ok BOGUS=1",
	} {
		require.Equal(t, SMTPError501.Message, c.cmd(strings.TrimSpace("XCLIENT "+args), 501), "XCLIENT %s", args)
	}
	c.sendMessage("a@example.com", "b@example.com") // no restart happened: still greeted, still the real client
	require.Equal(t, xclSeen{RemoteIP: "127.0.0.1", RemotePort: h.last(t).RemotePort, RemoteHost: "127.0.0.1",
		Helo: "proxy.example"}, h.last(t))
}

// XCLIENT inside a transaction is 503, and the transaction goes on.
func TestXClientInTransaction(t *testing.T) {
	_, addr, h := xclServe(t, "127.0.0.0/8", nil)
	c := dialGreeted(t, addr)
	c.ehloLines("proxy.example")
	c.cmd("MAIL FROM:<a@example.com>", 250)
	c.cmd("XCLIENT ADDR=192.0.2.7", 503)
	c.cmd("RCPT TO:<b@example.com>", 250)
	c.cmd("XCLIENT ADDR=192.0.2.7", 503)
	c.cmd("DATA", 354)
	c.send("Subject: x\r\n\r\nhi\r\n.\r\n")
	c.expect(250)
	require.Equal(t, "127.0.0.1", h.last(t).RemoteIP)
	c.cmd("XCLIENT ADDR=192.0.2.7", 220) // after the transaction it is allowed again
}

// From a client outside XClientTrustedNetworks: not advertised, 550.
func TestXClientUntrusted(t *testing.T) {
	srv, addr, h := xclServe(t, "10.0.0.0/8, 192.0.2.1", nil)
	c := dialGreeted(t, addr)
	lines := c.ehloLines("client.example")
	for _, l := range lines {
		require.NotContains(t, l, "XCLIENT")
	}
	require.Equal(t, errXClientDenied.Message, c.cmd("XCLIENT ADDR=192.0.2.7", 550))
	c.sendMessage("a@example.com", "b@example.com")
	require.Equal(t, "127.0.0.1", h.last(t).RemoteIP)
	require.EqualValues(t, 1, srv.Stats().Limits.XClientRefused)
}

// With XClientTrustedNetworks empty XCLIENT is an unknown command.
func TestXClientOff(t *testing.T) {
	srv, addr, _ := xclServe(t, "", nil)
	c := dialGreeted(t, addr)
	for _, l := range c.ehloLines("client.example") {
		require.NotContains(t, l, "XCLIENT")
	}
	require.Equal(t, SMTPError500.Message, c.cmd("XCLIENT ADDR=192.0.2.7", 500))
	require.Zero(t, srv.Stats().Limits.XClientRefused)
}

// MaxConnectionsPerIP counts the address XCLIENT gave: the connection's count moves
// to it, freeing the real address.
func TestXClientMaxConnectionsPerIP(t *testing.T) {
	srv, addr, _ := xclServe(t, "127.0.0.1", func(s *Server) { s.MaxConnectionsPerIP = 1 })
	a := dialGreeted(t, addr)
	a.ehloLines("proxy.example")
	a.cmd("XCLIENT ADDR=192.0.2.9", 220)
	b := dialGreeted(t, addr) // 127.0.0.1 has no connection counted now
	b.ehloLines("proxy.example")
	require.Equal(t, errPerIP.Message, b.cmd("XCLIENT ADDR=192.0.2.9", 421))
	b.expectClosed()
	require.EqualValues(t, 1, srv.Stats().Limits.MaxConnectionsPerIP)
	a.ehloLines("client.example")
	a.cmd("QUIT", 221)
}
