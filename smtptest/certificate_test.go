package smtptest_test

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
)

// logBuffer is a log destination the server's goroutines write while the test reads.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// warnLogger logs Warn and Error records as text into a new logBuffer.
func warnLogger() (*slog.Logger, *logBuffer) {
	var b logBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelWarn})), &b
}

// selfSignedWarning is what the library logs when it makes its own certificate.
const selfSignedWarning = "self-signed"

// TestNewServerTLSWithoutSelfSignedWarning checks that a test which turns TLS on
// without a certificate gets no warning about a self-signed certificate in its
// server's log (smtptest gives the server one of its own), that STARTTLS works
// with it, and that a real program set up the same way still gets the warning.
func TestNewServerTLSWithoutSelfSignedWarning(t *testing.T) {
	for name, mode := range map[string]smtpd.TLSMode{"TLSOptional": smtpd.TLSOptional, "TLSRequired": smtpd.TLSRequired} {
		t.Run(name, func(t *testing.T) {
			logger, log := warnLogger()
			ts := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.TLSMode, s.Logger = mode, logger })
			if err := ts.SendMail(nil, "a@example.org", []string{"b@example.net"}, "Subject: tls\r\n\r\nhi\r\n"); err != nil {
				t.Fatal(err)
			}
			if m := ts.Recorder.Messages(); len(m) != 1 || !m[0].Encrypted {
				t.Fatalf("recorded %+v, want one message over TLS", m)
			}
			ts.Close()
			if strings.Contains(log.String(), selfSignedWarning) {
				t.Errorf("the test's server logged a self-signed certificate warning:\n%s", log)
			}
		})
	}

	logger, log := warnLogger()
	srv := &smtpd.Server{TLSMode: smtpd.TLSOptional, Ports: "0", Logger: logger}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if !strings.Contains(log.String(), selfSignedWarning) {
		t.Errorf("a real program with a self-signed certificate was not warned; its log:\n%s", log)
	}
}

// TestNewServerTestCertificateNames checks that smtptest's certificate has the
// names the library gives its own self-signed certificate on 127.0.0.1, with
// and without TLSCertCN and TLSCertSAN.
func TestNewServerTestCertificateNames(t *testing.T) {
	for name, opt := range map[string]func(*smtpd.Server){
		"default":    func(*smtpd.Server) {},
		"TLSCertCN":  func(s *smtpd.Server) { s.TLSCertCN = "mx.example.test" },
		"TLSCertSAN": func(s *smtpd.Server) { s.TLSCertSAN = "mx.example.test, 127.0.0.1" },
	} {
		t.Run(name, func(t *testing.T) {
			ts := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.TLSMode = smtpd.TLSOptional }, opt)
			got := activeLeaf(t, ts.Server)

			logger, _ := warnLogger()
			lib := &smtpd.Server{TLSMode: smtpd.TLSOptional, Logger: logger}
			opt(lib)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go lib.Serve(l)
			t.Cleanup(func() { lib.Close() })
			// Serve sets TLS up before it registers the listener.
			deadline := time.Now().Add(smtptest.DefaultTimeout)
			for len(lib.Addrs()) == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the library's server did not start")
				}
				time.Sleep(time.Millisecond)
			}
			want := activeLeaf(t, lib)
			if got.Subject.CommonName != want.Subject.CommonName || !slices.Equal(got.DNSNames, want.DNSNames) ||
				!slices.EqualFunc(got.IPAddresses, want.IPAddresses, net.IP.Equal) {
				t.Errorf("smtptest's certificate: CN %q, DNS %q, IP %v; the library's: CN %q, DNS %q, IP %v",
					got.Subject.CommonName, got.DNSNames, got.IPAddresses, want.Subject.CommonName, want.DNSNames, want.IPAddresses)
			}
		})
	}
}

// activeLeaf is the leaf certificate of the server's active TLS configuration.
func activeLeaf(t *testing.T, s *smtpd.Server) *x509.Certificate {
	t.Helper()
	cfg := s.ActiveTLSConfig()
	if cfg == nil || len(cfg.Certificates) == 0 {
		t.Fatal("the server has no TLS certificate")
	}
	c := cfg.Certificates[0]
	if c.Leaf != nil {
		return c.Leaf
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}
