package smtpd

// Listening: Hosts and Ports as the server binds them, Start all or nothing, Start
// racing Close, and the implicit-TLS listener's refusals.

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// hasIPv6 reports whether ::1 can be bound on this machine.
func hasIPv6() bool {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func TestListenerHostsPorts(t *testing.T) {
	ipv6 := hasIPv6()
	ports := freePorts(t, 2)
	p1, p2 := ports[0], ports[1]
	type want struct {
		ip   string
		port string // "": any non-zero port
	}
	tests := []struct {
		name  string
		hosts string
		ports string
		v6    bool
		want  []want
	}{
		{"one host port 0", "127.0.0.1", "0", false, []want{{"127.0.0.1", ""}}},
		{"two ephemeral ports on one host", "127.0.0.1", "0:0", false, []want{{"127.0.0.1", ""}, {"127.0.0.1", ""}}},
		{"same host twice on port 0", "127.0.0.1, 127.0.0.1", "0", false, []want{{"127.0.0.1", ""}, {"127.0.0.1", ""}}},
		{"fixed ports, one host", "127.0.0.1", p1 + ":" + p2, false, []want{{"127.0.0.1", p1}, {"127.0.0.1", p2}}},
		{"two hosts port 0", "127.0.0.1, ::1", "0", true, []want{{"127.0.0.1", ""}, {"::1", ""}}},
		{"two hosts ports 0, 0", "127.0.0.1, ::1", "0, 0", true, []want{{"127.0.0.1", ""}, {"::1", ""}}},
		{"two hosts ports 0, 0:0", "127.0.0.1, ::1", "0, 0:0", true, []want{{"127.0.0.1", ""}, {"::1", ""}, {"::1", ""}}},
		{"two hosts ports 0:0", " 127.0.0.1 ,[::1] ", "0:0", true, []want{{"127.0.0.1", ""}, {"127.0.0.1", ""}, {"::1", ""}, {"::1", ""}}},
		// Ruby's 2525 / "2525, 3535" / "2525, 2525:3535" with free ports.
		{"ruby p1", "127.0.0.1, ::1", p1, true, []want{{"127.0.0.1", p1}, {"::1", p1}}},
		{"ruby p1, p2", "127.0.0.1, ::1", p1 + ", " + p2, true, []want{{"127.0.0.1", p1}, {"::1", p2}}},
		{"ruby p1, p1:p2", "127.0.0.1, ::1", p1 + ", " + p1 + ":" + p2, true, []want{{"127.0.0.1", p1}, {"::1", p1}, {"::1", p2}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.v6 && !ipv6 {
				if os.Getenv("CI") != "" {
					t.Fatal("CI is set and this machine has no IPv6 loopback (::1)")
				}
				t.Skip("no IPv6 loopback on this machine")
			}
			addrs := startServer(t, &Server{Hosts: tc.hosts, Ports: tc.ports})
			require.Len(t, addrs, len(tc.want))
			seen := map[string]bool{}
			for i, w := range tc.want {
				ta := addrs[i].(*net.TCPAddr)
				require.Equal(t, w.ip, ta.IP.String(), "address %d", i)
				if w.port != "" {
					require.Equal(t, w.port, strconv.Itoa(ta.Port), "address %d", i)
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

func TestListenerStartAllOrNothing(t *testing.T) {
	t.Run("address listed twice", func(t *testing.T) {
		p := freePorts(t, 1)[0]
		srv := &Server{Hosts: "127.0.0.1, 127.0.0.1", Ports: p, Logger: testLogger()}
		err := srv.Start()
		require.Error(t, err)
		require.Contains(t, err.Error(), "already in use")
		require.Empty(t, srv.Addrs())
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", p))
		require.NoError(t, err, "nothing may stay bound")
		l.Close()
	})
	t.Run("second address taken", func(t *testing.T) {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { busy.Close() })
		free := freePorts(t, 1)[0]
		busyPort := busy.Addr().(*net.TCPAddr).Port
		srv := &Server{Hosts: "127.0.0.1", Ports: fmt.Sprintf("%s:%d", free, busyPort), Logger: testLogger()}
		err = srv.Start()
		require.Error(t, err)
		require.Contains(t, err.Error(), "in use")
		require.Empty(t, srv.Addrs())
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", free))
		require.NoError(t, err, "the first address must have been released")
		l.Close()
	})
}

// Start used to close none of the remaining listeners when Close came between
// binding and tracking them; the ports stayed bound.
func TestListenerStartRacingCloseReleasesPorts(t *testing.T) {
	for round := range 100 {
		ports := freePorts(t, 2)
		srv := &Server{Hosts: "127.0.0.1", Ports: ports[0] + ":" + ports[1], TLSMode: TLSOptional, Logger: testLogger()}
		started := make(chan error, 1)
		closed := make(chan error, 1)
		go func() { started <- srv.Start() }()
		go func() {
			time.Sleep(time.Duration(round%10) * 100 * time.Microsecond) // vary the interleaving
			closed <- srv.Close()
		}()
		for _, ch := range []chan error{started, closed} {
			select {
			case <-ch: // Start may succeed or fail: either way nothing may stay bound
			case <-time.After(testTimeout):
				require.FailNow(t, "Start or Close blocked", "round %d", round)
			}
		}
		waitServer(t, srv)
		for _, p := range ports {
			l, err := net.Listen("tcp", "127.0.0.1:"+p)
			require.NoError(t, err, "round %d: port %s still bound after Close", round, p)
			l.Close()
		}
	}
}

// On an implicit-TLS port, a connection over MaxConnections used to get a
// plaintext 421 before any handshake. It is now closed without a byte.
func TestListenerImplicitTLSOverLimitSendsNothing(t *testing.T) {
	srv := &Server{Hosts: "127.0.0.1", Ports: "0", TLSMode: TLSOptional, ImplicitTLSPorts: "0",
		MaxProcessings: 1, MaxConnections: 1}
	addr := startServer(t, srv)[0].String()
	cfg := &tls.Config{InsecureSkipVerify: true}
	fc := tlsDial(t, addr, cfg)
	require.Equal(t, 1, srv.Connections())

	// A plain TCP client over the limit: nothing at all may come in plaintext.
	got := dial(t, addr).readToEnd()
	require.False(t, strings.HasPrefix(got, "421"), "plaintext 421 on an implicit-TLS port: %q", got)
	require.Empty(t, got, "bytes sent before any TLS handshake")

	// A TLS client over the limit: the handshake fails (the connection just closes).
	d := &net.Dialer{Timeout: 5 * time.Second}
	tc, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err == nil {
		tc.Close()
	}
	require.Error(t, err, "TLS handshake over MaxConnections succeeded")

	fc.cmd("QUIT", 221) // the session within the limit is untouched
}
