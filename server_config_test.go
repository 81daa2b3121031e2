package smtpd

// The server's options: their defaults, as the server runs them and as a client
// sees them, and the values Start and Serve refuse.

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestServerDefaults(t *testing.T) {
	require.Equal(t, "127.0.0.1", DefaultHosts)
	require.Equal(t, "2525", DefaultPorts)

	// A zero Server, but for a free port.
	srv := &Server{Ports: "0"}
	addrs := startServer(t, srv)
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
func TestServerDefaultMaxProcessingsQueues(t *testing.T) {
	srv := &Server{}
	addr := serve(t, srv)
	var cs []*client
	for range 100 {
		cs = append(cs, dialGreeted(t, addr))
	}
	queued := dial(t, addr)
	queued.expectSilent(300 * time.Millisecond)
	require.Eventually(t, func() bool { return srv.Connections() == 101 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 100, srv.Processings())
	cs[0].cmd("QUIT", 221)
	queued.protoExpect(220, protoTextBanner)
	queued.cmd("NOOP", 250)
}

// Default CRLFMode is CRLFEnsure: bare LF line ends are stored as CRLF.
func TestServerDefaultCRLFEnsure(t *testing.T) {
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

func TestServerInvalidOptions(t *testing.T) {
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
		addrs := startServer(t, &Server{Ports: "0", MaxConnections: 2, MaxProcessings: 2})
		require.Len(t, addrs, 1)
	})
}
