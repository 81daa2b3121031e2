package smtptest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/smtp"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
)

func TestNewServerNilHandlerRecords(t *testing.T) {
	ts := smtptest.NewServer(t, nil)
	if !strings.HasPrefix(ts.Addr, "127.0.0.1:") || ts.Addr == "127.0.0.1:0" {
		t.Fatalf("Addr = %q", ts.Addr)
	}
	if ts.Recorder == nil || ts.Server.Handler != ts.Recorder {
		t.Fatalf("nil handler: Recorder %p, Handler %v", ts.Recorder, ts.Server.Handler)
	}
	if err := ts.SendMail(nil, "a@example.org", []string{"b@example.net", "c@example.net"}, "Subject: x\n\nbody\n"); err != nil {
		t.Fatal(err)
	}
	msgs := ts.Recorder.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	// net/smtp writes each bare LF as CRLF.
	if m.From != "a@example.org" || strings.Join(m.To, ",") != "b@example.net,c@example.net" ||
		string(m.Data) != "Subject: x\r\n\r\nbody\r\n" || m.Helo != "localhost" || m.RemoteIP != "127.0.0.1" ||
		m.Encrypted || m.AuthenticationID != "" || m.SessionID == "" {
		t.Errorf("recorded %+v", m)
	}
}

func TestNewServerOptionsAndRecorderDetection(t *testing.T) {
	rec := &smtptest.Recorder{}
	ts := smtptest.NewServer(t, rec, func(s *smtpd.Server) { s.Pipelining = true })
	if ts.Recorder != rec || !ts.Server.Pipelining {
		t.Fatalf("Recorder %p (want %p), Pipelining %v", ts.Recorder, rec, ts.Server.Pipelining)
	}
	if h := (&MyHandler{}); smtptest.NewServer(t, h).Recorder != &h.Recorder {
		t.Error("the Recorder embedded in MyHandler was not found")
	}
	if smtptest.NewServer(t, smtpd.BaseHandler{}).Recorder != nil {
		t.Error("BaseHandler has a Recorder")
	}
}

func TestClientTLSConfigSelfSigned(t *testing.T) {
	ts := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.TLSMode = smtpd.TLSOptional })
	cfg := ts.ClientTLSConfig()
	if cfg.ServerName != "127.0.0.1" || cfg.InsecureSkipVerify || cfg.RootCAs == nil {
		t.Fatalf("config: ServerName %q, InsecureSkipVerify %v", cfg.ServerName, cfg.InsecureSkipVerify)
	}
	c := ts.Client(t)
	if err := c.StartTLS(cfg); err != nil {
		t.Fatal(err)
	}
	sendWith(t, c, "a@example.org", "b@example.net", "Subject: tls\r\n\r\nover TLS\r\n")
	if m := ts.Recorder.Wait(t, 1)[0]; !m.Encrypted || string(m.Data) != "Subject: tls\r\n\r\nover TLS\r\n" {
		t.Errorf("recorded %+v", m)
	}
	// A config that trusts the server's certificate trusts no other.
	other := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.TLSMode = smtpd.TLSOptional })
	c2 := other.Client(t)
	if err := c2.StartTLS(ts.ClientTLSConfig()); err == nil {
		t.Error("STARTTLS to another server's certificate succeeded")
	}
}

func TestClientTLSConfigAuthThroughNetSMTP(t *testing.T) {
	ts := smtptest.NewServer(t, &MyHandler{}, func(s *smtpd.Server) {
		s.TLSMode, s.AuthMode = smtpd.TLSOptional, smtpd.AuthOptional
	})
	bad := ts.Client(t) // net/smtp quits after a failed AUTH
	if err := bad.StartTLS(ts.ClientTLSConfig()); err != nil {
		t.Fatal(err)
	}
	err := bad.Auth(smtp.PlainAuth("", "alice", "wrong", "127.0.0.1"))
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 535 {
		t.Fatalf("wrong password: %v, want 535", err)
	}
	c := ts.Client(t)
	if err := c.StartTLS(ts.ClientTLSConfig()); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(smtp.PlainAuth("", "alice", "secret", "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	sendWith(t, c, "alice@example.org", "bob@example.net", "Subject: auth\r\n\r\nhi\r\n")
	m := ts.Recorder.Messages()[0]
	if m.AuthenticationID != "alice" || m.AuthorizationID != "alice" || !m.Encrypted {
		t.Errorf("recorded %+v", m)
	}
}

// sendWith sends one message on c and quits.
func sendWith(t *testing.T, c *smtp.Client, from, to, msg string) {
	t.Helper()
	if err := c.Mail(from); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(to); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, msg)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

// certFor makes a self-signed certificate for the DNS name.
func certFor(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestClientTLSConfigGivenCertificate(t *testing.T) {
	cert := certFor(t, "mx.example.test")
	for name, cfg := range map[string]*tls.Config{
		"Certificates":   {Certificates: []tls.Certificate{cert}},
		"GetCertificate": {GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }},
	} {
		t.Run(name, func(t *testing.T) {
			ts := smtptest.NewServer(t, nil, func(s *smtpd.Server) {
				s.TLSMode, s.TLSConfig = smtpd.TLSRequired, cfg
			})
			ccfg := ts.ClientTLSConfig()
			if ccfg.ServerName != "mx.example.test" {
				t.Errorf("ServerName %q", ccfg.ServerName)
			}
			c := ts.DialGreeted(t)
			c.Cmd("EHLO client.test", 250)
			c.StartTLS(ccfg)
			if ext := c.Cmd("EHLO client.test", 250); strings.Contains(ext, "STARTTLS") {
				t.Errorf("STARTTLS still offered over TLS: %q", ext)
			}
			if _, ok := c.NetConn().(*tls.Conn); !ok {
				t.Errorf("NetConn is %T after StartTLS", c.NetConn())
			}
		})
	}
}

func TestSendMailReportsRefusal(t *testing.T) {
	ts := smtptest.NewServer(t, &MyHandler{})
	err := ts.SendMail(nil, "a@example.org", []string{"x@elsewhere.test"}, "Subject: x\r\n\r\n")
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 550 {
		t.Fatalf("SendMail: %v, want a 550", err)
	}
	if n := len(ts.Recorder.Messages()); n != 0 {
		t.Errorf("%d messages recorded", n)
	}
}

func TestRecorderWaitConcurrent(t *testing.T) {
	ts := smtptest.NewServer(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := range 3 {
		wg.Go(func() {
			errs <- ts.SendMail(nil, fmt.Sprintf("s%d@example.org", i), []string{"r@example.net"}, "Subject: c\r\n\r\n")
		})
	}
	msgs := ts.Recorder.Wait(t, 3)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if len(msgs) != 3 {
		t.Fatalf("Wait returned %d messages", len(msgs))
	}
	ts.Recorder.Reset()
	if n := len(ts.Recorder.Messages()); n != 0 {
		t.Errorf("%d messages after Reset", n)
	}
}

func TestCloseEarly(t *testing.T) {
	ts := smtptest.NewServer(t, nil)
	c := ts.DialGreeted(t)
	c.Cmd("EHLO client.test", 250)
	ts.Close()
	c.Expect(421)
	c.ExpectClosed()
	ts.Close() // again: nothing
	if err := ts.SendMail(nil, "a@example.org", []string{"b@example.net"}, "x"); err == nil {
		t.Error("SendMail to a closed server succeeded")
	}
}
