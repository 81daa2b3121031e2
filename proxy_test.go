package smtpd

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd/internal/proxyproto"
	"github.com/stretchr/testify/require"
)

// The PROXY protocol (ProxyTrustedNetworks) behind a real HAProxy, started by the
// test with its own configuration (send-proxy, send-proxy-v2, health checks with
// check-send-proxy), and with headers written by hand from trusted and untrusted
// peers. Only loopback: clients dial from 127.0.0.2 and 127.0.0.3 so that the
// client's address differs from the proxy's (127.0.0.1).

// proxySeen is what proxyHandler saw of a session at one hook.
type proxySeen struct {
	ID         string
	RemoteIP   string
	RemotePort int
	ProxyIP    string
	Encrypted  bool
	Data       string // OnMessage only
}

// proxyHandler records the addresses of every session at OnConnect, OnHelo,
// OnMessage and OnDisconnect (recorder keeps the envelope only).
type proxyHandler struct {
	BaseHandler
	mu                                 sync.Mutex
	connects, helos, msgs, disconnects []proxySeen
}

func proxySeenOf(s *Session) proxySeen {
	return proxySeen{ID: s.ID, RemoteIP: s.RemoteIP, RemotePort: s.RemotePort, ProxyIP: s.ProxyIP,
		Encrypted: s.IsEncrypted()}
}

func (h *proxyHandler) add(list *[]proxySeen, v proxySeen) {
	h.mu.Lock()
	defer h.mu.Unlock()
	*list = append(*list, v)
}

func (h *proxyHandler) OnConnect(s *Session) error {
	h.add(&h.connects, proxySeenOf(s))
	return nil
}

func (h *proxyHandler) OnHelo(s *Session, _ string) error {
	h.add(&h.helos, proxySeenOf(s))
	return nil
}

func (h *proxyHandler) OnMessage(s *Session) error {
	v := proxySeenOf(s)
	v.Data = string(s.Message.Data)
	h.add(&h.msgs, v)
	return nil
}

func (h *proxyHandler) OnDisconnect(s *Session) { h.add(&h.disconnects, proxySeenOf(s)) }

// seen returns a copy of one of the lists.
func (h *proxyHandler) seen(list *[]proxySeen) []proxySeen {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]proxySeen(nil), (*list)...)
}

// proxyWaitSeen waits until list has at least n entries and returns them.
func proxyWaitSeen(t *testing.T, h *proxyHandler, list *[]proxySeen, n int) []proxySeen {
	t.Helper()
	var got []proxySeen
	require.Eventually(t, func() bool {
		got = h.seen(list)
		return len(got) >= n
	}, 5*time.Second, 5*time.Millisecond, "wanted %d sessions recorded", n)
	return got
}

// proxyLog collects the server's log (text, debug level) so that tests can check
// that nothing was logged at WARN or ERROR.
type proxyLog struct{ lockedBuffer }

func (l *proxyLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// problems returns the log lines at WARN or ERROR.
func (l *proxyLog) problems() []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			out = append(out, line)
		}
	}
	return out
}

// proxyPort is the local port of c's connection.
func proxyPort(c *client) int { return c.conn.LocalAddr().(*net.TCPAddr).Port }

// proxyExpectNoBanner checks that the server closes the connection without sending
// a byte, and returns how long that took.
func proxyExpectNoBanner(c *client) time.Duration {
	c.t.Helper()
	start := time.Now()
	c.conn.SetReadDeadline(start.Add(5 * time.Second))
	b, err := io.ReadAll(c.r)
	elapsed := time.Since(start)
	var ne net.Error
	require.False(c.t, errors.As(err, &ne) && ne.Timeout(), "the server did not close the connection")
	require.Empty(c.t, string(b), "the server sent something before closing")
	return elapsed
}

// proxyServer serves h with ProxyTrustedNetworks set to trusted and a short
// IOCmdTimeout, logging into the returned proxyLog.
func proxyServer(t *testing.T, h *proxyHandler, trusted string, configure func(*Server)) (*Server, string, *proxyLog) {
	t.Helper()
	logs := &proxyLog{}
	srv := &Server{Handler: h, ProxyTrustedNetworks: trusted, IOCmdTimeout: 500 * time.Millisecond,
		Logger: logs.logger()}
	if configure != nil {
		configure(srv)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return srv, serve(t, srv), logs
}

// TestProxyUntrustedHeader checks that a PROXY header from a peer outside
// ProxyTrustedNetworks is not honoured: the peer is a direct client and gets the
// banner first. A v1 line is then an unknown command (500); a v2 header is junk
// lines answered 500 (its "\r\n", "\r\n", "\x00\r\n" come in one segment:
// PIPELINING refusals) up to the "QUIT\n" that the v2 signature carries for exactly
// this case, which ends the session (221).
func TestProxyUntrustedHeader(t *testing.T) {
	t.Parallel()
	src := netip.MustParseAddrPort("192.0.2.7:4242")
	dst := netip.MustParseAddrPort("192.0.2.8:25")
	for _, tc := range []struct {
		name    string
		header  []byte
		replies []int // after the banner
		open    bool  // the session goes on after them
	}{
		{"v1", proxyproto.Header{Version: 1, Source: src, Dest: dst}.Encode(), []int{500}, true},
		// v2's signature is "\r\n\r\n\x00\r\nQUIT\n" and binary: the empty lines and
		// the NUL are 500; its QUIT is 500 too (PIPELINING: the binary rest came
		// with it); the rest ends as a line of its own when the client sends CRLF.
		{"v2", append(proxyproto.Header{Version: 2, Source: src, Dest: dst}.Encode(), "\r\n"...), []int{500, 500, 500, 500, 500}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := &proxyHandler{}
			srv, addr, _ := proxyServer(t, h, "10.0.0.0/8", nil)
			c := dial(t, addr)
			c.send(string(tc.header)) // the first bytes, before the banner
			c.expect(220)
			for _, code := range tc.replies {
				c.expect(code)
			}
			if tc.open {
				c.cmd("EHLO client.example", 250)
				c.cmd("QUIT", 221)
				helo := proxyWaitSeen(t, h, &h.helos, 1)[0]
				require.Equal(t, "127.0.0.1", helo.RemoteIP)
				require.Empty(t, helo.ProxyIP)
			}
			c.expectClosed()

			con := proxyWaitSeen(t, h, &h.connects, 1)[0]
			require.Equal(t, "127.0.0.1", con.RemoteIP)
			require.Equal(t, proxyPort(c), con.RemotePort)
			require.Empty(t, con.ProxyIP)
			require.Zero(t, srv.Stats().Limits.ProxyRefused)
		})
	}
}

// TestProxyTrustedRefused checks that a trusted peer without a valid header is
// closed without a banner and counted in Limits.ProxyRefused: no header within
// IOCmdTimeout, a malformed v1 line, an overlong v1 line, an oversized v2 header,
// and a connection closed in the middle of a header.
func TestProxyTrustedRefused(t *testing.T) {
	t.Parallel()
	h := &proxyHandler{}
	srv, addr, _ := proxyServer(t, h, "127.0.0.1/32", nil)

	oversized := append([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11"), 0, 0)
	binary.BigEndian.PutUint16(oversized[14:], proxyproto.MaxV2Length+1)
	overlong := "PROXY TCP4 " + strings.Repeat("1", proxyproto.MaxV1Length-len("PROXY TCP4 "))

	refused := int64(0)
	t.Run("no header", func(t *testing.T) {
		c := dial(t, addr)
		elapsed := proxyExpectNoBanner(c)
		require.GreaterOrEqual(t, elapsed, 400*time.Millisecond, "closed before IOCmdTimeout")
		require.Less(t, elapsed, 3*time.Second)
		refused++
		require.Equal(t, refused, srv.Stats().Limits.ProxyRefused)
	})
	for _, tc := range []struct {
		name  string
		input string
		half  bool // close the write side after input
	}{
		{"malformed v1", "PROXY TCP4 1.2.3.4\r\n", false},
		{"SMTP command instead of a header", "EHLO client.example\r\n", false},
		{"v1 over 107 bytes", overlong, false},
		{"v2 length over the cap", string(oversized), false},
		{"v2 cut short", string(oversized[:14]), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, addr)
			c.send(tc.input)
			if tc.half {
				require.NoError(t, c.conn.(*net.TCPConn).CloseWrite())
			}
			elapsed := proxyExpectNoBanner(c)
			require.Less(t, elapsed, 400*time.Millisecond, "not closed at once")
			refused++
			require.Equal(t, refused, srv.Stats().Limits.ProxyRefused)
		})
	}
	require.Empty(t, h.seen(&h.connects), "OnConnect ran for a refused connection")
	require.Zero(t, srv.Stats().Replies2xx+srv.Stats().Replies4xx+srv.Stats().Replies5xx)
}

// TestProxyTrustedHeaders checks headers sent by hand from a trusted peer: LOCAL
// (v2) and UNKNOWN (v1) keep the real peer; a PROXY header rewrites the address,
// and the first command in the same segment as the header is read as a command.
func TestProxyTrustedHeaders(t *testing.T) {
	t.Parallel()
	src := netip.MustParseAddrPort("192.0.2.7:4242")
	dst := netip.MustParseAddrPort("192.0.2.8:25")
	v6src := netip.MustParseAddrPort("[2001:db8::7]:65535")
	v6dst := netip.MustParseAddrPort("[2001:db8::8]:25")
	for _, tc := range []struct {
		name     string
		header   []byte
		proxied  bool
		remoteIP string
		port     int
	}{
		{"v2 LOCAL", proxyproto.Header{Version: 2, Local: true}.Encode(), false, "", 0},
		{"v1 UNKNOWN", proxyproto.Header{Version: 1, Local: true}.Encode(), false, "", 0},
		{"v1 TCP4", proxyproto.Header{Version: 1, Source: src, Dest: dst}.Encode(), true, "192.0.2.7", 4242},
		{"v2 TCP4", proxyproto.Header{Version: 2, Source: src, Dest: dst}.Encode(), true, "192.0.2.7", 4242},
		{"v1 TCP6", proxyproto.Header{Version: 1, Source: v6src, Dest: v6dst}.Encode(), true, "2001:db8::7", 65535},
		{"v2 TCP6", proxyproto.Header{Version: 2, Source: v6src, Dest: v6dst}.Encode(), true, "2001:db8::7", 65535},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &proxyHandler{}
			srv, addr, logs := proxyServer(t, h, "127.0.0.1/32", nil)
			c := dial(t, addr)
			// The header and the first command in one write: the header reader
			// must not consume a byte of the command.
			c.send(string(tc.header) + "EHLO client.example\r\n")
			c.expect(220)
			c.expect(250)
			c.cmd("QUIT", 221)
			c.expectClosed()

			helo := proxyWaitSeen(t, h, &h.helos, 1)[0]
			if tc.proxied {
				require.Equal(t, tc.remoteIP, helo.RemoteIP)
				require.Equal(t, tc.port, helo.RemotePort)
				require.Equal(t, "127.0.0.1", helo.ProxyIP)
			} else {
				require.Equal(t, "127.0.0.1", helo.RemoteIP)
				require.Equal(t, proxyPort(c), helo.RemotePort)
				require.Empty(t, helo.ProxyIP)
			}
			require.Equal(t, helo, proxyWaitSeen(t, h, &h.connects, 1)[0])
			require.Zero(t, srv.Stats().Limits.ProxyRefused)
			require.Empty(t, logs.problems())
		})
	}
}

// TestProxyImplicitTLS checks the order on an implicit TLS port behind a proxy:
// PROXY header first, then the TLS handshake; a TLS client without a header is
// refused like any other connection without one.
func TestProxyImplicitTLS(t *testing.T) {
	t.Parallel()
	port := freePorts(t, 1)[0]
	h := &proxyHandler{}
	srv := &Server{Handler: h, Hosts: "127.0.0.1", Ports: port, ImplicitTLSPorts: port, TLSMode: TLSOptional,
		ProxyTrustedNetworks: "127.0.0.1/32", IOCmdTimeout: 2 * time.Second}
	tlsStartServer(t, srv)
	addr := net.JoinHostPort("127.0.0.1", port)
	// The certificate is self-signed; what is tested is the order of PROXY and TLS.
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "127.0.0.1"}

	t.Run("header then TLS", func(t *testing.T) {
		raw := dial(t, addr)
		raw.send(string(proxyproto.Header{Version: 2, Source: netip.MustParseAddrPort("192.0.2.7:4242"),
			Dest: netip.MustParseAddrPort("192.0.2.8:465")}.Encode()))
		tc := tls.Client(raw.conn, cfg)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		require.NoError(t, tc.Handshake())
		c := &client{t: t, conn: tc, r: bufio.NewReader(tc)}
		c.expect(220)
		c.cmd("EHLO client.example", 250)
		c.cmd("QUIT", 221)
		helo := proxyWaitSeen(t, h, &h.helos, 1)[0]
		require.Equal(t, "192.0.2.7", helo.RemoteIP)
		require.Equal(t, 4242, helo.RemotePort)
		require.Equal(t, "127.0.0.1", helo.ProxyIP)
		require.True(t, helo.Encrypted)
	})
	t.Run("TLS without header", func(t *testing.T) {
		raw := dial(t, addr)
		tc := tls.Client(raw.conn, cfg)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		require.Error(t, tc.Handshake())
		require.Equal(t, int64(1), srv.Stats().Limits.ProxyRefused)
		require.Len(t, h.seen(&h.connects), 1, "OnConnect ran for the refused connection")
	})
	require.Equal(t, int64(1), srv.Stats().TLSHandshakes)
	require.Zero(t, srv.Stats().TLSFailures)
}
