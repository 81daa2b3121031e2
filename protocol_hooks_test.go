package smtpd

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestProtocolHookErrors(t *testing.T) {
	custom := &SMTPError{Code: 550, EnhancedCode: "5.7.1", Message: "No thanks"}
	tests := []struct {
		name   string
		err    error
		code   int
		text   string
		closed bool
	}{
		{"SMTPError direct", SMTPError550, 550, "Requested action not taken: mailbox unavailable", false},
		{"SMTPError with enhanced code", custom, 550, "5.7.1 No thanks", false},
		{"SMTPError wrapped", fmt.Errorf("spammer %s: %w", "1.2.3.4", SMTPError554), 554, "Transaction failed", false},
		{"SMTPError wrapped twice", fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", custom)), 550, "5.7.1 No thanks", false},
		{"SMTPError multi-line", &SMTPError{Code: 550, Message: "first\nsecond"}, 550, "first\nsecond", false},
		{"plain error", errors.New("database down"), 451, protoText451, false},
		{"joined plain errors", errors.Join(errors.New("a"), errors.New("b")), 451, protoText451, false},
		{"SMTPError421", SMTPError421, 421, protoText421, true},
		{"SMTPError421 wrapped", fmt.Errorf("go away: %w", SMTPError421), 421, protoText421, true},
	}
	hooks := []struct {
		name  string
		build func(err error) *hookHandler
		// run sends the commands up to the failing one and returns its line.
		run func(c *client) string
	}{
		{"OnHelo", func(err error) *hookHandler {
			return &hookHandler{helo: func(*Session, string) error { return err }}
		}, func(c *client) string { return "EHLO client.example" }},
		{"OnMailFrom", func(err error) *hookHandler {
			return &hookHandler{mail: func(*Session, string) (string, error) { return "", err }}
		}, func(c *client) string { c.cmd("EHLO client.example", 250); return "MAIL FROM:<a@example.com>" }},
		{"OnRcptTo", func(err error) *hookHandler {
			return &hookHandler{rcpt: func(*Session, string) (string, error) { return "", err }}
		}, func(c *client) string {
			c.cmd("EHLO client.example", 250)
			c.cmd("MAIL FROM:<a@example.com>", 250)
			return "RCPT TO:<b@example.com>"
		}},
		{"OnUnknown", func(err error) *hookHandler {
			return &hookHandler{unknown: func(*Session, string) error { return err }}
		}, func(c *client) string { return "XFOO" }},
	}
	for _, hk := range hooks {
		for _, tc := range tests {
			t.Run(hk.name+"/"+tc.name, func(t *testing.T) {
				addr := serve(t, &Server{Handler: hk.build(tc.err)})
				c := dialGreeted(t, addr)
				line := hk.run(c)
				c.protoCmd(line, tc.code, tc.text)
				if tc.closed {
					c.expectClosed()
					return
				}
				c.protoCmd("NOOP", 250, protoTextOK)
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
		{"OnDataStart 554", func(err error) *hookHandler { return &hookHandler{dataStart: func(*Session) error { return err }} },
			SMTPError554, 554, "Transaction failed", false},
		{"OnDataHeaders wrapped 550", func(err error) *hookHandler { return &hookHandler{dataHdrs: func(*Session) error { return err }} },
			fmt.Errorf("bad header: %w", SMTPError550), 550, "Requested action not taken: mailbox unavailable", false},
		{"OnDataReceiving plain", func(err error) *hookHandler { return &hookHandler{dataRecv: func(*Session) error { return err }} },
			errors.New("disk full"), 451, protoText451, false},
		{"OnMessage 552", func(err error) *hookHandler { return &hookHandler{message: func(*Session) error { return err }} },
			SMTPError552, 552, protoText552, false},
		{"OnMessage plain", func(err error) *hookHandler { return &hookHandler{message: func(*Session) error { return err }} },
			errors.New("queue down"), 451, protoText451, false},
		{"OnMessage 421", func(err error) *hookHandler { return &hookHandler{message: func(*Session) error { return err }} },
			SMTPError421, 421, protoText421, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, &Server{Handler: tc.h(tc.err)})
			c := protoGreeted(t, addr)
			c.cmd("MAIL FROM:<a@example.com>", 250)
			c.cmd("RCPT TO:<b@example.com>", 250)
			c.cmd("DATA", 354)
			c.send("Subject: x\r\n\r\nline 1\r\nline 2\r\n.\r\n")
			c.protoExpect(tc.code, tc.text)
			if tc.closed {
				c.expectClosed()
				return
			}
			// The transaction is over: a new one can start.
			c.protoCmd("RCPT TO:<b@example.com>", 503, protoText503)
			c.protoCmd("MAIL FROM:<a@example.com>", 250, protoTextOK)
		})
	}
}

func TestProtocolHookPanic(t *testing.T) {
	tests := []struct {
		name string
		h    *hookHandler
		run  func(c *client)
	}{
		{"OnHelo", &hookHandler{helo: func(*Session, string) error { panic("boom") }}, func(c *client) {
			c.send("EHLO client.example\r\n")
		}},
		{"OnRcptTo", &hookHandler{rcpt: func(*Session, string) (string, error) { panic("boom") }}, func(c *client) {
			c.cmd("EHLO client.example", 250)
			c.cmd("MAIL FROM:<a@example.com>", 250)
			c.send("RCPT TO:<b@example.com>\r\n")
		}},
		{"OnMessage", &hookHandler{message: func(*Session) error { panic(errors.New("boom")) }}, func(c *client) {
			c.cmd("EHLO client.example", 250)
			c.cmd("MAIL FROM:<a@example.com>", 250)
			c.cmd("RCPT TO:<b@example.com>", 250)
			c.cmd("DATA", 354)
			c.send("x\r\n.\r\n")
		}},
		{"OnUnknown", &hookHandler{unknown: func(*Session, string) error { panic("boom") }}, func(c *client) {
			c.send("XFOO\r\n")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// One processing slot: the next client is served only if the panicking
			// session gave its slot back.
			addr := serve(t, &Server{Handler: tc.h, MaxProcessings: 1})
			c := dialGreeted(t, addr)
			tc.run(c)
			c.protoExpect(421, protoText421)
			c.expectClosed()

			c2 := dial(t, addr)
			c2.protoExpect(220, protoTextBanner)
			c2.protoCmd("NOOP", 250, protoTextOK)
		})
	}
}

func TestProtocolOnUnknown(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		addr := serve(t, &Server{})
		c := dialGreeted(t, addr)
		c.protoCmd("XFOO bar", 500, protoText500)
		c.protoCmd("VRFY someone", 500, protoText500)
		c.protoCmd("NOOP", 250, protoTextOK)
	})
	t.Run("custom", func(t *testing.T) {
		lines := make(chan string, 10)
		addr := serve(t, &Server{Handler: &hookHandler{unknown: func(s *Session, line string) error {
			lines <- line
			switch strings.ToUpper(strings.Fields(line)[0]) {
			case "XOK":
				return nil
			case "VRFY":
				return &SMTPError{Code: 252, Message: "Cannot VRFY user"}
			case "XSUPER":
				return BaseHandler{}.OnUnknown(s, line)
			}
			return SMTPError502
		}}})
		c := dialGreeted(t, addr)
		c.protoCmd("XOK with  args", 250, protoTextOK)
		c.protoCmd("xsuper", 500, protoText500)
		c.protoCmd("EXPN list", 502, "Command not implemented")
		require.Equal(t, "XOK with  args", <-lines)
		require.Equal(t, "xsuper", <-lines)
		require.Equal(t, "EXPN list", <-lines)
		// Known verbs never reach OnUnknown.
		c.protoCmd("NOOP", 250, protoTextOK)
		require.Len(t, lines, 0)
	})
}

func TestProtocolExceptionsCount(t *testing.T) {
	counts := make(chan int, 1)
	h := &hookHandler{
		unknown: func(s *Session, line string) error {
			if line == "XCOUNT" {
				counts <- s.Exceptions
				return nil
			}
			return SMTPError500
		},
		rcpt: func(s *Session, to string) (string, error) {
			if strings.HasPrefix(to, "fail") {
				return "", errors.New("plain failure")
			}
			return "", nil
		},
	}
	addr := serve(t, &Server{Handler: h, MaxRecipients: 1})
	c := dialGreeted(t, addr)
	count := func(want int) {
		t.Helper()
		c.protoCmd("XCOUNT", 250, protoTextOK)
		require.Equal(t, want, <-counts)
	}
	count(0)
	c.cmd("MAIL FROM:<a@example.com>", 503) // before HELO
	count(1)
	c.cmd("EHLO", 501)
	c.cmd("EHLO client.example", 250)
	c.cmd("NOOP", 250)
	count(2)
	c.cmd("XBAD", 500)
	c.cmd("\x00", 500)
	c.cmd("RSET x", 501)
	count(5)
	c.cmd("MAIL FROM:<a@example.com> FOO=1", 555)
	c.cmd("MAIL FROM:<ä@example.com>", 553)
	c.cmd("MAIL FROM:<a@example.com>", 250)
	c.cmd("RCPT TO:<fail@example.com>", 451)
	c.cmd("RCPT TO:<b@example.com>", 250)
	c.cmd("RCPT TO:<c@example.com>", 452)
	count(9)
	c.send("NOOP\r\nNOOP\r\n") // pipelining refused: one exception
	c.expect(500)
	c.expect(250)
	count(10)
	c.cmd("DATA", 354)
	c.send("x\r\n.\r\n")
	c.expect(250)
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
		{"plain error", errors.New("blocked ip"), 421, protoText421},
		{"SMTPError554", SMTPError554, 554, "Transaction failed"},
		{"wrapped SMTPError550", fmt.Errorf("listed: %w", SMTPError550), 550, "Requested action not taken: mailbox unavailable"},
		{"SMTPError421", SMTPError421, 421, protoText421},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, &Server{Handler: &hookHandler{connect: func(s *Session) error { return tc.err }}})
			c := dial(t, addr)
			c.protoExpect(tc.code, tc.text)
			c.expectClosed()
		})
	}
	t.Run("panic", func(t *testing.T) {
		var calls atomic.Int32
		addr := serve(t, &Server{MaxProcessings: 1, Handler: &hookHandler{connect: func(s *Session) error {
			if calls.Add(1) == 1 {
				panic("boom")
			}
			return nil
		}}})
		c := dial(t, addr)
		c.protoExpect(421, protoText421)
		c.expectClosed()
		c2 := dial(t, addr)
		c2.protoExpect(220, protoTextBanner)
	})
}

// A hook error during DATA is answered at the final dot only; the lines after it
// are read as data, never run as commands, and OnMessage is not called.
func TestProtocolDataHookErrorHeldToDot(t *testing.T) {
	delivered := make(chan struct{}, 1)
	addr := serve(t, &Server{Handler: &hookHandler{
		dataStart: func(*Session) error { return SMTPError554 },
		message:   func(*Session) error { delivered <- struct{}{}; return nil },
	}})
	c := protoGreeted(t, addr)
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<c@d.example>", 250)
	c.cmd("DATA", 354)
	c.send("Subject: refused\r\n\r\nXFOO\r\n")
	c.send("XBAR\r\nQUIT\r\n")
	c.send(".\r\n")
	c.protoExpect(554, "Transaction failed")
	// Had any data line been answered, its reply would come before this one.
	c.protoCmd("NOOP", 250, protoTextOK)
	require.Len(t, delivered, 0)
}

// A 421 from a data hook is answered at once, mid-stream, and closes.
func TestProtocolDataHook421AtOnce(t *testing.T) {
	delivered := make(chan struct{}, 1)
	addr := serve(t, &Server{Handler: &hookHandler{
		dataRecv: func(*Session) error { return fmt.Errorf("too much: %w", SMTPError421) },
		message:  func(*Session) error { delivered <- struct{}{}; return nil },
	}})
	c := protoGreeted(t, addr)
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<c@d.example>", 250)
	c.cmd("DATA", 354)
	c.send("Subject: first line\r\n") // no final dot
	c.protoExpect(421, protoText421)
	c.expectClosed()
	require.Len(t, delivered, 0)
}
