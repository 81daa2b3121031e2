package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/smtp"
	"net/textproto"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tlsBuffer is an io.Writer that run may write to while the test reads it.
type tlsBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *tlsBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *tlsBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var tlsStartRe = regexp.MustCompile(`demo credential: user "demo", password "password"\n` +
	`certificate SHA-256 fingerprint: ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})\n` +
	`listening on (\S+)\n`)

// startTLSExample runs the example with args until the test ends and returns its
// address, the fingerprint it printed and its stdout.
func startTLSExample(t *testing.T, args ...string) (addr, fp string, stdout *tlsBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &tlsBuffer{}, &tlsBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"-ports", "0"}, args...), stdout, stderr) }()
	deadline := time.After(10 * time.Second)
	for {
		if m := tlsStartRe.FindStringSubmatch(stdout.String()); m != nil {
			fp, addr = m[1], m[2]
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("run returned before listening: %v\nstderr:\n%s", err, stderr)
		case <-deadline:
			cancel()
			t.Fatalf("not started within 10s; stdout:\n%s\nstderr:\n%s", stdout, stderr)
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("run did not return within 10s of cancel")
		}
	})
	return addr, fp, stdout
}

// tlsPinned trusts exactly the certificate with the SHA-256 fingerprint fp.
func tlsPinned(fp string) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if got := tlsFingerprint(cs.PeerCertificates[0].Raw); got != fp {
				return fmt.Errorf("certificate fingerprint %s, printed %s", got, fp)
			}
			return nil
		},
	}
}

// tlsFingerprint is SHA-256 as "AB:CD:...", computed apart from the code under test.
func tlsFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return strings.ReplaceAll(fmt.Sprintf("% X", sum[:]), " ", ":")
}

func tlsCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func TestTLSExampleStartTLSAndAuth(t *testing.T) {
	addr, fp, stdout := startTLSExample(t)
	tests := []struct {
		name     string
		starttls bool
		user     string
		pass     string // "": no AUTH
		wantAuth int    // reply code of a failing AUTH
		wantMail int    // reply code of a failing MAIL
	}{
		{name: "demo credential", starttls: true, user: "demo", pass: "password"},
		{name: "wrong password", starttls: true, user: "demo", pass: "passw0rd", wantAuth: 535},
		{name: "wrong user", starttls: true, user: "admin", pass: "password", wantAuth: 535},
		{name: "AUTH before STARTTLS", user: "demo", pass: "password", wantAuth: 538},
		{name: "no AUTH", starttls: true, wantMail: 530},
		{name: "nothing", wantMail: 530},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := smtp.Dial(addr)
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.Hello("client.example"))
			if tc.starttls {
				ok, _ := c.Extension("STARTTLS")
				require.True(t, ok, "STARTTLS offered")
				require.NoError(t, c.StartTLS(tlsPinned(fp)))
				ok, mechs := c.Extension("AUTH")
				require.True(t, ok, "AUTH offered after STARTTLS")
				require.Contains(t, mechs, "PLAIN")
			}
			if tc.pass != "" {
				// net/smtp sends PLAIN over plaintext to 127.0.0.1 only: what the 538 case needs.
				err := c.Auth(smtp.PlainAuth("", tc.user, tc.pass, "127.0.0.1"))
				if tc.wantAuth != 0 {
					require.Equal(t, tc.wantAuth, tlsCode(err), "AUTH: %v", err)
					return
				}
				require.NoError(t, err)
			}
			err = c.Mail("sender@example.com")
			if tc.wantMail != 0 {
				require.Equal(t, tc.wantMail, tlsCode(err), "MAIL: %v", err)
				return
			}
			require.NoError(t, err)
			require.NoError(t, c.Rcpt("rcpt@example.net"))
			w, err := c.Data()
			require.NoError(t, err)
			msg := "Subject: over TLS\r\n\r\nhello\r\n"
			_, err = w.Write([]byte(msg))
			require.NoError(t, err)
			require.NoError(t, w.Close())
			require.NoError(t, c.Quit())
			require.Contains(t, stdout.String(),
				fmt.Sprintf("message from=<sender@example.com> to=<rcpt@example.net> user=demo tls=\"TLS 1.3\" bytes=%d\n", len(msg)))
		})
	}
	require.Equal(t, 1, bytes.Count([]byte(stdout.String()), []byte("message ")), "only the demo login delivered a message")
}

func TestTLSExampleGivenCertificate(t *testing.T) {
	const certFile, keyFile = "../../testdata/certs/ecdsa.crt", "../../testdata/certs/ecdsa.key"
	pemBytes, err := os.ReadFile(certFile)
	require.NoError(t, err)
	block, _ := pem.Decode(pemBytes)
	require.NotNil(t, block)

	addr, fp, _ := startTLSExample(t, "-cert", certFile, "-key", keyFile)
	require.Equal(t, tlsFingerprint(block.Bytes), fp, "the fingerprint of the given certificate")

	leaf, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	c, err := smtp.Dial(addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Hello("client.example"))
	require.NoError(t, c.StartTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}), "the given certificate verifies")
	require.NoError(t, c.Auth(smtp.PlainAuth("", "demo", "password", "127.0.0.1")))
	require.NoError(t, c.Quit())
}

func TestTLSExampleBadCertificate(t *testing.T) {
	err := run(context.Background(), []string{"-ports", "0", "-cert", "/nonexistent/cert.pem"}, &tlsBuffer{}, &tlsBuffer{})
	require.ErrorContains(t, err, "/nonexistent/cert.pem")
}
