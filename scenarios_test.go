package smtpd

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// scenarioStart starts srv with Start (quiet logger) and stops it when the test ends.
func scenarioStart(t *testing.T, srv *Server) []net.Addr {
	t.Helper()
	if srv.Logger == nil {
		srv.Logger = testLogger()
	}
	require.NoError(t, srv.Start())
	t.Cleanup(func() {
		srv.Close()
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Wait did not return after Close")
		}
	})
	return srv.Addrs()
}

// scenarioHasIPv6 reports whether ::1 can be bound on this machine.
func scenarioHasIPv6() bool {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// scenarioFreePort returns a port that was free on ip a moment ago.
func scenarioFreePort(t *testing.T, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

// scenarioNoBanner checks that c receives nothing within d (it waits for a slot).
func scenarioNoBanner(t *testing.T, c *client, d time.Duration) {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	b, err := c.r.ReadByte()
	require.Error(t, err, "got byte %q, expected no banner yet", b)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "expected a read timeout, got %v", err)
}

func TestScenarioDefaults(t *testing.T) {
	require.Equal(t, "127.0.0.1", DefaultHosts)
	require.Equal(t, "2525", DefaultPorts)

	// A zero Server, but for a free port.
	srv := &Server{Ports: "0"}
	addrs := scenarioStart(t, srv)
	require.Len(t, addrs, 1)
	ta := addrs[0].(*net.TCPAddr)
	require.Equal(t, "127.0.0.1", ta.IP.String(), "default host")
	require.NotZero(t, ta.Port)

	// The options as the server runs them.
	require.Equal(t, 30*time.Second, srv.cfg.timeout)
	require.Equal(t, 1<<20, srv.cfg.bufferMax)
	require.Equal(t, 32<<20, srv.cfg.maxMessage)
	require.Equal(t, 1000, srv.cfg.maxRecipients)
	require.Equal(t, 3, srv.cfg.maxAuthFailures)
	require.Equal(t, int64(0), srv.cfg.maxConnections)
	require.Equal(t, CRLFEnsure, srv.cfg.crlfMode)
	require.Equal(t, 100, srv.cfg.maxProcessings, "MaxProcessings")
	require.Equal(t, 30*time.Second, srv.cfg.waitTimeout)
	require.Equal(t, 512<<20, srv.cfg.maxBuffered)
	require.Equal(t, 20, srv.cfg.maxErrors)
	require.Equal(t, 100, srv.cfg.maxJunk)
	require.IsType(t, BaseHandler{}, srv.cfg.handler)
	require.Nil(t, srv.ActiveTLSConfig())

	// And as a client sees them: no extension, AUTH and STARTTLS refused,
	// pipelining refused, BODY refused, BaseHandler accepts mail, unknown is 500.
	c := dial(t, addrs[0].String())
	c.protoExpect(220, protoTextBanner)
	c.protoCmd("EHLO client.example", 250, protoTextEhloFirst+"\n"+protoTextEhloSize+"\nOK")
	c.protoCmd("AUTH PLAIN", 500, protoText500)
	c.protoCmd("STARTTLS", 500, protoText500)
	c.send("NOOP\r\nNOOP\r\n")
	c.protoExpect(500, protoText500Pipe)
	c.protoExpect(250, protoTextOK)
	c.protoCmd("MAIL FROM:<a@b.example> BODY=8BITMIME", 501, protoText501)
	c.protoCmd("MAIL FROM:<a@b.example>", 250, protoTextOK)
	c.protoCmd("RCPT TO:<c@d.example>", 250, protoTextOK)
	c.protoCmd("DATA", 354, protoText354)
	c.send("x\r\n.\r\n")
	c.protoExpect(250, protoText250Data)
	c.protoCmd("XFOO", 500, protoText500)
	c.protoCmd("QUIT", 221, protoText221)
	c.expectClosed()
}

// Default MaxProcessings is 100 and MaxConnections unlimited: the 101st client
// waits without a banner (no 421) until a slot frees.
func TestScenarioDefaultMaxProcessings(t *testing.T) {
	srv := &Server{}
	addr := serve(t, srv)
	var cs []*client
	for range 100 {
		cs = append(cs, dialGreeted(t, addr))
	}
	fifth := dial(t, addr)
	scenarioNoBanner(t, fifth, 300*time.Millisecond)
	require.Eventually(t, func() bool { return srv.Connections() == 101 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 100, srv.Processings())
	cs[0].cmd("QUIT", 221)
	fifth.protoExpect(220, protoTextBanner)
	fifth.cmd("NOOP", 250)
}

// Default CRLFMode is CRLFEnsure: bare LF line ends are stored as CRLF.
func TestScenarioDefaultCRLFEnsure(t *testing.T) {
	h := newRecorder()
	addr := serve(t, &Server{Handler: h})
	c := dialGreeted(t, addr)
	c.send("EHLO client.example\n") // a bare LF command line is accepted
	c.expect(250)
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<c@d.example>", 250)
	c.cmd("DATA", 354)
	c.send("a\nb\r\nc\n\r\n.\r\n")
	c.expect(250)
	require.Equal(t, "a\r\nb\r\nc\r\n\r\n", h.waitMessages(t, 1)[0].Data)
}

func TestScenarioHostsPorts(t *testing.T) {
	ipv6 := scenarioHasIPv6()
	p1 := scenarioFreePort(t, "127.0.0.1")
	p2 := scenarioFreePort(t, "127.0.0.1")
	for p2 == p1 {
		p2 = scenarioFreePort(t, "127.0.0.1")
	}
	type want struct {
		ip   string
		port int // 0: any non-zero port
	}
	tests := []struct {
		name  string
		hosts string
		ports string
		v6    bool
		want  []want
	}{
		{"one host port 0", "127.0.0.1", "0", false, []want{{"127.0.0.1", 0}}},
		{"two ephemeral ports on one host", "127.0.0.1", "0:0", false, []want{{"127.0.0.1", 0}, {"127.0.0.1", 0}}},
		{"same host twice on port 0", "127.0.0.1, 127.0.0.1", "0", false, []want{{"127.0.0.1", 0}, {"127.0.0.1", 0}}},
		{"fixed ports, one host", "127.0.0.1", fmt.Sprintf("%d:%d", p1, p2), false, []want{{"127.0.0.1", p1}, {"127.0.0.1", p2}}},
		{"two hosts port 0", "127.0.0.1, ::1", "0", true, []want{{"127.0.0.1", 0}, {"::1", 0}}},
		{"two hosts ports 0, 0", "127.0.0.1, ::1", "0, 0", true, []want{{"127.0.0.1", 0}, {"::1", 0}}},
		{"two hosts ports 0, 0:0", "127.0.0.1, ::1", "0, 0:0", true, []want{{"127.0.0.1", 0}, {"::1", 0}, {"::1", 0}}},
		{"two hosts ports 0:0", " 127.0.0.1 ,[::1] ", "0:0", true, []want{{"127.0.0.1", 0}, {"127.0.0.1", 0}, {"::1", 0}, {"::1", 0}}},
		// Ruby's 2525 / "2525, 3535" / "2525, 2525:3535" with free ports.
		{"ruby p1", "127.0.0.1, ::1", strconv.Itoa(p1), true, []want{{"127.0.0.1", p1}, {"::1", p1}}},
		{"ruby p1, p2", "127.0.0.1, ::1", fmt.Sprintf("%d, %d", p1, p2), true, []want{{"127.0.0.1", p1}, {"::1", p2}}},
		{"ruby p1, p1:p2", "127.0.0.1, ::1", fmt.Sprintf("%d, %d:%d", p1, p1, p2), true, []want{{"127.0.0.1", p1}, {"::1", p1}, {"::1", p2}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.v6 && !ipv6 {
				if os.Getenv("CI") != "" {
					t.Fatal("CI is set and this machine has no IPv6 loopback (::1)")
				}
				t.Skip("no IPv6 loopback on this machine")
			}
			addrs := scenarioStart(t, &Server{Hosts: tc.hosts, Ports: tc.ports})
			require.Len(t, addrs, len(tc.want))
			seen := map[string]bool{}
			for i, w := range tc.want {
				ta := addrs[i].(*net.TCPAddr)
				require.Equal(t, w.ip, ta.IP.String(), "address %d", i)
				if w.port != 0 {
					require.Equal(t, w.port, ta.Port, "address %d", i)
				} else {
					require.NotZero(t, ta.Port)
				}
				require.False(t, seen[ta.String()], "address %s twice", ta)
				seen[ta.String()] = true
				// Every address serves.
				c := dial(t, ta.String())
				c.protoExpect(220, ta.IP.String()+" says welcome!")
				c.cmd("QUIT", 221)
			}
		})
	}
}

func TestScenarioStartAllOrNothing(t *testing.T) {
	t.Run("address listed twice", func(t *testing.T) {
		p := scenarioFreePort(t, "127.0.0.1")
		srv := &Server{Hosts: "127.0.0.1, 127.0.0.1", Ports: strconv.Itoa(p), Logger: testLogger()}
		err := srv.Start()
		require.Error(t, err)
		require.Contains(t, err.Error(), "already in use")
		require.Empty(t, srv.Addrs())
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		require.NoError(t, err, "nothing may stay bound")
		l.Close()
	})
	t.Run("second address taken", func(t *testing.T) {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { busy.Close() })
		free := scenarioFreePort(t, "127.0.0.1")
		busyPort := busy.Addr().(*net.TCPAddr).Port
		srv := &Server{Hosts: "127.0.0.1", Ports: fmt.Sprintf("%d:%d", free, busyPort), Logger: testLogger()}
		err = srv.Start()
		require.Error(t, err)
		require.Contains(t, err.Error(), "in use")
		require.Empty(t, srv.Addrs())
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(free)))
		require.NoError(t, err, "the first address must have been released")
		l.Close()
	})
}

func TestScenarioInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		srv  *Server
		want string // in the error text
	}{
		{"MaxConnections < MaxProcessings", &Server{MaxConnections: 2, MaxProcessings: 3}, "MaxConnections"},
		{"MaxConnections < default MaxProcessings", &Server{MaxConnections: 1}, "MaxConnections"},
		{"negative MaxConnections", &Server{MaxConnections: -1}, "MaxConnections"},
		{"negative MaxProcessings", &Server{MaxProcessings: -1}, "MaxProcessings"},
		{"bad CRLFMode", &Server{CRLFMode: CRLFMode(7)}, "CRLFMode"},
		{"negative CRLFMode", &Server{CRLFMode: CRLFMode(-1)}, "CRLFMode"},
		{"bad AuthMode", &Server{AuthMode: AuthMode(9)}, "AuthMode"},
		{"bad TLSMode", &Server{TLSMode: TLSMode(9)}, "TLSMode"},
		{"IOBufferMaxSize 100", &Server{IOBufferMaxSize: 100}, "IOBufferMaxSize"},
		{"negative IOBufferMaxSize", &Server{IOBufferMaxSize: -5}, "IOBufferMaxSize"},
		{"empty host item", &Server{Hosts: "127.0.0.1, , ::1"}, "empty"},
		{"trailing empty host item", &Server{Hosts: "127.0.0.1,"}, "empty"},
		{"empty port item", &Server{Ports: "0,"}, "empty"},
		{"empty port in item", &Server{Ports: "0:"}, "empty"},
		{"port not a number", &Server{Ports: "smtp"}, "not a number"},
		{"port out of range", &Server{Ports: "70000"}, "not a number"},
		{"host with port", &Server{Hosts: "127.0.0.1:25"}, "port"},
		{"implicit TLS without TLS", &Server{ImplicitTLSPorts: "0"}, "ImplicitTLSPorts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.srv
			srv.Logger = testLogger()
			if srv.Ports == "" {
				srv.Ports = "0"
			}
			err := srv.Start()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.Empty(t, srv.Addrs(), "nothing bound")
			srv.Close()
		})
	}
	t.Run("Serve refuses a bad configuration", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		srv := &Server{CRLFMode: CRLFMode(7), Logger: testLogger()}
		err = srv.Serve(l)
		require.Error(t, err)
		require.NotErrorIs(t, err, ErrServerClosed)
		require.Contains(t, err.Error(), "CRLFMode")
	})
	t.Run("MaxConnections equal to MaxProcessings is valid", func(t *testing.T) {
		addrs := scenarioStart(t, &Server{Ports: "0", MaxConnections: 2, MaxProcessings: 2})
		require.Len(t, addrs, 1)
	})
}

// The 421 and waiting rules of MaxProcessings 1 + MaxConnections 2.
func TestScenarioMaxProcessingsMaxConnections(t *testing.T) {
	connects := make(chan struct{}, 10)
	srv := &Server{MaxProcessings: 1, MaxConnections: 2, Handler: &hookHandler{connect: func(*Session) error {
		connects <- struct{}{}
		return nil
	}}}
	addr := serve(t, srv)
	first := dial(t, addr)
	first.protoExpect(220, protoTextBanner)
	first.cmd("EHLO first.example", 250)

	second := dial(t, addr)
	scenarioNoBanner(t, second, 300*time.Millisecond)
	require.Eventually(t, func() bool { return srv.Connections() == 2 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 1, srv.Processings())

	third := dial(t, addr)
	third.protoExpect(421, protoText421Busy)
	third.expectClosed()
	// OnConnect ran for all three, as in Ruby.
	require.Eventually(t, func() bool { return len(connects) == 3 }, 5*time.Second, 5*time.Millisecond)

	first.cmd("QUIT", 221)
	first.expectClosed()
	second.protoExpect(220, protoTextBanner)
	second.cmd("EHLO second.example", 250)
	second.cmd("QUIT", 221)
}
