package smtpd

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
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
type proxyLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *proxyLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *proxyLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

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

// proxyDial connects to addr from the local address from (an IP of 127/8) and
// returns a raw client.
func proxyDial(t *testing.T, from, addr string) *client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
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

// proxyHAProxy is a running HAProxy in front of one server.
type proxyHAProxy struct {
	addr string // the frontend, 127.0.0.1:port
	sock string // the stats socket
	out  *proxyLog
}

// proxyStartHAProxy runs HAProxy in the foreground (-db) with a frontend on a free
// port and one backend server, backend, to which it sends PROXY headers (send is
// "send-proxy" or "send-proxy-v2") and which it health-checks every 200 ms with
// check-send-proxy. It returns once a health check has passed; HAProxy is killed by
// its PID when the test ends. Without haproxy the test is skipped, or fails when
// CI is set.
func proxyStartHAProxy(t *testing.T, backend, send string) *proxyHAProxy {
	t.Helper()
	bin := proxyHAProxyPath(t)
	dir := t.TempDir()
	hp := &proxyHAProxy{
		addr: net.JoinHostPort("127.0.0.1", freePorts(t, 1)[0]),
		sock: filepath.Join(dir, "stats.sock"),
		out:  &proxyLog{},
	}
	cfg := fmt.Sprintf(`global
	maxconn 64
	nbthread 1
	stats socket %s mode 600 level admin

defaults
	mode tcp
	timeout connect 1s
	timeout client 5s
	timeout server 5s
	timeout check 1s

frontend fe
	bind %s
	default_backend be

backend be
	server s1 %s %s check check-send-proxy inter 200ms
`, hp.sock, hp.addr, backend, send)
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))

	cmd := exec.Command(bin, "-f", cfgPath, "-db")
	cmd.Stdout, cmd.Stderr = hp.out, hp.out
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill() // by PID: only the HAProxy this test started
		<-exited
		if t.Failed() {
			t.Logf("haproxy config:\n%s\nhaproxy output:\n%s", cfg, hp.out.String())
		}
	})

	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			require.FailNow(t, "haproxy exited", "%v\n%s", err, hp.out.String())
		default:
		}
		if st, err := hp.stat(); err == nil && st["status"] == "UP" && st["check_status"] == "L4OK" {
			return hp
		}
		require.True(t, time.Now().Before(deadline), "haproxy's health check of s1 did not pass:\n%s", hp.out.String())
		time.Sleep(20 * time.Millisecond)
	}
}

// proxyHAProxyPath finds haproxy in PATH, else at Debian's /usr/sbin/haproxy
// (not in the PATH of every user); missing, it fails under CI (clientsNeed).
func proxyHAProxyPath(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		if fi, err := os.Stat("/usr/sbin/haproxy"); err == nil && !fi.IsDir() {
			return "/usr/sbin/haproxy"
		}
	}
	return clientsNeed(t, "haproxy")
}

// stat returns the "show stat" row of server s1 from the stats socket, keyed by
// column name (status, check_status, chkfail, ...).
func (hp *proxyHAProxy) stat() (map[string]string, error) {
	conn, err := net.DialTimeout("unix", hp.sock, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, "show stat\n"); err != nil {
		return nil, err
	}
	out, err := io.ReadAll(conn)
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(bytes.NewReader(out))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 || len(rows[0]) == 0 {
		return nil, fmt.Errorf("show stat: %q", out)
	}
	head := rows[0]
	head[0] = strings.TrimPrefix(head[0], "# ")
	for _, row := range rows[1:] {
		if len(row) < 2 || row[0] != "be" || row[1] != "s1" {
			continue
		}
		m := make(map[string]string, len(head))
		for i, k := range head {
			if i < len(row) {
				m[k] = row[i]
			}
		}
		return m, nil
	}
	return nil, fmt.Errorf("show stat: no row for be/s1 in %q", out)
}

// proxySendSMTP sends clientsMessage over conn with net/smtp.
func proxySendSMTP(t *testing.T, conn net.Conn) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := smtp.NewClient(conn, "127.0.0.1")
	require.NoError(t, err)
	require.NoError(t, c.Hello("client.example"))
	require.NoError(t, c.Mail("a@example.com"))
	require.NoError(t, c.Rcpt("b@example.com"))
	w, err := c.Data()
	require.NoError(t, err)
	_, err = io.WriteString(w, clientsMessage)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.NoError(t, c.Quit())
}

// TestProxyHAProxy sends a message through HAProxy with send-proxy (v1) and
// send-proxy-v2: the session has the client's address and port, and the proxy's
// address as ProxyIP; HAProxy's health checks (check-send-proxy) pass and the
// server serves them without a warning.
func TestProxyHAProxy(t *testing.T) {
	t.Parallel()
	for _, send := range []string{"send-proxy", "send-proxy-v2"} {
		t.Run(send, func(t *testing.T) {
			t.Parallel()
			h := &proxyHandler{}
			srv, addr, logs := proxyServer(t, h, "127.0.0.1/32", nil)
			hp := proxyStartHAProxy(t, addr, send)

			// Health checks: connect, PROXY header, close. At least two have been
			// served as whole sessions (OnDisconnect ran).
			checks := proxyWaitSeen(t, h, &h.disconnects, 2)
			for _, c := range checks[:2] {
				require.Equal(t, "127.0.0.1", c.RemoteIP, "health check %+v", c)
				// HAProxy 2.6's v1 checks send "PROXY TCP4" with the check
				// connection's own addresses (ProxyIP 127.0.0.1 then).
				if send == "send-proxy-v2" {
					// v2 checks send LOCAL: the real peer is kept, not proxied.
					require.Empty(t, c.ProxyIP, "health check %+v", c)
				}
			}

			c := proxyDial(t, "127.0.0.2", hp.addr)
			proxySendSMTP(t, c.conn)

			m := proxyWaitSeen(t, h, &h.msgs, 1)
			require.Len(t, m, 1)
			require.Equal(t, clientsMessage, m[0].Data)
			require.Equal(t, "127.0.0.2", m[0].RemoteIP)
			require.Equal(t, proxyPort(c), m[0].RemotePort)
			require.Equal(t, "127.0.0.1", m[0].ProxyIP)
			// The client's address was in place before OnConnect already.
			var connected bool
			for _, s := range h.seen(&h.connects) {
				if s.ID == m[0].ID {
					connected = true
					want := m[0]
					want.Data = ""
					require.Equal(t, want, s)
				}
			}
			require.True(t, connected, "no OnConnect for the message's session")

			// HAProxy sees the server UP with no failed check; the server refused
			// no header and logged nothing at WARN or ERROR.
			st, err := hp.stat()
			require.NoError(t, err)
			require.Equal(t, "UP", st["status"])
			require.Equal(t, "L4OK", st["check_status"])
			require.Equal(t, "0", st["chkfail"])
			require.Zero(t, srv.Stats().Limits.ProxyRefused)
			require.Equal(t, int64(1), srv.Stats().MessagesAccepted)
			require.Empty(t, logs.problems())
		})
	}
}

// TestProxyHAProxyPerIP checks that MaxConnectionsPerIP counts the address from
// the PROXY header, not HAProxy's: a second client from 127.0.0.2 gets 421 while
// one from 127.0.0.3 is served.
func TestProxyHAProxyPerIP(t *testing.T) {
	t.Parallel()
	h := &proxyHandler{}
	srv, addr, _ := proxyServer(t, h, "127.0.0.1/32", func(s *Server) {
		s.MaxConnectionsPerIP = 1
		s.IOCmdTimeout = 5 * time.Second
	})
	hp := proxyStartHAProxy(t, addr, "send-proxy-v2")

	first := proxyDial(t, "127.0.0.2", hp.addr)
	first.expect(220)
	second := proxyDial(t, "127.0.0.2", hp.addr)
	second.expect(421)
	second.expectClosed()
	other := proxyDial(t, "127.0.0.3", hp.addr)
	other.expect(220)
	other.cmd("EHLO other.example", 250)
	require.Equal(t, int64(1), srv.Stats().Limits.MaxConnectionsPerIP)

	// Once the first leaves, 127.0.0.2 may connect again.
	first.cmd("QUIT", 221)
	first.expectClosed()
	require.Eventually(t, func() bool {
		c := proxyDial(t, "127.0.0.2", hp.addr)
		code, _ := c.reply()
		c.conn.Close()
		return code == 220
	}, 5*time.Second, 20*time.Millisecond)
	other.cmd("QUIT", 221)
	for _, s := range h.seen(&h.connects) {
		if s.RemoteIP != "127.0.0.1" { // not a health check
			require.Equal(t, "127.0.0.1", s.ProxyIP, "%+v", s)
		}
	}
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
		{"v2", proxyproto.Header{Version: 2, Source: src, Dest: dst}.Encode(), []int{500, 500, 500, 221}, false},
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
