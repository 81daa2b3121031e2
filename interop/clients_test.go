package interop

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/smtp"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// Real SMTP clients we did not write, against the server over loopback. Each test
// stores one message and compares it byte for byte.

// clientsSwaks returns swaks's path; withTLS also checks swaks's STARTTLS support
// (Debian: libnet-ssleay-perl, libio-socket-ssl-perl).
func clientsSwaks(t *testing.T, withTLS bool) string {
	t.Helper()
	path := clientsNeed(t, "swaks")
	if withTLS {
		ctx, cancel := context.WithTimeout(context.Background(), clientsTimeout)
		defer cancel()
		out, _ := exec.CommandContext(ctx, path, "--support").CombinedOutput()
		if !bytes.Contains(out, []byte("=== TLS supported")) {
			clientsMissing(t, "swaks has no TLS support:\n"+string(out))
		}
	}
	return path
}

func TestClientsSwaks(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
		auth string // "", "PLAIN", "LOGIN"
	}{
		{"plain", false, ""},
		{"TLS AUTH PLAIN", true, "PLAIN"},
		{"TLS AUTH LOGIN", true, "LOGIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			swaks := clientsSwaks(t, tc.tls)
			tlsMode, authMode := smtpd.TLSForbidden, smtpd.AuthForbidden
			if tc.tls {
				tlsMode, authMode = smtpd.TLSRequired, smtpd.AuthRequired
			}
			_, h, addr := clientsServe(t, tlsMode, authMode)
			// swaks ends the data with "\r\n.\r\n" after removing a trailing dot
			// line: a file ending in ".\r\n" is sent as it is (dot-stuffed).
			args := []string{"--server", addr, "--helo", "swaks.example",
				"--from", "a@example.com", "--to", "b@example.com",
				"--data", "@" + clientsFile(t, "msg.eml", clientsMessage+".\r\n"), "--timeout", "20"}
			if tc.tls {
				args = append(args, "--tls", "--auth", tc.auth, "--auth-user", authUser, "--auth-password", authPass)
			}
			out, _ := cliRun(t, "", nil, swaks, args...)
			wantID := ""
			if tc.tls {
				require.Contains(t, out, "<-  220 Ready to start TLS", "swaks did not use STARTTLS")
				require.Contains(t, out, "=== TLS started")
				require.Contains(t, out, "~> AUTH "+tc.auth)
				require.Contains(t, out, "<~  235 OK")
				wantID = authUser
			}
			clientsCheck(t, h, tc.tls, wantID)
			if tc.tls {
				require.Equal(t, []secCall{{"", authUser, authPass}}, h.authCalls())
			} else {
				require.Empty(t, h.authCalls())
			}
		})
	}
	t.Run("TLS AUTH wrong password", func(t *testing.T) {
		swaks := clientsSwaks(t, true)
		_, h, addr := clientsServe(t, smtpd.TLSRequired, smtpd.AuthRequired)
		out := cliRunFail(t, "", nil, swaks, "--server", addr, "--from", "a@example.com", "--to", "b@example.com",
			"--tls", "--auth", "PLAIN", "--auth-user", authUser, "--auth-password", authWrong, "--timeout", "20")
		require.Contains(t, out, "535 Authentication credentials invalid")
		require.Equal(t, []secCall{{"", authUser, authWrong}}, h.authCalls())
		require.Empty(t, h.Messages())
	})
}

func TestClientsPythonSmtplib(t *testing.T) {
	script := filepath.Join("testdata", "clients", "smtplib_client.py")
	for _, tc := range []struct {
		name, mode string
	}{
		{"plain", "plain"},
		{"STARTTLS login", "starttls"},
		{"STARTTLS AUTH LOGIN", "starttls-login"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			python := clientsNeed(t, "python3")
			tlsMode, authMode := smtpd.TLSForbidden, smtpd.AuthForbidden
			if tc.mode != "plain" {
				tlsMode, authMode = smtpd.TLSRequired, smtpd.AuthRequired
			}
			srv, h, addr := clientsServe(t, tlsMode, authMode)
			cafile := "-"
			if tc.mode != "plain" {
				cafile = clientsCertPEM(t, srv)
			}
			host, port, err := net.SplitHostPort(addr)
			require.NoError(t, err)
			out, _ := cliRun(t, "", nil, python, script, tc.mode, host, port, cafile, authUser, authPass,
				"a@example.com", "b@example.com", clientsFile(t, "msg.eml", clientsMessage))
			require.Contains(t, out, "sent")
			wantID := ""
			if tc.mode != "plain" {
				wantID = authUser
				require.Equal(t, []secCall{{"", authUser, authPass}}, h.authCalls())
			}
			clientsCheck(t, h, tc.mode != "plain", wantID)
		})
	}
	t.Run("STARTTLS verification against another CA fails", func(t *testing.T) {
		python := clientsNeed(t, "python3")
		_, h, addr := clientsServe(t, smtpd.TLSRequired, smtpd.AuthRequired)
		host, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		out := cliRunFail(t, "", nil, python, script, "starttls", host, port,
			filepath.Join(repoRoot, "testdata", "certs", "selfsigned.crt"), authUser, authPass,
			"a@example.com", "b@example.com", clientsFile(t, "msg.eml", clientsMessage))
		require.Contains(t, out, "CERTIFICATE_VERIFY_FAILED")
		require.Empty(t, h.authCalls(), "no credentials sent over an unverified connection")
		require.Empty(t, h.Messages())
	})
}

// clientsReplyLine matches the last line of an SMTP reply.
var clientsReplyLine = regexp.MustCompile(`^[2-5][0-9][0-9] `)

// clientsOpenSSL drives "openssl s_client" interactively: each command line is
// written to its stdin after the reply to the previous one was read from its stdout.
type clientsOpenSSL struct {
	t     *testing.T
	stdin io.WriteCloser
	lines chan string
	cmd   *exec.Cmd
	err   *lockedBuffer
}

func clientsStartOpenSSL(t *testing.T, args ...string) *clientsOpenSSL {
	t.Helper()
	return cliStartInteractive(t, "openssl", append([]string{"s_client"}, args...)...)
}

// expect reads stdout up to the last line of a reply and checks its code.
func (o *clientsOpenSSL) expect(code string) {
	o.t.Helper()
	timeout := time.After(clientsTimeout)
	for {
		select {
		case l, ok := <-o.lines:
			require.True(o.t, ok, "openssl s_client ended while waiting for %s; stderr:\n%s", code, o.err.String())
			if clientsReplyLine.MatchString(l) {
				require.Equal(o.t, code, l[:3], "reply %q; stderr:\n%s", l, o.err.String())
				return
			}
		case <-timeout:
			require.Failf(o.t, "openssl s_client", "no %s reply; stderr:\n%s", code, o.err.String())
		}
	}
}

func (o *clientsOpenSSL) send(s string) {
	o.t.Helper()
	_, err := io.WriteString(o.stdin, s)
	require.NoError(o.t, err)
}

func TestClientsOpenSSL(t *testing.T) {
	t.Run("STARTTLS", func(t *testing.T) {
		clientsNeed(t, "openssl")
		srv, h, addr := clientsServe(t, smtpd.TLSRequired, smtpd.AuthRequired)
		o := clientsStartOpenSSL(t, "-starttls", "smtp", "-connect", addr, "-quiet", "-nocommands",
			"-CAfile", clientsCertPEM(t, srv), "-verify_return_error", "-verify_ip", "127.0.0.1")
		err := o.transactionStuffedAs("openssl.example")
		clientsCheck(t, h, true, authUser)
		o.checkExit(err)
	})
	t.Run("implicit TLS", func(t *testing.T) {
		clientsNeed(t, "openssl")
		srv, h, addr := cliImplicitServe(t, smtpd.AuthRequired)
		o := clientsStartOpenSSL(t, "-connect", addr, "-quiet", "-nocommands",
			"-CAfile", clientsCertPEM(t, srv), "-verify_return_error", "-verify_ip", "127.0.0.1")
		o.expect("220")
		err := o.transactionStuffedAs("openssl.example")
		clientsCheck(t, h, true, authUser)
		o.checkExit(err)
	})
}

// checkExit checks openssl's exit status: OpenSSL 3 exits 1 ("unexpected
// eof while reading") when the server closes the TLS connection without sending a
// close_notify alert (RFC 8446 6.1).
func (o *clientsOpenSSL) checkExit(err error) {
	o.t.Helper()
	require.NoError(o.t, err, "openssl s_client exit (a close without close_notify fails it); stderr:\n%s", o.err.String())
}

// clientsNetSMTPSend sends clientsMessage from a@example.com to b@example.com with
// net/smtp's c (greeted, and authenticated where needed) and QUITs.
func clientsNetSMTPSend(t *testing.T, c *smtp.Client) {
	t.Helper()
	require.NoError(t, c.Mail("a@example.com"))
	require.NoError(t, c.Rcpt("b@example.com"))
	w, err := c.Data()
	require.NoError(t, err)
	_, err = io.WriteString(w, clientsMessage)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.NoError(t, c.Quit())
}

func TestClientsGoNetSMTP(t *testing.T) {
	h := &secHandler{}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.TLSMode, s.AuthMode = smtpd.TLSRequired, smtpd.AuthRequired })
	c, err := smtp.Dial(ts.Addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Hello("go.example"))
	ok, _ := c.Extension("STARTTLS")
	require.True(t, ok)
	require.NoError(t, c.StartTLS(ts.ClientTLSConfig()))
	ok, mechs := c.Extension("AUTH")
	require.True(t, ok)
	require.Equal(t, "LOGIN PLAIN", mechs)
	require.NoError(t, c.Auth(smtp.PlainAuth("", authUser, authPass, "127.0.0.1")))
	clientsNetSMTPSend(t, c)
	clientsCheck(t, h, true, authUser)

	t.Run("wrong password", func(t *testing.T) {
		c, err := smtp.Dial(ts.Addr)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.StartTLS(ts.ClientTLSConfig()))
		err = c.Auth(smtp.PlainAuth("", authUser, authWrong, "127.0.0.1"))
		require.Error(t, err)
		require.Contains(t, err.Error(), "535")
		require.Contains(t, err.Error(), "Authentication credentials invalid")
		require.Error(t, c.Mail("a@example.com"), "MAIL without AUTH")
	})
}
