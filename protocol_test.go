package smtpd_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// The black-box tests (package smtpd_test) run the server through package smtptest:
// smtptest.NewServer, its Conn for raw protocol, its Recorder for messages. The
// reply texts they check, smtpd.ProtoText*, are the in-package tests' protoText
// constants (helpers_test.go), exported to this package for the tests only.

// greeted dials ts, checks the default banner and sends EHLO.
func greeted(t *testing.T, ts *smtptest.Server) *smtptest.Conn {
	t.Helper()
	c := ts.Dial(t)
	require.Equal(t, smtpd.ProtoTextBanner, c.Expect(220))
	c.Cmd("EHLO client.example", 250)
	return c
}

func TestProtocolReplyTexts(t *testing.T) {
	h := &smtptest.Recorder{}
	ts := smtptest.NewServer(t, h)
	c := ts.Dial(t)
	require.Equal(t, smtpd.ProtoTextBanner, c.Expect(220))
	require.Equal(t, smtpd.ProtoTextHelo, c.Cmd("HELO client.example", 250))
	require.Equal(t, smtpd.ProtoTextEhloFirst+"\n"+smtpd.ProtoTextEhloSize+"\nOK", c.Cmd("EHLO client.example", 250))
	require.Equal(t, smtpd.ProtoTextOK, c.Cmd("NOOP", 250))
	require.Equal(t, smtpd.ProtoTextOK, c.Cmd("RSET", 250))
	require.Equal(t, smtpd.ProtoText503, c.Cmd("DATA", 503))
	require.Equal(t, smtpd.ProtoText500, c.Cmd("XYZZY", 500))
	require.Equal(t, smtpd.ProtoText501, c.Cmd("NOOP x", 501))
	require.Equal(t, smtpd.ProtoTextOK, c.Cmd("MAIL FROM:<a@example.com>", 250))
	require.Equal(t, smtpd.ProtoTextOK, c.Cmd("RCPT TO:<b@example.com>", 250))
	require.Equal(t, smtpd.ProtoText354, c.Cmd("DATA", 354))
	c.Send("Subject: t\r\n\r\nbody\r\n.\r\n")
	require.Equal(t, smtpd.ProtoText250Data, c.Expect(250))
	require.Equal(t, smtpd.ProtoText221, c.Cmd("QUIT", 221))
	c.ExpectClosed()
	require.Equal(t, "Subject: t\r\n\r\nbody\r\n", string(h.Wait(t, 1)[0].Data))
}

func TestProtocolReplyTexts530(t *testing.T) {
	t.Run("auth required", func(t *testing.T) {
		ts := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.AuthMode = smtpd.AuthRequired })
		c := greeted(t, ts)
		require.Equal(t, smtpd.ProtoText530Auth, c.Cmd("MAIL FROM:<a@example.com>", 530))
		require.Equal(t, smtpd.ProtoTextOK, c.Cmd("NOOP", 250))
	})
	t.Run("tls required", func(t *testing.T) {
		ts := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.TLSMode = smtpd.TLSRequired })
		c := greeted(t, ts)
		require.Equal(t, smtpd.ProtoText530TLS, c.Cmd("MAIL FROM:<a@example.com>", 530))
		require.Equal(t, smtpd.ProtoText530TLS, c.Cmd("RSET", 530))
		require.Equal(t, smtpd.ProtoText530TLS, c.Cmd("XYZZY", 530))
		require.Equal(t, smtpd.ProtoTextOK, c.Cmd("NOOP", 250))
	})
}

func TestProtocolEHLOKeywords(t *testing.T) {
	type mode struct {
		name string
		auth smtpd.AuthMode
		tls  smtpd.TLSMode
		kw   []string
	}
	modes := []mode{
		{"plain", smtpd.AuthForbidden, smtpd.TLSForbidden, nil},
		{"auth optional", smtpd.AuthOptional, smtpd.TLSForbidden, []string{"AUTH LOGIN PLAIN"}},
		{"auth required", smtpd.AuthRequired, smtpd.TLSForbidden, []string{"AUTH LOGIN PLAIN"}},
		{"tls optional", smtpd.AuthForbidden, smtpd.TLSOptional, []string{"STARTTLS"}},
		{"tls required", smtpd.AuthForbidden, smtpd.TLSRequired, []string{"STARTTLS"}},
		// AUTH is not listed on plaintext when TLS is available.
		{"auth and tls", smtpd.AuthOptional, smtpd.TLSOptional, []string{"STARTTLS"}},
	}
	for _, i18n := range []bool{false, true} {
		for _, pipe := range []bool{false, true} {
			for _, m := range modes {
				name := fmt.Sprintf("i18n=%v/pipelining=%v/%s", i18n, pipe, m.name)
				t.Run(name, func(t *testing.T) {
					ts := smtptest.NewServer(t, nil, func(s *smtpd.Server) {
						s.Internationalization, s.Pipelining, s.AuthMode, s.TLSMode = i18n, pipe, m.auth, m.tls
					})
					want := []string{smtpd.ProtoTextEhloFirst}
					if i18n {
						want = append(want, "8BITMIME", "SMTPUTF8")
					}
					if pipe {
						want = append(want, "PIPELINING")
					}
					want = append(want, m.kw...)
					want = append(want, smtpd.ProtoTextEhloSize, "OK")
					c := ts.DialGreeted(t)
					c.Send("EHLO client.example\r\n")
					require.Equal(t, strings.Join(want, "\n"), c.Expect(250))
					// HELO never lists extensions.
					require.Equal(t, smtpd.ProtoTextHelo, c.Cmd("HELO client.example", 250))
				})
			}
		}
	}
}

func TestProtocolCaseInsensitiveVerbs(t *testing.T) {
	h := &smtptest.Recorder{}
	ts := smtptest.NewServer(t, h)
	c := ts.DialGreeted(t)
	require.Equal(t, smtpd.ProtoTextEhloFirst+"\n"+smtpd.ProtoTextEhloSize+"\nOK", c.Cmd("ehlo client.example", 250))
	require.Equal(t, smtpd.ProtoTextOK, c.Cmd("mail from:<a@example.com>", 250))
	require.Equal(t, smtpd.ProtoTextOK, c.Cmd("Rcpt To:<b@example.com>", 250))
	require.Equal(t, smtpd.ProtoText354, c.Cmd("dAtA", 354))
	c.Send("x\r\n.\r\n")
	require.Equal(t, smtpd.ProtoText250Data, c.Expect(250))
	require.Equal(t, smtpd.ProtoTextOK, c.Cmd("rset", 250))
	require.Equal(t, smtpd.ProtoTextOK, c.Cmd("noop", 250))
	require.Equal(t, smtpd.ProtoTextHelo, c.Cmd("helo client.example", 250))
	require.Equal(t, smtpd.ProtoText221, c.Cmd("quit", 221))
	c.ExpectClosed()
	m := h.Wait(t, 1)[0]
	require.Equal(t, "a@example.com", m.From)
	require.Equal(t, []string{"b@example.com"}, m.To)
	require.Equal(t, "x\r\n", string(m.Data))
}

func TestProtocolMalformedLines(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		code int
	}{
		{"empty line", "\r\n", 500},
		{"empty line bare LF", "\n", 500},
		{"NUL in verb", "NO\x00OP\r\n", 500},
		{"NUL after verb", "NOOP\x00\r\n", 500},
		{"NUL in MAIL address", "MAIL FROM:<a\x00@example.com>\r\n", 500},
		{"bare CR in command", "NOOP\rRSET\r\n", 500},
		{"unknown verb", "XYZZY\r\n", 500},
		{"spaces only", "   \r\n", 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mailCalled := make(chan string, 1)
			ts := smtptest.NewServer(t, &hookHandler{mail: func(s *smtpd.Session, from string) (string, error) {
				mailCalled <- from
				return "", nil
			}})
			c := greeted(t, ts)
			c.Send(tc.raw)
			c.Expect(tc.code)
			// The session goes on and no MAIL was started by the bad line.
			require.Equal(t, smtpd.ProtoTextOK, c.Cmd("NOOP", 250))
			require.Equal(t, smtpd.ProtoText503, c.Cmd("RCPT TO:<b@example.com>", 503))
			require.Len(t, mailCalled, 0)
		})
	}
}

func TestProtocolArgumentChecks(t *testing.T) {
	tlsOptional := func(s *smtpd.Server) { s.TLSMode = smtpd.TLSOptional }
	tests := []struct {
		name  string
		opt   func(*smtpd.Server) // nil: the defaults
		greet bool
		line  string
		code  int
		text  string
	}{
		{"RSET x", nil, true, "RSET x", 501, smtpd.ProtoText501},
		{"RSET x before HELO", nil, false, "RSET x", 501, smtpd.ProtoText501},
		{"NOOP x", nil, true, "NOOP x", 501, smtpd.ProtoText501},
		{"QUIT x", nil, true, "QUIT x", 501, smtpd.ProtoText501},
		{"DATA x", nil, true, "DATA x", 501, smtpd.ProtoText501},
		// DATA: arguments are checked before the state.
		{"DATA x before HELO", nil, false, "DATA x", 501, smtpd.ProtoText501},
		// STARTTLS x: arguments first, even with TLS forbidden.
		{"STARTTLS x tls forbidden", nil, true, "STARTTLS x", 501, smtpd.ProtoText501},
		{"STARTTLS x tls optional", tlsOptional, true, "STARTTLS x", 501, smtpd.ProtoText501},
		{"STARTTLS tls forbidden", nil, true, "STARTTLS", 500, smtpd.ProtoText500},
		{"STARTTLS before EHLO", tlsOptional, false, "STARTTLS", 503, smtpd.ProtoText503},
		{"HELO without domain", nil, false, "HELO", 501, smtpd.ProtoText501},
		{"EHLO without domain", nil, false, "EHLO", 501, smtpd.ProtoText501},
		{"EHLO with spaces only", nil, false, "EHLO   ", 501, smtpd.ProtoText501},
		{"HELO without domain after EHLO", nil, true, "HELO", 501, smtpd.ProtoText501},
		{"RSET before HELO", nil, false, "RSET", 250, smtpd.ProtoTextOK},
		{"NOOP before HELO", nil, false, "NOOP", 250, smtpd.ProtoTextOK},
		{"MAIL without FROM:", nil, true, "MAIL <a@example.com>", 501, smtpd.ProtoText501},
		{"MAIL FROM: without path", nil, true, "MAIL FROM:", 501, smtpd.ProtoText501},
		{"AUTH when forbidden", nil, true, "AUTH PLAIN", 500, smtpd.ProtoText500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []func(*smtpd.Server)
			if tc.opt != nil {
				opts = append(opts, tc.opt)
			}
			c := smtptest.NewServer(t, nil, opts...).DialGreeted(t)
			if tc.greet {
				c.Cmd("EHLO client.example", 250)
			}
			require.Equal(t, tc.text, c.Cmd(tc.line, tc.code))
			// The connection is still usable (QUIT x did not quit).
			require.Equal(t, smtpd.ProtoTextOK, c.Cmd("NOOP", 250))
			require.Equal(t, smtpd.ProtoText221, c.Cmd("QUIT", 221))
			c.ExpectClosed()
		})
	}
}
