package smtpd

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// LMTP (RFC 2033): LHLO instead of HELO/EHLO, and after the message one reply per
// accepted recipient, in RCPT order — never more, never fewer — by DATA or by BDAT
// LAST; RecipientHandler gives each recipient its own reply.

// lmtpHandler is a bdatHandler that implements RecipientHandler when perRcpt is set
// (lmtpPlain hides it).
type lmtpHandler struct {
	*bdatHandler
	mu      sync.Mutex
	calls   []string
	perRcpt func(s *Session, rcpt string) error
}

func (h *lmtpHandler) OnMessageRecipient(s *Session, rcpt string) error {
	h.mu.Lock()
	h.calls = append(h.calls, rcpt)
	h.mu.Unlock()
	if h.perRcpt != nil {
		return h.perRcpt(s, rcpt)
	}
	return nil
}

func (h *lmtpHandler) recipientCalls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

// lmtpPlain is a Handler without OnMessageRecipient.
type lmtpPlain struct{ *bdatHandler }

var _ RecipientHandler = (*lmtpHandler)(nil)

// lmtpOK is the reply a delivered recipient gets.
func lmtpOK(rcpt string) bdatReply { return bdatReply{250, "OK <" + rcpt + "> delivered"} }

// lmtpSession greets with LHLO and sends MAIL and the RCPTs, each with its
// expected code.
func lmtpSession(t *testing.T, addr, helo string, rcpts map[string]int, order []string) *client {
	t.Helper()
	c := dialGreeted(t, addr)
	c.cmd("LHLO "+helo, 250)
	c.cmd("MAIL FROM:<a@example.com>", 250)
	for _, r := range order {
		code := 250
		if cd, ok := rcpts[r]; ok {
			code = cd
		}
		c.cmd("RCPT TO:<"+r+">", code)
	}
	return c
}

// lmtpReplies reads exactly n replies and checks that nothing more comes: the
// server stays silent, then NOOP's reply is the next one (unless closing: then the
// connection closes after the n replies).
func lmtpReplies(t *testing.T, c *client, n int, closing bool) []bdatReply {
	t.Helper()
	var got []bdatReply
	for i := 0; i < n; i++ {
		got = append(got, c.bdatReplyOf())
	}
	if closing {
		c.expectClosed()
		return got
	}
	c.expectSilent(50 * time.Millisecond)
	c.send("NOOP\r\n")
	noop := c.bdatReplyOf()
	require.Contains(t, []bdatReply{{250, "OK"}, {250, "2.0.0 OK"}}, noop, "NOOP's reply must be the next one")
	return got
}

// lmtpTransfers are the two ways to send the message.
var lmtpTransfers = []struct {
	name string
	send func(c *client)
}{
	{"DATA", func(c *client) {
		c.cmd("DATA", 354)
		c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
	}},
	{"BDAT", func(c *client) {
		c.send(bdatCmd(12, false) + "Subject: x\r\n")
		require.Equal(c.t, bdatReply{250, "12 octets received"}, c.bdatReplyOf(), "a non-LAST chunk gets one reply")
		c.send(bdatCmd(8, true) + "\r\nbody\r\n")
	}},
}

func TestLMTPGreeting(t *testing.T) {
	addr := serve(t, &Server{LMTP: true, Chunking: true})
	c := dialGreeted(t, addr)
	c.protoCmd("MAIL FROM:<a@example.com>", 503, protoText503)
	c.protoCmd("HELO client.example", 500, protoText500)
	c.protoCmd("EHLO client.example", 500, protoText500)
	c.protoCmd("LHLO client.example", 250, strings.Join([]string{protoTextEhloFirst, protoTextEhloSize, "CHUNKING", "BINARYMIME", "OK"}, "\n"))
	c.protoCmd("lhlo client.example", 250, strings.Join([]string{protoTextEhloFirst, protoTextEhloSize, "CHUNKING", "BINARYMIME", "OK"}, "\n"))
	c.protoCmd("LHLO", 501, protoText501)
	c.protoCmd("EHLO client.example", 500, protoText500)
	c.protoCmd("QUIT", 221, protoText221)

	t.Run("SMTP server", func(t *testing.T) {
		addr := serve(t, &Server{})
		c := dialGreeted(t, addr)
		c.protoCmd("LHLO client.example", 500, protoText500)
		c.cmd("EHLO client.example", 250)
	})
}

// TestLMTPRepliesPerRecipient: after the message, one reply per accepted recipient
// in RCPT order, by DATA and by BDAT LAST.
func TestLMTPRepliesPerRecipient(t *testing.T) {
	rcpts := []string{"one@example.com", "two@example.com", "three@example.com"}
	refuseTwo := func(_ *Session, rcpt string) error {
		if rcpt == "two@example.com" {
			return SMTPError550
		}
		return nil
	}
	cases := []struct {
		name     string
		perRcpt  func(s *Session, rcpt string) error // nil: no RecipientHandler
		plain    bool
		message  func(s *Session) error
		rcptCode map[string]int // RCPT replies other than 250
		want     []bdatReply
		closing  bool
		calls    []string
	}{
		{name: "no RecipientHandler: all 250", plain: true,
			want: []bdatReply{lmtpOK(rcpts[0]), lmtpOK(rcpts[1]), lmtpOK(rcpts[2])}},
		{name: "RecipientHandler accepting all",
			want:  []bdatReply{lmtpOK(rcpts[0]), lmtpOK(rcpts[1]), lmtpOK(rcpts[2])},
			calls: rcpts},
		{name: "RecipientHandler refusing the second", perRcpt: refuseTwo,
			want:  []bdatReply{lmtpOK(rcpts[0]), {550, SMTPError550.Message}, lmtpOK(rcpts[2])},
			calls: rcpts},
		{name: "RecipientHandler: own codes, a plain error is 451", perRcpt: func(_ *Session, rcpt string) error {
			switch rcpt {
			case rcpts[0]:
				return &SMTPError{Code: 452, EnhancedCode: "4.2.2", Message: "Mailbox full"}
			case rcpts[1]:
				return errors.New("disk on fire")
			}
			return &SMTPError{Code: 250, Message: "Stored in INBOX"}
		}, want: []bdatReply{{452, "Mailbox full"}, {451, protoText451}, {250, "Stored in INBOX"}}, calls: rcpts},
		{name: "OnMessage error: the same reply for each", message: func(*Session) error { return SMTPError554 },
			want: []bdatReply{{554, "Transaction failed"}, {554, "Transaction failed"}, {554, "Transaction failed"}}},
		{name: "OnMessage error without RecipientHandler", plain: true, message: func(*Session) error { return errors.New("x") },
			want: []bdatReply{{451, protoText451}, {451, protoText451}, {451, protoText451}}},
		{name: "a recipient refused at RCPT is not counted", plain: true, rcptCode: map[string]int{rcpts[1]: 550},
			want: []bdatReply{lmtpOK(rcpts[0]), lmtpOK(rcpts[2])}},
		{name: "refused at RCPT, RecipientHandler refusing the second", perRcpt: refuseTwo, rcptCode: map[string]int{rcpts[0]: 550},
			want: []bdatReply{{550, SMTPError550.Message}, lmtpOK(rcpts[2])}, calls: rcpts[1:]},
		{name: "421 for one recipient: every recipient answered, then closed", perRcpt: func(_ *Session, rcpt string) error {
			if rcpt == rcpts[1] {
				return SMTPError421
			}
			return nil
		}, want: []bdatReply{lmtpOK(rcpts[0]), {421, protoText421}, lmtpOK(rcpts[2])}, closing: true, calls: rcpts},
		{name: "421 from OnMessage: one 421, closed", message: func(*Session) error { return SMTPError421 },
			want: []bdatReply{{421, protoText421}}, closing: true},
	}
	for _, tr := range lmtpTransfers {
		for _, tc := range cases {
			t.Run(tr.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				bh := newBdatHandler()
				bh.message = tc.message
				bh.rcpt = func(_ *Session, to string) (string, error) {
					if tc.rcptCode[to] == 550 {
						return "", SMTPError550
					}
					return "", nil
				}
				lh := &lmtpHandler{bdatHandler: bh, perRcpt: tc.perRcpt}
				var h Handler = lh
				if tc.plain {
					h = lmtpPlain{bh}
				}
				addr := serve(t, &Server{Handler: h, LMTP: true, Chunking: true})
				helo := bdatHelo()
				c := lmtpSession(t, addr, helo, tc.rcptCode, rcpts)
				tr.send(c)
				got := lmtpReplies(t, c, len(tc.want), tc.closing)
				require.Equal(t, tc.want, got)
				if !tc.plain {
					require.Equal(t, tc.calls, lh.recipientCalls(), "OnMessageRecipient once per accepted recipient, in RCPT order")
				}
				if tc.message == nil {
					msgs := bh.take(helo)
					require.Len(t, msgs, 1)
					require.Equal(t, "Subject: x\r\n\r\nbody\r\n", msgs[0].Data)
				}
			})
		}
	}
}

// TestLMTPSecondMessage: the session goes on after the per-recipient replies; the
// next transaction's replies are its own.
func TestLMTPSecondMessage(t *testing.T) {
	h := &lmtpHandler{bdatHandler: newBdatHandler()}
	addr := serve(t, &Server{Handler: h, LMTP: true, Chunking: true, Pipelining: true})
	helo := bdatHelo()
	c := dialGreeted(t, addr)
	c.cmd("LHLO "+helo, 250)
	// Two transactions pipelined in one write: 2 + 1 replies after their ends.
	c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<y@example.com>\r\nDATA\r\n")
	c.expect(250)
	c.expect(250)
	c.expect(250)
	c.expect(354)
	c.send("one\r\n.\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<z@example.com>\r\n" + bdatCmd(5, true) + "two\r\n")
	got := lmtpReplies(t, c, 5, false)
	require.Equal(t, []bdatReply{lmtpOK("x@example.com"), lmtpOK("y@example.com"), {250, protoTextOK}, {250, protoTextOK},
		lmtpOK("z@example.com")}, got)
	msgs := h.take(helo)
	require.Len(t, msgs, 2)
	require.Equal(t, "one\r\n", msgs[0].Data)
	require.Equal(t, "two\r\n", msgs[1].Data)
}

// TestLMTPNoRecipients: DATA or BDAT without an accepted recipient is one 503.
func TestLMTPNoRecipients(t *testing.T) {
	h := &lmtpHandler{bdatHandler: newBdatHandler()}
	h.rcpt = func(*Session, string) (string, error) { return "", SMTPError550 }
	addr := serve(t, &Server{Handler: h, LMTP: true, Chunking: true})
	c := lmtpSession(t, addr, bdatHelo(), map[string]int{"x@example.com": 550}, []string{"x@example.com"})
	c.protoCmd("DATA", 503, protoText503)
	c.send(bdatCmd(3, true) + "x\r\n")
	require.Equal(t, []bdatReply{{503, protoText503}}, lmtpReplies(t, c, 1, false))
}

// TestLMTPBdatFailures: a non-LAST chunk is answered once even when it fails (RFC
// 2033 4.3: only BDAT LAST gets a reply per recipient); a failure known at BDAT
// LAST is answered once per recipient.
func TestLMTPBdatFailures(t *testing.T) {
	rcpts := []string{"one@example.com", "two@example.com", "three@example.com"}
	t.Run("hook error in a middle chunk", func(t *testing.T) {
		h := &lmtpHandler{bdatHandler: newBdatHandler()}
		h.dataHdrs = func(*Session) error { return SMTPError554 }
		addr := serve(t, &Server{Handler: h, LMTP: true, Chunking: true})
		c := lmtpSession(t, addr, bdatHelo(), nil, rcpts)
		c.send(bdatCmd(6, false) + "A:\r\n\r\n")
		require.Equal(t, []bdatReply{{554, "Transaction failed"}}, lmtpReplies(t, c, 1, false))
		c.send(bdatCmd(3, true) + "x\r\n")
		require.Equal(t, []bdatReply{{503, protoText503}}, lmtpReplies(t, c, 1, false))
	})
	t.Run("CRLFStrict bare LF in a middle chunk", func(t *testing.T) {
		h := &lmtpHandler{bdatHandler: newBdatHandler()}
		addr := serve(t, &Server{Handler: h, LMTP: true, Chunking: true, CRLFMode: CRLFStrict})
		c := lmtpSession(t, addr, bdatHelo(), nil, rcpts)
		c.send(bdatCmd(4, false) + "a\nb\r")
		require.Equal(t, []bdatReply{{500, bdatTextCRLF}}, lmtpReplies(t, c, 1, false))
	})
	t.Run("CRLFStrict bare CR at the LAST end", func(t *testing.T) {
		h := &lmtpHandler{bdatHandler: newBdatHandler()}
		addr := serve(t, &Server{Handler: h, LMTP: true, Chunking: true, CRLFMode: CRLFStrict})
		c := lmtpSession(t, addr, bdatHelo(), nil, rcpts)
		c.send(bdatCmd(4, false) + "a\r\nb" + bdatCmd(1, true) + "\r")
		require.Equal(t, bdatReply{250, "4 octets received"}, c.bdatReplyOf())
		require.Equal(t, []bdatReply{{500, bdatTextCRLF}, {500, bdatTextCRLF}, {500, bdatTextCRLF}}, lmtpReplies(t, c, 3, false))
	})
	t.Run("middle chunk over MaxMessageSize", func(t *testing.T) {
		h := &lmtpHandler{bdatHandler: newBdatHandler()}
		addr := serve(t, &Server{Handler: h, LMTP: true, Chunking: true, MaxMessageSize: 10})
		c := lmtpSession(t, addr, bdatHelo(), nil, rcpts)
		c.send(bdatCmd(20, false) + strings.Repeat("x", 20))
		require.Equal(t, []bdatReply{{552, protoText552}}, lmtpReplies(t, c, 1, false))
	})
	t.Run("LAST chunk over MaxMessageSize", func(t *testing.T) {
		h := &lmtpHandler{bdatHandler: newBdatHandler()}
		addr := serve(t, &Server{Handler: h, LMTP: true, Chunking: true, MaxMessageSize: 10})
		c := lmtpSession(t, addr, bdatHelo(), nil, rcpts)
		c.send(bdatCmd(6, false) + "abc\r\n\n" + bdatCmd(20, true) + strings.Repeat("x", 20))
		require.Equal(t, bdatReply{250, "6 octets received"}, c.bdatReplyOf())
		require.Equal(t, []bdatReply{{552, protoText552}, {552, protoText552}, {552, protoText552}}, lmtpReplies(t, c, 3, false))
		require.Empty(t, h.recipientCalls())
	})
	t.Run("LAST chunk stored over MaxMessageSize", func(t *testing.T) {
		h := &lmtpHandler{bdatHandler: newBdatHandler()}
		addr := serve(t, &Server{Handler: h, LMTP: true, Chunking: true, MaxMessageSize: 10})
		c := lmtpSession(t, addr, bdatHelo(), nil, rcpts)
		c.send(bdatCmd(8, true) + "\n\n\n\n\n\n\n\n") // 8 octets, 16 stored (CRLFEnsure)
		require.Equal(t, []bdatReply{{552, protoText552}, {552, protoText552}, {552, protoText552}}, lmtpReplies(t, c, 3, false))
	})
}

// TestLMTPEnhancedCodes: the per-recipient replies carry codes with
// EnhancedStatusCodes on.
func TestLMTPEnhancedCodes(t *testing.T) {
	h := &lmtpHandler{bdatHandler: newBdatHandler()}
	h.perRcpt = func(_ *Session, rcpt string) error {
		if rcpt == "two@example.com" {
			return &SMTPError{Code: 550, Message: "No such mailbox"}
		}
		return nil
	}
	addr := serve(t, &Server{Handler: h, LMTP: true, EnhancedStatusCodes: true})
	c := lmtpSession(t, addr, bdatHelo(), nil, []string{"one@example.com", "two@example.com"})
	c.cmd("DATA", 354)
	c.send("x\r\n.\r\n")
	got := lmtpReplies(t, c, 2, false)
	require.Equal(t, []bdatReply{{250, "2.0.0 OK <one@example.com> delivered"}, {550, "5.0.0 No such mailbox"}}, got)
	require.Equal(t, fmt.Sprint(h.recipientCalls()), "[one@example.com two@example.com]")
}
