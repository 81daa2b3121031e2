// Package smtptest provides utilities for testing SMTP handlers: what
// net/http/httptest is to HTTP.
//
// NewServer runs a real smtpd.Server on a loopback port for the length of one
// test; the test talks to it through net/smtp (Server.Client, Server.SendMail)
// or through Conn, a raw protocol client for tests that check replies byte by
// byte (Server.Dial, Server.DialGreeted). Recorder is a Handler that keeps every
// message it accepts, and NewSession builds a *smtpd.Session for calling one
// hook directly, without a server:
//
//	func TestMyHandler(t *testing.T) {
//		ts := smtptest.NewServer(t, &MyHandler{}, func(s *smtpd.Server) {
//			s.TLSMode, s.AuthMode = smtpd.TLSRequired, smtpd.AuthRequired
//		})
//		auth := smtp.PlainAuth("", "alice", "secret", "127.0.0.1")
//		err := ts.SendMail(auth, "a@example.org", []string{"b@example.net"}, "Subject: hi\r\n\r\nhello\r\n")
//		...
//	}
//
// Every helper reports problems through the testing.TB it is given, and every
// wait is bounded (10 s by default), so a test fails instead of hanging. All
// traffic stays on 127.0.0.1.
package smtptest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
)

// DefaultTimeout bounds every wait of this package: dialling, reading one reply,
// a TLS handshake, Recorder.Wait, and the server's start and stop.
const DefaultTimeout = 10 * time.Second

// clientDeadline bounds the whole life of a net/smtp connection made by Client or
// SendMail: net/smtp has no per-operation timeouts.
const clientDeadline = time.Minute

// Server is an smtpd.Server serving 127.0.0.1 on a free port for one test.
type Server struct {
	// Addr is the address the server listens on, "127.0.0.1:PORT".
	Addr string
	// Server is the running server. Its options must not be changed: set them in
	// NewServer's options instead.
	Server *smtpd.Server
	// Recorder is the Recorder behind the handler: the one NewServer made when the
	// handler was nil, or the handler itself when it is a *Recorder or embeds one;
	// nil otherwise.
	Recorder *Recorder

	t         testing.TB
	log       *testLog
	serveErr  chan error
	closeOnce sync.Once
}

// NewServer starts an smtpd.Server with handler h on 127.0.0.1 and a free port
// (through Server.Serve, so Hosts, Ports and ImplicitTLSPorts are ignored) and
// closes it when the test ends. A nil h means a new Recorder, found in the
// returned Server's Recorder field.
//
// The options run in order on the server before it starts; leave them out and
// the server has the library's defaults, as in production. The server's log goes
// to the test: Warn and Error records at once (they show with -v or when the test
// fails), and the whole log, Debug protocol traces included (the last 2000
// records), once at the end of a test that failed. An option that sets
// s.Logger replaces this.
//
// With TLSMode set and no certificate given (neither TLSConfig nor TLSCertPath),
// NewServer sets TLSConfig to a self-signed certificate named as the library
// would name its own (TLSCertCN and TLSCertSAN, else localhost.local and
// 127.0.0.1), so the test log is spared the library's warning about a
// self-signed certificate, which real programs still get; ClientTLSConfig
// trusts it.
//
// A handler with a method named like a hook that the server never calls (a
// misspelling such as OnRcpt, or an optional hook with the wrong signature; see
// smtpd.CheckHandler) fails the test at once.
//
// NewServer returns once the server accepts connections; options the server
// refuses fail the test. At the end of the test the server is closed (Close) and
// the test fails if Serve returns anything but smtpd.ErrServerClosed or if a
// session is still running after DefaultTimeout.
func NewServer(t testing.TB, h smtpd.Handler, opts ...func(*smtpd.Server)) *Server {
	t.Helper()
	ts := &Server{t: t, serveErr: make(chan error, 1)}
	if h == nil {
		h = &Recorder{}
	}
	ts.log = newTestLog(t, slog.LevelWarn, 2000)
	t.Cleanup(func() { // registered first, so it runs last
		if t.Failed() {
			ts.log.dump()
		}
		ts.log.stop()
	})
	ts.Server = &smtpd.Server{Handler: h, Logger: ts.log.logger()}
	for _, opt := range opts {
		opt(ts.Server)
	}
	if err := smtpd.CheckHandler(ts.Server.Handler); err != nil {
		t.Fatalf("smtptest: %v", err) // a misspelled hook would silently never run
	}
	if err := giveTestCertificate(ts.Server); err != nil {
		t.Fatalf("smtptest: test certificate: %v", err)
	}
	if r, ok := ts.Server.Handler.(interface{ recorder() *Recorder }); ok {
		ts.Recorder = r.recorder()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtptest: listen on 127.0.0.1: %v", err)
	}
	ts.Addr = l.Addr().String()
	go func() { ts.serveErr <- ts.Server.Serve(l) }()
	// Serve registers the listener (Addrs) only after its setup, TLS included.
	deadline := time.Now().Add(DefaultTimeout)
	for len(ts.Server.Addrs()) == 0 {
		select {
		case err := <-ts.serveErr:
			l.Close()
			t.Fatalf("smtptest: the server did not start: %v", err)
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			ts.Server.Close()
			l.Close()
			t.Fatalf("smtptest: the server did not start within %v", DefaultTimeout)
		}
	}
	t.Cleanup(ts.Close)
	return ts
}

// Close closes the server (smtpd.Server.Close: open sessions get 421) and waits
// until Serve and every session have returned; the test fails when that takes
// longer than DefaultTimeout each. It runs by itself at the end of the test; call
// it to stop the server earlier. Later calls do nothing.
func (ts *Server) Close() {
	ts.t.Helper()
	ts.closeOnce.Do(func() {
		ts.Server.Close()
		select {
		case err := <-ts.serveErr:
			if !errors.Is(err, smtpd.ErrServerClosed) {
				ts.t.Errorf("smtptest: Serve returned %v, want smtpd.ErrServerClosed", err)
			}
		case <-time.After(DefaultTimeout):
			ts.t.Errorf("smtptest: Serve did not return within %v of Close", DefaultTimeout)
		}
		done := make(chan struct{})
		go func() { ts.Server.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(DefaultTimeout):
			ts.t.Errorf("smtptest: sessions still running %v after Close (a hook that ignores s.Context()?)", DefaultTimeout)
		}
	})
}

// ClientTLSConfig returns a new client TLS configuration that trusts exactly the
// server's certificate: the self-signed one the server made (its names include
// 127.0.0.1), or the leaf of the TLSConfig or certificate files an option gave.
// ServerName is "127.0.0.1" when the certificate is valid for it, else the
// certificate's first name. It fails the test when TLSMode is TLSForbidden.
func (ts *Server) ClientTLSConfig() *tls.Config {
	ts.t.Helper()
	cfg, err := ts.clientTLSConfig()
	if err != nil {
		ts.t.Fatal(err)
	}
	return cfg
}

func (ts *Server) clientTLSConfig() (*tls.Config, error) {
	active := ts.Server.ActiveTLSConfig()
	if active == nil {
		return nil, errors.New("smtptest: ClientTLSConfig: the server has no TLS (TLSMode is TLSForbidden)")
	}
	leaf, err := leafOf(active, true)
	if err != nil {
		return nil, fmt.Errorf("smtptest: ClientTLSConfig: %w", err)
	}
	name := "127.0.0.1"
	if leaf.VerifyHostname(name) != nil {
		switch {
		case len(leaf.DNSNames) > 0:
			name = leaf.DNSNames[0]
		case len(leaf.IPAddresses) > 0:
			name = leaf.IPAddresses[0].String()
		default:
			return nil, errors.New("smtptest: ClientTLSConfig: the server's certificate has no DNS or IP name")
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12}, nil
}

// leafOf returns the certificate a client of cfg is shown: the first of
// Certificates, else what GetCertificate or GetConfigForClient give a client
// that sends no server name.
func leafOf(cfg *tls.Config, deeper bool) (*x509.Certificate, error) {
	var cert *tls.Certificate
	switch {
	case len(cfg.Certificates) > 0:
		cert = &cfg.Certificates[0]
	case cfg.GetCertificate != nil:
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil || c == nil {
			return nil, fmt.Errorf("TLSConfig.GetCertificate gave no certificate: %v", err)
		}
		cert = c
	case cfg.GetConfigForClient != nil && deeper:
		c, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{})
		if err != nil || c == nil {
			return nil, fmt.Errorf("TLSConfig.GetConfigForClient gave no configuration: %v", err)
		}
		return leafOf(c, false)
	}
	switch {
	case cert == nil || len(cert.Certificate) == 0:
		return nil, errors.New("the server's TLS configuration has no certificate")
	case cert.Leaf != nil:
		return cert.Leaf, nil
	}
	return x509.ParseCertificate(cert.Certificate[0])
}

// Client returns a net/smtp client connected to the server, the 220 banner read;
// it is closed at the end of the test. Its host name is "127.0.0.1": give that to
// smtp.PlainAuth. The connection has a deadline of one minute, so a test never
// hangs on it. Use it to script a session; for STARTTLS, pass ClientTLSConfig.
func (ts *Server) Client(t testing.TB) *smtp.Client {
	t.Helper()
	c, err := ts.dialClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (ts *Server) dialClient() (*smtp.Client, error) {
	conn, err := net.DialTimeout("tcp", ts.Addr, DefaultTimeout)
	if err != nil {
		return nil, fmt.Errorf("smtptest: dial %s: %w", ts.Addr, err)
	}
	conn.SetDeadline(time.Now().Add(clientDeadline))
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("smtptest: greeting: %w", err)
	}
	return c, nil
}

// SendMail sends one message through a new net/smtp connection, as smtp.SendMail
// does, but trusting the server's certificate: EHLO localhost, STARTTLS when the server
// offers it (with ClientTLSConfig), AUTH when a is not nil (smtp.PlainAuth with
// host "127.0.0.1"), MAIL, RCPT for each of to, DATA with msg, QUIT.
//
// The error is the first failure, such as a refused step's *textproto.Error
// (with the reply's Code), so a test can check a refusal. net/smtp sends a bare
// LF in msg as CRLF and ends a msg that lacks one with CRLF; use Conn to send
// exact bytes.
func (ts *Server) SendMail(a smtp.Auth, from string, to []string, msg string) error {
	c, err := ts.dialClient()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return err
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		cfg, err := ts.clientTLSConfig()
		if err != nil {
			return err
		}
		if err := c.StartTLS(cfg); err != nil {
			return err
		}
	}
	if a != nil {
		if err := c.Auth(a); err != nil {
			return err
		}
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}
