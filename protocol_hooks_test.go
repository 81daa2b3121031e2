package smtpd_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// hookHandler is a Handler whose hooks are set per test; an unset hook behaves as
// BaseHandler's. The black-box tests of other files use it too.
type hookHandler struct {
	smtpd.BaseHandler
	connect    func(s *smtpd.Session) error
	disconnect func(s *smtpd.Session)
	helo       func(s *smtpd.Session, helo string) error
	mail       func(s *smtpd.Session, from string) (string, error)
	rcpt       func(s *smtpd.Session, to string) (string, error)
	dataStart  func(s *smtpd.Session) error
	dataRecv   func(s *smtpd.Session) error
	dataHdrs   func(s *smtpd.Session) error
	message    func(s *smtpd.Session) error
	unknown    func(s *smtpd.Session, line string) error
}

func (h *hookHandler) OnConnect(s *smtpd.Session) error {
	if h.connect != nil {
		return h.connect(s)
	}
	return h.BaseHandler.OnConnect(s)
}

func (h *hookHandler) OnDisconnect(s *smtpd.Session) {
	if h.disconnect != nil {
		h.disconnect(s)
	}
}

func (h *hookHandler) OnHelo(s *smtpd.Session, helo string) error {
	if h.helo != nil {
		return h.helo(s, helo)
	}
	return h.BaseHandler.OnHelo(s, helo)
}

func (h *hookHandler) OnMailFrom(s *smtpd.Session, from string) (string, error) {
	if h.mail != nil {
		return h.mail(s, from)
	}
	return h.BaseHandler.OnMailFrom(s, from)
}

func (h *hookHandler) OnRcptTo(s *smtpd.Session, to string) (string, error) {
	if h.rcpt != nil {
		return h.rcpt(s, to)
	}
	return h.BaseHandler.OnRcptTo(s, to)
}

func (h *hookHandler) OnDataStart(s *smtpd.Session) error {
	if h.dataStart != nil {
		return h.dataStart(s)
	}
	return nil
}

func (h *hookHandler) OnDataReceiving(s *smtpd.Session) error {
	if h.dataRecv != nil {
		return h.dataRecv(s)
	}
	return nil
}

func (h *hookHandler) OnDataHeaders(s *smtpd.Session) error {
	if h.dataHdrs != nil {
		return h.dataHdrs(s)
	}
	return nil
}

func (h *hookHandler) OnMessage(s *smtpd.Session) error {
	if h.message != nil {
		return h.message(s)
	}
	return nil
}

func (h *hookHandler) OnUnknown(s *smtpd.Session, line string) error {
	if h.unknown != nil {
		return h.unknown(s, line)
	}
	return h.BaseHandler.OnUnknown(s, line)
}

func TestProtocolHookErrors(t *testing.T) {
	custom := &smtpd.SMTPError{Code: 550, EnhancedCode: "5.7.1", Message: "No thanks"}
	tests := []struct {
		name   string
		err    error
		code   int
		text   string
		closed bool
	}{
		{"smtpd.SMTPError direct", smtpd.SMTPError550, 550, "Requested action not taken: mailbox unavailable", false},
		{"smtpd.SMTPError with enhanced code", custom, 550, "No thanks", false}, // no code: EnhancedStatusCodes is off (RFC 2034),
		{"smtpd.SMTPError wrapped", fmt.Errorf("spammer %s: %w", "1.2.3.4", smtpd.SMTPError554), 554, "Transaction failed", false},
		{"smtpd.SMTPError wrapped twice", fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", custom)), 550, "No thanks", false},
		{"smtpd.SMTPError multi-line", &smtpd.SMTPError{Code: 550, Message: "first\nsecond"}, 550, "first\nsecond", false},
		{"plain error", errors.New("database down"), 451, smtpd.ProtoText451, false},
		{"joined plain errors", errors.Join(errors.New("a"), errors.New("b")), 451, smtpd.ProtoText451, false},
		{"smtpd.SMTPError421", smtpd.SMTPError421, 421, smtpd.ProtoText421, true},
		{"smtpd.SMTPError421 wrapped", fmt.Errorf("go away: %w", smtpd.SMTPError421), 421, smtpd.ProtoText421, true},
	}
	hooks := []struct {
		name  string
		build func(err error) *hookHandler
		// run sends the commands up to the failing one and returns its line.
		run func(c *smtptest.Conn) string
	}{
		{"OnHelo", func(err error) *hookHandler {
			return &hookHandler{helo: func(*smtpd.Session, string) error { return err }}
		}, func(c *smtptest.Conn) string { return "EHLO client.example" }},
		{"OnMailFrom", func(err error) *hookHandler {
			return &hookHandler{mail: func(*smtpd.Session, string) (string, error) { return "", err }}
		}, func(c *smtptest.Conn) string { c.Cmd("EHLO client.example", 250); return "MAIL FROM:<a@example.com>" }},
		{"OnRcptTo", func(err error) *hookHandler {
			return &hookHandler{rcpt: func(*smtpd.Session, string) (string, error) { return "", err }}
		}, func(c *smtptest.Conn) string {
			c.Cmd("EHLO client.example", 250)
			c.Cmd("MAIL FROM:<a@example.com>", 250)
			return "RCPT TO:<b@example.com>"
		}},
		{"OnUnknown", func(err error) *hookHandler {
			return &hookHandler{unknown: func(*smtpd.Session, string) error { return err }}
		}, func(c *smtptest.Conn) string { return "XFOO" }},
	}
	for _, hk := range hooks {
		for _, tc := range tests {
			t.Run(hk.name+"/"+tc.name, func(t *testing.T) {
				ts := smtptest.NewServer(t, hk.build(tc.err))
				c := ts.DialGreeted(t)
				line := hk.run(c)
				require.Equal(t, tc.text, c.Cmd(line, tc.code))
				if tc.closed {
					c.ExpectClosed()
					return
				}
				require.Equal(t, smtpd.ProtoTextOK, c.Cmd("NOOP", 250))
			})
		}
	}
}

func TestProtocolHookErrorsInData(t *testing.T) {
	tests := []struct {
		name   string
		h      func(err error) *hookHandler
		err    error
		code   int
		text   string
		closed bool
	}{
		{"OnDataStart 554", func(err error) *hookHandler {
			return &hookHandler{dataStart: func(*smtpd.Session) error { return err }}
		},
			smtpd.SMTPError554, 554, "Transaction failed", false},
		{"OnDataHeaders wrapped 550", func(err error) *hookHandler { return &hookHandler{dataHdrs: func(*smtpd.Session) error { return err }} },
			fmt.Errorf("bad header: %w", smtpd.SMTPError550), 550, "Requested action not taken: mailbox unavailable", false},
		{"OnDataReceiving plain", func(err error) *hookHandler { return &hookHandler{dataRecv: func(*smtpd.Session) error { return err }} },
			errors.New("disk full"), 451, smtpd.ProtoText451, false},
		{"OnMessage 552", func(err error) *hookHandler { return &hookHandler{message: func(*smtpd.Session) error { return err }} },
			smtpd.SMTPError552, 552, smtpd.ProtoText552, false},
		{"OnMessage plain", func(err error) *hookHandler { return &hookHandler{message: func(*smtpd.Session) error { return err }} },
			errors.New("queue down"), 451, smtpd.ProtoText451, false},
		{"OnMessage 421", func(err error) *hookHandler { return &hookHandler{message: func(*smtpd.Session) error { return err }} },
			smtpd.SMTPError421, 421, smtpd.ProtoText421, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := smtptest.NewServer(t, tc.h(tc.err))
			c := greeted(t, ts)
			c.Cmd("MAIL FROM:<a@example.com>", 250)
			c.Cmd("RCPT TO:<b@example.com>", 250)
			c.Cmd("DATA", 354)
			c.Send("Subject: x\r\n\r\nline 1\r\nline 2\r\n.\r\n")
			require.Equal(t, tc.text, c.Expect(tc.code))
			if tc.closed {
				c.ExpectClosed()
				return
			}
			// The transaction is over: a new one can start.
			require.Equal(t, smtpd.ProtoText503, c.Cmd("RCPT TO:<b@example.com>", 503))
			require.Equal(t, smtpd.ProtoTextOK, c.Cmd("MAIL FROM:<a@example.com>", 250))
		})
	}
}

func TestProtocolHookPanic(t *testing.T) {
	tests := []struct {
		name string
		h    *hookHandler
		run  func(c *smtptest.Conn)
	}{
		{"OnHelo", &hookHandler{helo: func(*smtpd.Session, string) error { panic("boom") }}, func(c *smtptest.Conn) {
			c.Send("EHLO client.example\r\n")
		}},
		{"OnRcptTo", &hookHandler{rcpt: func(*smtpd.Session, string) (string, error) { panic("boom") }}, func(c *smtptest.Conn) {
			c.Cmd("EHLO client.example", 250)
			c.Cmd("MAIL FROM:<a@example.com>", 250)
			c.Send("RCPT TO:<b@example.com>\r\n")
		}},
		{"OnMessage", &hookHandler{message: func(*smtpd.Session) error { panic(errors.New("boom")) }}, func(c *smtptest.Conn) {
			c.Cmd("EHLO client.example", 250)
			c.Cmd("MAIL FROM:<a@example.com>", 250)
			c.Cmd("RCPT TO:<b@example.com>", 250)
			c.Cmd("DATA", 354)
			c.Send("x\r\n.\r\n")
		}},
		{"OnUnknown", &hookHandler{unknown: func(*smtpd.Session, string) error { panic("boom") }}, func(c *smtptest.Conn) {
			c.Send("XFOO\r\n")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// One processing slot: the next client is served only if the panicking
			// session gave its slot back.
			ts := smtptest.NewServer(t, tc.h, func(s *smtpd.Server) { s.MaxProcessings = 1 })
			c := ts.DialGreeted(t)
			tc.run(c)
			require.Equal(t, smtpd.ProtoText421, c.Expect(421))
			c.ExpectClosed()

			c2 := ts.Dial(t)
			require.Equal(t, smtpd.ProtoTextBanner, c2.Expect(220))
			require.Equal(t, smtpd.ProtoTextOK, c2.Cmd("NOOP", 250))
		})
	}
}

func TestProtocolOnUnknown(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		ts := smtptest.NewServer(t, nil)
		c := ts.DialGreeted(t)
		require.Equal(t, smtpd.ProtoText500, c.Cmd("XFOO bar", 500))
		require.Equal(t, smtpd.ProtoText500, c.Cmd("VRFY someone", 500))
		require.Equal(t, smtpd.ProtoTextOK, c.Cmd("NOOP", 250))
	})
	t.Run("custom", func(t *testing.T) {
		lines := make(chan string, 10)
		ts := smtptest.NewServer(t, &hookHandler{unknown: func(s *smtpd.Session, line string) error {
			lines <- line
			switch strings.ToUpper(strings.Fields(line)[0]) {
			case "XOK":
				return nil
			case "VRFY":
				return &smtpd.SMTPError{Code: 252, Message: "Cannot VRFY user"}
			case "XSUPER":
				return smtpd.BaseHandler{}.OnUnknown(s, line)
			}
			return smtpd.SMTPError502
		}})
		c := ts.DialGreeted(t)
		require.Equal(t, smtpd.ProtoTextOK, c.Cmd("XOK with  args", 250))
		require.Equal(t, smtpd.ProtoText500, c.Cmd("xsuper", 500))
		require.Equal(t, "Command not implemented", c.Cmd("EXPN list", 502))
		require.Equal(t, "XOK with  args", <-lines)
		require.Equal(t, "xsuper", <-lines)
		require.Equal(t, "EXPN list", <-lines)
		// Known verbs never reach OnUnknown.
		require.Equal(t, smtpd.ProtoTextOK, c.Cmd("NOOP", 250))
		require.Len(t, lines, 0)
	})
}

func TestProtocolExceptionsCount(t *testing.T) {
	counts := make(chan int, 1)
	h := &hookHandler{
		unknown: func(s *smtpd.Session, line string) error {
			if line == "XCOUNT" {
				counts <- s.Exceptions
				return nil
			}
			return smtpd.SMTPError500
		},
		rcpt: func(s *smtpd.Session, to string) (string, error) {
			if strings.HasPrefix(to, "fail") {
				return "", errors.New("plain failure")
			}
			return "", nil
		},
	}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.MaxRecipients = 1 })
	c := ts.DialGreeted(t)
	count := func(want int) {
		t.Helper()
		require.Equal(t, smtpd.ProtoTextOK, c.Cmd("XCOUNT", 250))
		require.Equal(t, want, <-counts)
	}
	count(0)
	c.Cmd("MAIL FROM:<a@example.com>", 503) // before HELO
	count(1)
	c.Cmd("EHLO", 501)
	c.Cmd("EHLO client.example", 250)
	c.Cmd("NOOP", 250)
	count(2)
	c.Cmd("XBAD", 500)
	c.Cmd("\x00", 500)
	c.Cmd("RSET x", 501)
	count(5)
	c.Cmd("MAIL FROM:<a@example.com> FOO=1", 555)
	c.Cmd("MAIL FROM:<ä@example.com>", 553)
	c.Cmd("MAIL FROM:<a@example.com>", 250)
	c.Cmd("RCPT TO:<fail@example.com>", 451)
	c.Cmd("RCPT TO:<b@example.com>", 250)
	c.Cmd("RCPT TO:<c@example.com>", 452)
	count(9)
	c.Send("NOOP\r\nNOOP\r\n") // pipelining refused: one exception
	c.Expect(500)
	c.Expect(250)
	count(10)
	c.Cmd("DATA", 354)
	c.Send("x\r\n.\r\n")
	c.Expect(250)
	count(10)
}

func TestProtocolOnConnectErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code int
		text string
	}{
		// events.go: "An error refuses the connection: its reply (421 for a plain
		// error) is sent and the connection is closed."
		{"plain error", errors.New("blocked ip"), 421, smtpd.ProtoText421},
		{"smtpd.SMTPError554", smtpd.SMTPError554, 554, "Transaction failed"},
		{"wrapped smtpd.SMTPError550", fmt.Errorf("listed: %w", smtpd.SMTPError550), 550, "Requested action not taken: mailbox unavailable"},
		{"smtpd.SMTPError421", smtpd.SMTPError421, 421, smtpd.ProtoText421},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := smtptest.NewServer(t, &hookHandler{connect: func(s *smtpd.Session) error { return tc.err }})
			c := ts.Dial(t)
			require.Equal(t, tc.text, c.Expect(tc.code))
			c.ExpectClosed()
		})
	}
	t.Run("panic", func(t *testing.T) {
		var calls atomic.Int32
		ts := smtptest.NewServer(t, &hookHandler{connect: func(s *smtpd.Session) error {
			if calls.Add(1) == 1 {
				panic("boom")
			}
			return nil
		}}, func(s *smtpd.Server) { s.MaxProcessings = 1 })
		c := ts.Dial(t)
		require.Equal(t, smtpd.ProtoText421, c.Expect(421))
		c.ExpectClosed()
		c2 := ts.Dial(t)
		require.Equal(t, smtpd.ProtoTextBanner, c2.Expect(220))
	})
}

// A hook error during DATA is answered at the final dot only; the lines after it
// are read as data, never run as commands, and OnMessage is not called.
func TestProtocolDataHookErrorHeldToDot(t *testing.T) {
	delivered := make(chan struct{}, 1)
	ts := smtptest.NewServer(t, &hookHandler{
		dataStart: func(*smtpd.Session) error { return smtpd.SMTPError554 },
		message:   func(*smtpd.Session) error { delivered <- struct{}{}; return nil },
	})
	c := greeted(t, ts)
	c.Cmd("MAIL FROM:<a@b.example>", 250)
	c.Cmd("RCPT TO:<c@d.example>", 250)
	c.Cmd("DATA", 354)
	c.Send("Subject: refused\r\n\r\nXFOO\r\n")
	c.Send("XBAR\r\nQUIT\r\n")
	c.Send(".\r\n")
	require.Equal(t, "Transaction failed", c.Expect(554))
	// Had any data line been answered, its reply would come before this one.
	require.Equal(t, smtpd.ProtoTextOK, c.Cmd("NOOP", 250))
	require.Len(t, delivered, 0)
}

// A 421 from a data hook is answered at once, mid-stream, and closes.
func TestProtocolDataHook421AtOnce(t *testing.T) {
	delivered := make(chan struct{}, 1)
	ts := smtptest.NewServer(t, &hookHandler{
		dataRecv: func(*smtpd.Session) error { return fmt.Errorf("too much: %w", smtpd.SMTPError421) },
		message:  func(*smtpd.Session) error { delivered <- struct{}{}; return nil },
	})
	c := greeted(t, ts)
	c.Cmd("MAIL FROM:<a@b.example>", 250)
	c.Cmd("RCPT TO:<c@d.example>", 250)
	c.Cmd("DATA", 354)
	c.Send("Subject: first line\r\n") // no final dot
	require.Equal(t, smtpd.ProtoText421, c.Expect(421))
	c.ExpectClosed()
	require.Len(t, delivered, 0)
}

// successHooks answers RCPT to remote@ with 251, and returns its dataStart and
// message errors from OnDataStart and OnMessage (after recording the message).
type successHooks struct {
	*smtptest.Recorder
	dataStart error
	message   error
}

func (h successHooks) OnRcptTo(_ *smtpd.Session, to string) (string, error) {
	if strings.HasPrefix(to, "remote@") {
		return "", &smtpd.SMTPError{Code: 251, Message: "User not local; will forward"}
	}
	return "", nil
}

func (h successHooks) OnDataStart(*smtpd.Session) error { return h.dataStart }

func (h successHooks) OnMessage(s *smtpd.Session) error {
	h.Recorder.OnMessage(s)
	return h.message
}

// A hook returning a 2xx SMTPError used to count as a failure (OnRcptTo's 251
// dropped the recipient the client believed accepted). OnRcptTo and OnMessage may
// succeed with their own reply; OnDataStart cannot, and its 2xx is a 451.
func TestProtocolHookSuccessReplies(t *testing.T) {
	tests := []struct {
		name      string
		dataStart error
		message   error
		final     int
		finalText string
		delivered bool
	}{
		{name: "OnRcptTo 251 keeps the recipient", final: 250,
			finalText: smtpd.ProtoText250Data, delivered: true},
		{name: "OnMessage custom 250", message: &smtpd.SMTPError{Code: 250, EnhancedCode: "2.0.0", Message: "Queued as Q1"},
			final: 250, finalText: "Queued as Q1", delivered: true},
		{name: "OnDataStart 2xx is a mistake", dataStart: &smtpd.SMTPError{Code: 250, Message: "fine"},
			final: 451, delivered: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := successHooks{Recorder: &smtptest.Recorder{}, dataStart: tc.dataStart, message: tc.message}
			c := smtptest.NewServer(t, h).DialGreeted(t)
			c.Cmd("EHLO x", 250)
			c.Cmd("MAIL FROM:<a@b.example>", 250)
			c.Cmd("RCPT TO:<local@b.example>", 250)
			require.Equal(t, "User not local; will forward", c.Cmd("RCPT TO:<remote@b.example>", 251))
			c.Cmd("DATA", 354)
			text := c.Cmd("Subject: success\r\n\r\nbody\r\n.", tc.final)
			if tc.finalText != "" {
				require.Equal(t, tc.finalText, text)
			}
			if tc.delivered {
				m := h.Wait(t, 1)
				require.Equal(t, []string{"local@b.example", "remote@b.example"}, m[0].To)
			} else {
				require.Empty(t, h.Messages(), "delivered although the reply was %d", tc.final)
			}
			c.Cmd("QUIT", 221)
		})
	}
}
