package interop

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// The PROXY protocol (ProxyTrustedNetworks) behind a real HAProxy, started by the
// test with its own configuration (send-proxy, send-proxy-v2, health checks with
// check-send-proxy). Only loopback: clients dial from 127.0.0.2 and 127.0.0.3 so
// that the client's address differs from the proxy's (127.0.0.1).

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
// OnMessage and OnDisconnect.
type proxyHandler struct {
	smtpd.BaseHandler
	mu                                 sync.Mutex
	connects, helos, msgs, disconnects []proxySeen
}

func proxySeenOf(s *smtpd.Session) proxySeen {
	return proxySeen{ID: s.ID, RemoteIP: s.RemoteIP, RemotePort: s.RemotePort, ProxyIP: s.ProxyIP,
		Encrypted: s.IsEncrypted()}
}

func (h *proxyHandler) add(list *[]proxySeen, v proxySeen) {
	h.mu.Lock()
	defer h.mu.Unlock()
	*list = append(*list, v)
}

func (h *proxyHandler) OnConnect(s *smtpd.Session) error {
	h.add(&h.connects, proxySeenOf(s))
	return nil
}

func (h *proxyHandler) OnHelo(s *smtpd.Session, _ string) error {
	h.add(&h.helos, proxySeenOf(s))
	return nil
}

func (h *proxyHandler) OnMessage(s *smtpd.Session) error {
	v := proxySeenOf(s)
	v.Data = string(s.Message.Data)
	h.add(&h.msgs, v)
	return nil
}

func (h *proxyHandler) OnDisconnect(s *smtpd.Session) { h.add(&h.disconnects, proxySeenOf(s)) }

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

// proxyServer serves h (smtptest.NewServer) with ProxyTrustedNetworks set to
// trusted and a short IOCmdTimeout, logging into the returned proxyLog; configure,
// when not nil, sets more options.
func proxyServer(t *testing.T, h *proxyHandler, trusted string, configure func(*smtpd.Server)) (*smtpd.Server, string, *proxyLog) {
	t.Helper()
	logs := &proxyLog{}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) {
		s.ProxyTrustedNetworks, s.IOCmdTimeout, s.Logger = trusted, 500*time.Millisecond, logs.logger()
		if configure != nil {
			configure(s)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return ts.Server, ts.Addr, logs
}

// proxyPort is the local port of c's connection.
func proxyPort(c *rawClient) int { return c.conn.LocalAddr().(*net.TCPAddr).Port }

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
		addr: net.JoinHostPort("127.0.0.1", freePort(t)),
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
	return clientsNeedSbin(t, "haproxy")
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
	clientsNetSMTPSend(t, c)
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

			c := dialFrom(t, hp.addr, "127.0.0.2")
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
	srv, addr, _ := proxyServer(t, h, "127.0.0.1/32", func(s *smtpd.Server) {
		s.MaxConnectionsPerIP = 1
		s.IOCmdTimeout = 5 * time.Second
	})
	hp := proxyStartHAProxy(t, addr, "send-proxy-v2")

	first := dialFrom(t, hp.addr, "127.0.0.2")
	first.expect(220)
	second := dialFrom(t, hp.addr, "127.0.0.2")
	second.expect(421)
	second.expectClosed()
	other := dialFrom(t, hp.addr, "127.0.0.3")
	other.expect(220)
	other.cmd("EHLO other.example", 250)
	require.Equal(t, int64(1), srv.Stats().Limits.MaxConnectionsPerIP)

	// Once the first leaves, 127.0.0.2 may connect again.
	first.cmd("QUIT", 221)
	first.expectClosed()
	require.Eventually(t, func() bool {
		code, err := bannerFrom(hp.addr, "127.0.0.2")
		return err == nil && code == 220
	}, 5*time.Second, 20*time.Millisecond)
	other.cmd("QUIT", 221)
	for _, s := range h.seen(&h.connects) {
		if s.RemoteIP != "127.0.0.1" { // not a health check
			require.Equal(t, "127.0.0.1", s.ProxyIP, "%+v", s)
		}
	}
}
