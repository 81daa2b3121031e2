package smtpd

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The reply texts of DESIGN.md's Protocol section, as a client reads them.
const (
	protoTextOK        = "OK"
	protoText354       = `Enter message, ending with "." on a line by itself`
	protoText250Data   = "Requested mail action okay, completed"
	protoText221       = "Service closing transmission channel"
	protoText421       = "Service not available, closing transmission channel"
	protoText421Busy   = "Service too busy or not available, closing transmission channel"
	protoText421Time   = "Timeout, closing transmission channel"
	protoText421Long   = "Line too long, closing transmission channel"
	protoText451       = "Requested action aborted: local error in processing"
	protoText500       = "Syntax error, command unrecognised or error in parameters or arguments"
	protoText500Pipe   = "Bad input, PIPELINING is not allowed"
	protoText501       = "Syntax error in parameters or arguments"
	protoText503       = "Bad sequence of commands"
	protoText530Auth   = "Authentication required"
	protoText530TLS    = "Encryption required, must issue STARTTLS command first"
	protoText552       = "Requested mail action aborted: exceeded storage allocation"
	protoText553       = "Requested action not taken: mailbox name not allowed"
	protoText555       = "MAIL FROM/RCPT TO parameters not recognized or not implemented"
	protoTextBanner    = "127.0.0.1 says welcome!"
	protoTextHelo      = "OK 127.0.0.1 at your service!"
	protoTextEhloFirst = "127.0.0.1 at your service!"
	protoTextEhloSize  = "SIZE 33554432" // SIZE is always listed (RFC 1870), with the default MaxMessageSize
)

// hookHandler is a Handler whose hooks are set per test; an unset hook behaves as
// BaseHandler's.
type hookHandler struct {
	BaseHandler
	connect    func(s *Session) error
	disconnect func(s *Session)
	helo       func(s *Session, helo string) error
	mail       func(s *Session, from string) (string, error)
	rcpt       func(s *Session, to string) (string, error)
	dataStart  func(s *Session) error
	dataRecv   func(s *Session) error
	dataHdrs   func(s *Session) error
	message    func(s *Session) error
	unknown    func(s *Session, line string) error
}

func (h *hookHandler) OnConnect(s *Session) error {
	if h.connect != nil {
		return h.connect(s)
	}
	return h.BaseHandler.OnConnect(s)
}

func (h *hookHandler) OnDisconnect(s *Session) {
	if h.disconnect != nil {
		h.disconnect(s)
	}
}

func (h *hookHandler) OnHelo(s *Session, helo string) error {
	if h.helo != nil {
		return h.helo(s, helo)
	}
	return h.BaseHandler.OnHelo(s, helo)
}

func (h *hookHandler) OnMailFrom(s *Session, from string) (string, error) {
	if h.mail != nil {
		return h.mail(s, from)
	}
	return h.BaseHandler.OnMailFrom(s, from)
}

func (h *hookHandler) OnRcptTo(s *Session, to string) (string, error) {
	if h.rcpt != nil {
		return h.rcpt(s, to)
	}
	return h.BaseHandler.OnRcptTo(s, to)
}

func (h *hookHandler) OnDataStart(s *Session) error {
	if h.dataStart != nil {
		return h.dataStart(s)
	}
	return nil
}

func (h *hookHandler) OnDataReceiving(s *Session) error {
	if h.dataRecv != nil {
		return h.dataRecv(s)
	}
	return nil
}

func (h *hookHandler) OnDataHeaders(s *Session) error {
	if h.dataHdrs != nil {
		return h.dataHdrs(s)
	}
	return nil
}

func (h *hookHandler) OnMessage(s *Session) error {
	if h.message != nil {
		return h.message(s)
	}
	return nil
}

func (h *hookHandler) OnUnknown(s *Session, line string) error {
	if h.unknown != nil {
		return h.unknown(s, line)
	}
	return h.BaseHandler.OnUnknown(s, line)
}

// protoExpect reads a reply and checks its code and its whole text.
func (c *client) protoExpect(code int, text string) {
	c.t.Helper()
	got, gotText := c.reply()
	require.Equal(c.t, code, got, "reply text %q", gotText)
	require.Equal(c.t, text, gotText)
}

// protoCmd sends line with CRLF and checks the reply's code and whole text.
func (c *client) protoCmd(line string, code int, text string) {
	c.t.Helper()
	c.send(line + "\r\n")
	c.protoExpect(code, text)
}

// protoGreeted dials addr, checks the default banner and sends EHLO.
func protoGreeted(t *testing.T, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.protoExpect(220, protoTextBanner)
	c.cmd("EHLO client.example", 250)
	return c
}

func TestProtocolReplyTexts(t *testing.T) {
	h := newRecorder()
	addr := serve(t, &Server{Handler: h})
	c := dial(t, addr)
	c.protoExpect(220, protoTextBanner)
	c.protoCmd("HELO client.example", 250, protoTextHelo)
	c.protoCmd("EHLO client.example", 250, protoTextEhloFirst+"\n"+protoTextEhloSize+"\nOK")
	c.protoCmd("NOOP", 250, protoTextOK)
	c.protoCmd("RSET", 250, protoTextOK)
	c.protoCmd("DATA", 503, protoText503)
	c.protoCmd("XYZZY", 500, protoText500)
	c.protoCmd("NOOP x", 501, protoText501)
	c.protoCmd("MAIL FROM:<a@example.com>", 250, protoTextOK)
	c.protoCmd("RCPT TO:<b@example.com>", 250, protoTextOK)
	c.protoCmd("DATA", 354, protoText354)
	c.send("Subject: t\r\n\r\nbody\r\n.\r\n")
	c.protoExpect(250, protoText250Data)
	c.protoCmd("QUIT", 221, protoText221)
	c.expectClosed()
	require.Equal(t, "Subject: t\r\n\r\nbody\r\n", h.waitMessages(t, 1)[0].Data)
}

func TestProtocolReplyTexts530(t *testing.T) {
	t.Run("auth required", func(t *testing.T) {
		addr := serve(t, &Server{AuthMode: AuthRequired})
		c := protoGreeted(t, addr)
		c.protoCmd("MAIL FROM:<a@example.com>", 530, protoText530Auth)
		c.protoCmd("NOOP", 250, protoTextOK)
	})
	t.Run("tls required", func(t *testing.T) {
		addr := serve(t, &Server{TLSMode: TLSRequired})
		c := protoGreeted(t, addr)
		c.protoCmd("MAIL FROM:<a@example.com>", 530, protoText530TLS)
		c.protoCmd("RSET", 530, protoText530TLS)
		c.protoCmd("XYZZY", 530, protoText530TLS)
		c.protoCmd("NOOP", 250, protoTextOK)
	})
}

func TestProtocolEHLOKeywords(t *testing.T) {
	type mode struct {
		name string
		auth AuthMode
		tls  TLSMode
		kw   []string
	}
	modes := []mode{
		{"plain", AuthForbidden, TLSForbidden, nil},
		{"auth optional", AuthOptional, TLSForbidden, []string{"AUTH LOGIN PLAIN"}},
		{"auth required", AuthRequired, TLSForbidden, []string{"AUTH LOGIN PLAIN"}},
		{"tls optional", AuthForbidden, TLSOptional, []string{"STARTTLS"}},
		{"tls required", AuthForbidden, TLSRequired, []string{"STARTTLS"}},
		// AUTH is not listed on plaintext when TLS is available.
		{"auth and tls", AuthOptional, TLSOptional, []string{"STARTTLS"}},
	}
	for _, i18n := range []bool{false, true} {
		for _, pipe := range []bool{false, true} {
			for _, m := range modes {
				name := fmt.Sprintf("i18n=%v/pipelining=%v/%s", i18n, pipe, m.name)
				t.Run(name, func(t *testing.T) {
					addr := serve(t, &Server{Internationalization: i18n, Pipelining: pipe, AuthMode: m.auth, TLSMode: m.tls})
					want := []string{protoTextEhloFirst}
					if i18n {
						want = append(want, "8BITMIME", "SMTPUTF8")
					}
					if pipe {
						want = append(want, "PIPELINING")
					}
					want = append(want, m.kw...)
					want = append(want, protoTextEhloSize, "OK")
					c := dialGreeted(t, addr)
					c.send("EHLO client.example\r\n")
					c.protoExpect(250, strings.Join(want, "\n"))
					// HELO never lists extensions.
					c.protoCmd("HELO client.example", 250, protoTextHelo)
				})
			}
		}
	}
}

func TestProtocolCaseInsensitiveVerbs(t *testing.T) {
	h := newRecorder()
	addr := serve(t, &Server{Handler: h})
	c := dialGreeted(t, addr)
	c.protoCmd("ehlo client.example", 250, protoTextEhloFirst+"\n"+protoTextEhloSize+"\nOK")
	c.protoCmd("mail from:<a@example.com>", 250, protoTextOK)
	c.protoCmd("Rcpt To:<b@example.com>", 250, protoTextOK)
	c.protoCmd("dAtA", 354, protoText354)
	c.send("x\r\n.\r\n")
	c.protoExpect(250, protoText250Data)
	c.protoCmd("rset", 250, protoTextOK)
	c.protoCmd("noop", 250, protoTextOK)
	c.protoCmd("helo client.example", 250, protoTextHelo)
	c.protoCmd("quit", 221, protoText221)
	c.expectClosed()
	m := h.waitMessages(t, 1)[0]
	require.Equal(t, "a@example.com", m.From)
	require.Equal(t, []string{"b@example.com"}, m.To)
	require.Equal(t, "x\r\n", m.Data)
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
			addr := serve(t, &Server{Handler: &hookHandler{mail: func(s *Session, from string) (string, error) {
				mailCalled <- from
				return "", nil
			}}})
			c := protoGreeted(t, addr)
			c.send(tc.raw)
			c.expect(tc.code)
			// The session goes on and no MAIL was started by the bad line.
			c.protoCmd("NOOP", 250, protoTextOK)
			c.protoCmd("RCPT TO:<b@example.com>", 503, protoText503)
			require.Len(t, mailCalled, 0)
		})
	}
}

func TestProtocolArgumentChecks(t *testing.T) {
	tests := []struct {
		name  string
		srv   *Server
		greet bool
		line  string
		code  int
		text  string
	}{
		{"RSET x", &Server{}, true, "RSET x", 501, protoText501},
		{"RSET x before HELO", &Server{}, false, "RSET x", 501, protoText501},
		{"NOOP x", &Server{}, true, "NOOP x", 501, protoText501},
		{"QUIT x", &Server{}, true, "QUIT x", 501, protoText501},
		{"DATA x", &Server{}, true, "DATA x", 501, protoText501},
		// DATA: arguments are checked before the state.
		{"DATA x before HELO", &Server{}, false, "DATA x", 501, protoText501},
		// STARTTLS x: arguments first, even with TLS forbidden.
		{"STARTTLS x tls forbidden", &Server{}, true, "STARTTLS x", 501, protoText501},
		{"STARTTLS x tls optional", &Server{TLSMode: TLSOptional}, true, "STARTTLS x", 501, protoText501},
		{"STARTTLS tls forbidden", &Server{}, true, "STARTTLS", 500, protoText500},
		{"STARTTLS before EHLO", &Server{TLSMode: TLSOptional}, false, "STARTTLS", 503, protoText503},
		{"HELO without domain", &Server{}, false, "HELO", 501, protoText501},
		{"EHLO without domain", &Server{}, false, "EHLO", 501, protoText501},
		{"EHLO with spaces only", &Server{}, false, "EHLO   ", 501, protoText501},
		{"HELO without domain after EHLO", &Server{}, true, "HELO", 501, protoText501},
		{"RSET before HELO", &Server{}, false, "RSET", 250, protoTextOK},
		{"NOOP before HELO", &Server{}, false, "NOOP", 250, protoTextOK},
		{"MAIL without FROM:", &Server{}, true, "MAIL <a@example.com>", 501, protoText501},
		{"MAIL FROM: without path", &Server{}, true, "MAIL FROM:", 501, protoText501},
		{"AUTH when forbidden", &Server{}, true, "AUTH PLAIN", 500, protoText500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.srv
			addr := serve(t, srv)
			c := dialGreeted(t, addr)
			if tc.greet {
				c.cmd("EHLO client.example", 250)
			}
			c.protoCmd(tc.line, tc.code, tc.text)
			// The connection is still usable (QUIT x did not quit).
			c.protoCmd("NOOP", 250, protoTextOK)
			c.protoCmd("QUIT", 221, protoText221)
			c.expectClosed()
		})
	}
}
