package smtpd

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// RFC 2034 / RFC 3463 enhanced status codes: with EnhancedStatusCodes off every
// reply is exactly what it was (protocol_test.go's texts); on, EHLO lists
// ENHANCEDSTATUSCODES and every reply but the banner, the HELO/EHLO reply, 334 and
// 354 carries the code of DESIGN's table. A hook's code is checked at the reply
// choke point: an invalid one never reaches the client.

// enhCmd sends line and checks the whole reply line, byte for byte.
func (c *client) enhCmd(line, want string) {
	c.t.Helper()
	c.send(line + "\r\n")
	require.Equal(c.t, want+"\r\n", c.rawLine(), "the reply to %q", line)
}

// enhExpect checks the next reply line byte for byte.
func (c *client) enhExpect(want string) {
	c.t.Helper()
	require.Equal(c.t, want+"\r\n", c.rawLine())
}

// enhCode renders a reply line: code, the enhanced code when on, text.
func enhCode(on bool, code int, enh, text string) string {
	if on && enh != "" {
		return fmt.Sprintf("%d %s %s", code, enh, text)
	}
	return fmt.Sprintf("%d %s", code, text)
}

// TestEnhancedCodesSession runs one session through the replies of DESIGN's table,
// with EnhancedStatusCodes off (exactly protocol_test.go's texts, no codes) and on.
func TestEnhancedCodesSession(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("EnhancedStatusCodes=%v", on), func(t *testing.T) {
			h := newBdatHandler()
			addr := serve(t, &Server{Handler: h, EnhancedStatusCodes: on, Chunking: true})
			r := func(code int, enh, text string) string { return enhCode(on, code, enh, text) }
			c := dial(t, addr)
			c.enhExpect("220 " + protoTextBanner) // the banner never carries one
			c.send("EHLO client.example\r\n")
			want := []string{"250-" + protoTextEhloFirst, "250-" + protoTextEhloSize}
			if on {
				want = append(want, "250-ENHANCEDSTATUSCODES")
			}
			want = append(want, "250-CHUNKING", "250-BINARYMIME", "250 OK")
			for _, w := range want {
				c.enhExpect(w)
			}
			c.enhCmd("HELO client.example", "250 "+protoTextHelo) // nor HELO's
			c.enhCmd("NOOP", r(250, "2.0.0", protoTextOK))
			c.enhCmd("RSET", r(250, "2.0.0", protoTextOK))
			c.enhCmd("DATA", r(503, "5.5.1", protoText503))
			c.enhCmd("NOOP x", r(501, "5.5.4", protoText501))
			c.enhCmd("XYZZY", r(500, "5.5.2", protoText500))
			c.enhCmd("MAIL FROM:<a@example.com> FOO=1", r(555, "5.5.4", protoText555))
			c.enhCmd("MAIL FROM:<a@example.com> SIZE=99999999", r(552, "5.3.4", protoText552))
			c.enhCmd("MAIL FROM:<a@example.com>", r(250, "2.1.0", protoTextOK))
			c.enhCmd("RCPT TO:<b@example.com>", r(250, "2.1.5", protoTextOK))
			c.send("BDAT 5\r\nhello")
			c.enhExpect(r(250, "2.0.0", "5 octets received"))
			c.send("BDAT 2 LAST\r\n\r\n")
			c.enhExpect(r(250, "2.0.0", protoText250Data))
			c.enhCmd("MAIL FROM:<a@example.com>", r(250, "2.1.0", protoTextOK))
			c.enhCmd("RCPT TO:<b@example.com>", r(250, "2.1.5", protoTextOK))
			c.enhCmd("DATA", "354 "+protoText354) // 354 never carries one
			c.send("Subject: t\r\n\r\nbody\r\n.\r\n")
			c.enhExpect(r(250, "2.0.0", protoText250Data))
			c.enhCmd("QUIT", r(221, "2.0.0", protoText221))
			c.expectClosed()
		})
	}
}

// TestEnhancedCodesAuth: 530 5.7.0, 535 5.7.8, 235 2.7.0; 334 carries none.
func TestEnhancedCodesAuth(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("EnhancedStatusCodes=%v", on), func(t *testing.T) {
			r := func(code int, enh, text string) string { return enhCode(on, code, enh, text) }
			addr := serve(t, &Server{Handler: newBdatHandler(), EnhancedStatusCodes: on, AuthMode: AuthRequired})
			c := dialGreeted(t, addr)
			c.cmd("EHLO client.example", 250)
			c.enhCmd("MAIL FROM:<a@example.com>", r(530, "5.7.0", protoText530Auth))
			c.enhCmd("AUTH LOGIN", "334 VXNlcm5hbWU6")
			c.enhCmd(b64(authUser), "334 UGFzc3dvcmQ6")
			c.enhCmd(b64(authWrong), r(535, "5.7.8", "Authentication credentials invalid"))
			c.enhCmd("AUTH PLAIN", "334 ")
			c.enhCmd(plainResp("", authUser, authPass), r(235, "2.7.0", "OK"))
			c.enhCmd("AUTH PLAIN", r(503, "5.5.1", protoText503))
			c.enhCmd("MAIL FROM:<a@example.com>", r(250, "2.1.0", protoTextOK))
		})
	}
}

// TestEnhancedCodesClose: Close's 421 carries 4.3.2 with the codes on.
func TestEnhancedCodesClose(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("EnhancedStatusCodes=%v", on), func(t *testing.T) {
			srv := &Server{EnhancedStatusCodes: on}
			addr := serve(t, srv)
			c := dialGreeted(t, addr)
			c.cmd("EHLO client.example", 250)
			done := make(chan struct{})
			go func() { srv.Close(); close(done) }()
			c.enhExpect(enhCode(on, 421, "4.3.2", protoText421))
			c.expectClosed()
			<-done
		})
	}
}

// TestEnhancedCodesOtherServerReplies: a few more of the server's own replies.
func TestEnhancedCodesOtherServerReplies(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("EnhancedStatusCodes=%v", on), func(t *testing.T) {
			r := func(code int, enh, text string) string { return enhCode(on, code, enh, text) }
			addr := serve(t, &Server{EnhancedStatusCodes: on, MaxMessageSize: 10})
			c := dialGreeted(t, addr)
			c.cmd("EHLO client.example", 250)
			c.send("BDAT 3\r\nabc")
			c.enhExpect(r(502, "5.5.1", "Command not implemented")) // CHUNKING off
			c.enhCmd("RCPT TO:<b@example.com>", r(503, "5.5.1", protoText503))
			c.enhCmd("MAIL FROM:<a@example.com> SIZE=abc", r(501, "5.5.4", protoText501))
			c.enhCmd("MAIL FROM:<a@example.com>", r(250, "2.1.0", protoTextOK))
			c.enhCmd("RCPT TO:<b@example.com>", r(250, "2.1.5", protoTextOK))
			c.enhCmd("DATA", "354 "+protoText354)
			c.send("0123456789abc\r\n.\r\n")
			c.enhExpect(r(552, "5.3.4", protoText552))
			c.send("NOOP\r\nNOOP\r\n")
			c.enhExpect(r(500, "5.5.0", protoText500Pipe))
			c.enhExpect(r(250, "2.0.0", protoTextOK))
		})
	}
}

// enhHookCase is a hook's error and the reply line it must give, off and on.
type enhHookCase struct {
	name    string
	err     error
	off, on string
}

var enhHookCases = []enhHookCase{
	// RFC 2034: a code only once ENHANCEDSTATUSCODES is announced, a hook's own too.
	{"own valid code", &SMTPError{Code: 550, EnhancedCode: "5.1.1", Message: "No such user"},
		"550 No such user", "550 5.1.1 No such user"},
	{"own valid code, 3-digit parts", &SMTPError{Code: 450, EnhancedCode: "4.123.456", Message: "Later"},
		"450 Later", "450 4.123.456 Later"},
	{"copy of a predefined reply", &SMTPError{Code: 550, EnhancedCode: SMTPError550.EnhancedCode, Message: SMTPError550.Message},
		"550 " + SMTPError550.Message, "550 5.1.1 " + SMTPError550.Message},
	{"no code", &SMTPError{Code: 550, Message: "Go away"}, "550 Go away", "550 5.0.0 Go away"},
	{"no code, 4xx", &SMTPError{Code: 451, Message: "Try later"}, "451 Try later", "451 4.0.0 Try later"},
	{"no code, wrapped", fmt.Errorf("policy: %w", &SMTPError{Code: 554, Message: "No"}), "554 No", "554 5.0.0 No"},
	{"predefined 550", SMTPError550, "550 " + SMTPError550.Message, "550 5.1.1 " + SMTPError550.Message},
	{"predefined 553 wrapped", fmt.Errorf("x: %w", SMTPError553), "553 " + protoText553, "553 5.1.3 " + protoText553},
	{"predefined 452", SMTPError452, "452 " + SMTPError452.Message, "452 4.3.1 " + SMTPError452.Message},
	{"predefined 554", SMTPError554, "554 Transaction failed", "554 5.0.0 Transaction failed"},
	{"plain error: 451", errors.New("database down"), "451 " + protoText451, "451 4.3.0 " + protoText451},
	{"success reply 251", &SMTPError{Code: 251, Message: "User not local; will forward"},
		"251 User not local; will forward", "251 2.0.0 User not local; will forward"},
	{"success reply with own code", &SMTPError{Code: 250, EnhancedCode: "2.1.5", Message: "Fine"},
		"250 Fine", "250 2.1.5 Fine"},
}

// enhInvalidCodes are hook codes that must be dropped; the reply line is checked
// byte for byte, so nothing injected through them can reach the client.
var enhInvalidCodes = []string{
	"5.1.1\r\n250 injected", "5.1.1\n250 injected", "4.1.1", "5.1234.1", "5.1.1234", "55.1.1", "5.1",
	"5..1", "5.1.1 ", " 5.1.1", "5.a.1", "2.0.0", "5.1.1.1", "x.1.1", "5.-1.1", "5.1.1\x00",
}

// enhInvalidLine is the one acceptable reply line for an invalid hook code: the
// code dropped (with the codes on, the class default may take its place; see
// TestEnhancedInvalidHookCodeGetsClassDefault).
func enhInvalidLine(t *testing.T, on bool, got string) {
	t.Helper()
	if on && got == "550 5.0.0 Go away\r\n" {
		return
	}
	require.Equal(t, "550 Go away\r\n", got, "the invalid code is dropped, nothing injected")
}

// TestEnhancedCodesHookErrors: what a hook's SMTPError gives, from each hook that
// answers a command, with the codes off and on; invalid codes are dropped.
func TestEnhancedCodesHookErrors(t *testing.T) {
	hooks := []struct {
		name string
		h    func(err error) *bdatHandler
		run  func(c *client) // sends what makes the hook answer
	}{
		{"OnRcptTo", func(err error) *bdatHandler {
			h := newBdatHandler()
			h.rcpt = func(*Session, string) (string, error) { return "", err }
			return h
		}, func(c *client) {
			c.cmd("MAIL FROM:<a@example.com>", 250)
			c.send("RCPT TO:<b@example.com>\r\n")
		}},
		{"OnMessage (DATA)", func(err error) *bdatHandler {
			h := newBdatHandler()
			h.message = func(*Session) error { return err }
			return h
		}, func(c *client) {
			c.cmd("MAIL FROM:<a@example.com>", 250)
			c.cmd("RCPT TO:<b@example.com>", 250)
			c.cmd("DATA", 354)
			c.send("x\r\n.\r\n")
		}},
		{"OnDataHeaders (BDAT, middle chunk)", func(err error) *bdatHandler {
			h := newBdatHandler()
			h.dataHdrs = func(*Session) error { return err }
			return h
		}, func(c *client) {
			c.cmd("MAIL FROM:<a@example.com>", 250)
			c.cmd("RCPT TO:<b@example.com>", 250)
			c.send("BDAT 6\r\nA:\r\n\r\n")
		}},
	}
	for _, hk := range hooks {
		for _, on := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/EnhancedStatusCodes=%v", hk.name, on), func(t *testing.T) {
				run := func(t *testing.T, err error) string {
					addr := serve(t, &Server{Handler: hk.h(err), EnhancedStatusCodes: on, Chunking: true})
					c := dialGreeted(t, addr)
					c.cmd("EHLO client.example", 250)
					hk.run(c)
					line := c.rawLine()
					// Exactly one reply: NOOP's is the next line.
					c.enhCmd("NOOP", enhCode(on, 250, "2.0.0", protoTextOK))
					return line
				}
				for _, tc := range enhHookCases {
					if strings.HasPrefix(tc.name, "success") && strings.HasPrefix(hk.name, "OnDataHeaders") {
						continue // a data hook has no success reply
					}
					want := tc.off
					if on {
						want = tc.on
					}
					require.Equal(t, want+"\r\n", run(t, tc.err), tc.name)
				}
				for _, code := range enhInvalidCodes {
					got := run(t, &SMTPError{Code: 550, EnhancedCode: code, Message: "Go away"})
					require.NotContains(t, got, "injected", "code %q", code)
					enhInvalidLine(t, on, got)
				}
				require.Equal(t, enhCode(on, 550, "5.0.0", "Go away")+"\r\n",
					run(t, &SMTPError{Code: 550, EnhancedCode: "", Message: "Go away"}), "empty code")
			})
		}
	}
}

// TestEnhancedCodesHookTextInjection: a hook's reply text with line breaks becomes
// a multi-line reply (every line with the code), never a second reply.
func TestEnhancedCodesHookTextInjection(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("EnhancedStatusCodes=%v", on), func(t *testing.T) {
			h := newBdatHandler()
			h.rcpt = func(*Session, string) (string, error) {
				return "", &SMTPError{Code: 550, EnhancedCode: "5.7.1", Message: "first\r\n250 injected\rx"}
			}
			addr := serve(t, &Server{Handler: h, EnhancedStatusCodes: on})
			c := dialGreeted(t, addr)
			c.cmd("EHLO client.example", 250)
			c.cmd("MAIL FROM:<a@example.com>", 250)
			c.send("RCPT TO:<b@example.com>\r\n")
			c.enhExpect(enhCode(on, 550, "5.7.1", "first")[:3] + "-" + enhCode(on, 550, "5.7.1", "first")[4:])
			c.enhExpect(enhCode(on, 550, "5.7.1", "250 injectedx"))
			c.enhCmd("NOOP", enhCode(on, 250, "2.0.0", protoTextOK))
		})
	}
}

// TestEnhancedInvalidHookCodeGetsClassDefault: with the codes on, every reply but
// the banner, HELO/EHLO, 334 and 354 carries one (DESIGN); a hook's invalid code is
// dropped, so its reply gets the class default as one without a code does.
func TestEnhancedInvalidHookCodeGetsClassDefault(t *testing.T) {
	for _, code := range enhInvalidCodes {
		h := newBdatHandler()
		h.rcpt = func(*Session, string) (string, error) {
			return "", &SMTPError{Code: 550, EnhancedCode: code, Message: "Go away"}
		}
		addr := serve(t, &Server{Handler: h, EnhancedStatusCodes: true})
		c := dialGreeted(t, addr)
		c.cmd("EHLO client.example", 250)
		c.cmd("MAIL FROM:<a@example.com>", 250)
		c.enhCmd("RCPT TO:<b@example.com>", "550 5.0.0 Go away")
	}
}

// TestEnhancedCodesNeverInGreeting: a refusal at connect takes the greeting's
// place, and RFC 2034 3 keeps enhanced codes out of the greeting — a hook's own
// code included (as Postfix, which a milter's refusal at connect showed).
func TestEnhancedCodesNeverInGreeting(t *testing.T) {
	h := newBdatHandler()
	refuse := &SMTPError{Code: 554, EnhancedCode: "5.7.1", Message: "not accepting connections"}
	addr := serve(t, &Server{Handler: &connectRefuser{bdatHandler: h, err: refuse}, EnhancedStatusCodes: true})
	c := dial(t, addr)
	require.Equal(t, "554 not accepting connections\r\n", c.rawLine())
	c.expectClosed()

	addr = serve(t, &Server{EnhancedStatusCodes: true, MaxConnectionsPerIP: 1})
	first := dialGreeted(t, addr)
	second := dial(t, addr)
	require.Equal(t, "421 "+errPerIP.Message+"\r\n", second.rawLine())
	first.enhCmd("NOOP", "250 2.0.0 OK") // after the greeting, codes as usual
}

// connectRefuser is a bdatHandler whose OnConnect returns err.
type connectRefuser struct {
	*bdatHandler
	err error
}

func (h *connectRefuser) OnConnect(*Session) error { return h.err }
