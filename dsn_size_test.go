package smtpd

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// SIZE (RFC 1870, always on) and DSN (RFC 3461, the DSN option): the EHLO keywords,
// the MAIL and RCPT parameters, what is kept on the Envelope, and the replies to
// malformed, duplicate and over-limit values.

// dszEnvelope sends MAIL with mailParams and one RCPT per entry of rcpts (a
// recipient and its parameters), each expecting 250, then a one-line message by
// DATA, and returns the Envelope OnMessage saw.
func dszEnvelope(t *testing.T, h *bdatHandler, addr, mailParams string, rcpts ...string) Envelope {
	t.Helper()
	helo := bdatHelo()
	c := dialGreeted(t, addr)
	c.cmd("EHLO "+helo, 250)
	c.cmd("MAIL FROM:<a@example.com>"+mailParams, 250)
	for _, r := range rcpts {
		c.cmd("RCPT TO:"+r, 250)
	}
	c.cmd("DATA", 354)
	c.send("x\r\n.\r\n")
	c.expect(250)
	c.cmd("QUIT", 221)
	msgs := h.take(helo)
	require.Len(t, msgs, 1)
	return msgs[0].Env
}

func TestSizeEHLOKeyword(t *testing.T) {
	for _, tc := range []struct {
		max  int
		want string
	}{
		{0, "SIZE 33554432"},
		{1000, "SIZE 1000"},
		{-1, "SIZE"},
		{DefaultMaxMessageSize, "SIZE 33554432"},
	} {
		t.Run(fmt.Sprint(tc.max), func(t *testing.T) {
			addr := serve(t, &Server{MaxMessageSize: tc.max})
			c := dialGreeted(t, addr)
			lines := strings.Split(c.cmd("EHLO client.example", 250), "\n")
			require.Equal(t, []string{protoTextEhloFirst, tc.want, "OK"}, lines)
			c.protoCmd("HELO client.example", 250, protoTextHelo) // HELO lists nothing
		})
	}
}

// TestSizeParam: SIZE=n is a decimal number, kept in Envelope.Size (0 without it).
func TestSizeParam(t *testing.T) {
	h := newBdatHandler()
	addr := serve(t, &Server{Handler: h, MaxErrors: -1})
	for _, tc := range []struct {
		param string
		want  int
	}{
		{"", 0},
		{" SIZE=100", 100},
		{" size=100", 100},
		{" SIZE=0", 0},
		{" SIZE=0100", 100},
		{" SIZE=33554432", 33554432},
	} {
		t.Run(tc.param, func(t *testing.T) {
			env := dszEnvelope(t, h, addr, tc.param, "<b@example.com>")
			require.Equal(t, tc.want, env.Size)
		})
	}
	t.Run("malformed", func(t *testing.T) {
		c := dialGreeted(t, addr)
		c.cmd("EHLO client.example", 250)
		for _, p := range []string{"SIZE=abc", "SIZE=", "SIZE=-1", "SIZE", "SIZE=+1", "SIZE=1e3", "SIZE=1.5",
			"SIZE=0x10", "SIZE=10a", "SIZE=100 SIZE=100", "SIZE=1 size=2"} {
			c.protoCmd("MAIL FROM:<a@example.com> "+p, 501, protoText501)
		}
		c.protoCmd("RCPT TO:<b@example.com>", 503, protoText503) // no MAIL was accepted
		c.cmd("MAIL FROM:<a@example.com> SIZE=1", 250)
	})
}

// TestSizeOverLimitAtMail: a declared size over MaxMessageSize is 552 at MAIL, before
// OnMailFrom and any data; at the limit it is accepted. Unlimited: any size.
func TestSizeOverLimitAtMail(t *testing.T) {
	var mails atomic.Int32
	h := newBdatHandler()
	h.mail = func(*Session, string) (string, error) { mails.Add(1); return "", nil }
	addr := serve(t, &Server{Handler: h, MaxMessageSize: 1000})
	c := dialGreeted(t, addr)
	c.cmd("EHLO client.example", 250)
	c.protoCmd("MAIL FROM:<a@example.com> SIZE=1001", 552, protoText552)
	c.protoCmd("MAIL FROM:<a@example.com> SIZE=999999999999999999", 552, protoText552)
	require.Zero(t, mails.Load(), "OnMailFrom does not run for a refused size")
	c.protoCmd("RCPT TO:<b@example.com>", 503, protoText503)
	c.protoCmd("MAIL FROM:<a@example.com> SIZE=1000", 250, protoTextOK)
	require.EqualValues(t, 1, mails.Load())

	t.Run("enhanced codes", func(t *testing.T) {
		addr := serve(t, &Server{MaxMessageSize: 1000, EnhancedStatusCodes: true})
		c := dialGreeted(t, addr)
		c.cmd("EHLO client.example", 250)
		c.enhCmd("MAIL FROM:<a@example.com> SIZE=1001", "552 5.3.4 "+protoText552)
	})
	t.Run("unlimited", func(t *testing.T) {
		h := newBdatHandler()
		addr := serve(t, &Server{Handler: h, MaxMessageSize: -1})
		env := dszEnvelope(t, h, addr, " SIZE=999999999999", "<b@example.com>")
		require.Positive(t, env.Size)
	})
}

// TestSizeOverLimitInData: a message over MaxMessageSize is read to its end (no
// reply before it), discarded, and answered 552 at the final dot; nothing is
// delivered and the session goes on. With a SIZE that fits too.
func TestSizeOverLimitInData(t *testing.T) {
	for _, param := range []string{"", " SIZE=50"} {
		t.Run(param, func(t *testing.T) {
			h := newBdatHandler()
			addr := serve(t, &Server{Handler: h, MaxMessageSize: 100})
			helo := bdatHelo()
			c := dialGreeted(t, addr)
			c.cmd("EHLO "+helo, 250)
			c.cmd("MAIL FROM:<a@example.com>"+param, 250)
			c.cmd("RCPT TO:<b@example.com>", 250)
			c.cmd("DATA", 354)
			body := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz\r\n", 30) // 1140 bytes
			c.send(body)
			c.expectSilent(50 * time.Millisecond) // no reply before the end of data
			c.send("NOOP\r\n.\r\n")               // a command line inside the data is data
			c.protoExpect(552, protoText552)
			c.protoCmd("NOOP", 250, protoTextOK) // exactly one reply to the end of data
			c.protoCmd("RSET", 250, protoTextOK)
			require.Empty(t, h.take(helo))
		})
	}
}

// TestSizeLongDecimal: RFC 1870's size-value is 1*20DIGIT, so a 19- or 20-digit
// SIZE is a decimal number: over any limit it is 552 (DESIGN: "n over the limit:
// 552"), with no limit it is accepted (parseSize saturates; a BDAT size stays at
// most 18 digits).
func TestSizeLongDecimal(t *testing.T) {
	addr := serve(t, &Server{MaxMessageSize: 1000})
	c := dialGreeted(t, addr)
	c.cmd("EHLO client.example", 250)
	c.protoCmd("MAIL FROM:<a@example.com> SIZE=99999999999999999999", 552, protoText552)
	c.protoCmd("MAIL FROM:<a@example.com> SIZE=1000000000000000000", 552, protoText552)
	addr = serve(t, &Server{MaxMessageSize: -1})
	c = dialGreeted(t, addr)
	c.cmd("EHLO client.example", 250)
	c.cmd("MAIL FROM:<a@example.com> SIZE=99999999999999999999", 250)
}

// TestDSNOff: without the DSN option, its parameters are unknown (555) and EHLO
// does not list it.
func TestDSNOff(t *testing.T) {
	addr := serve(t, &Server{})
	c := dialGreeted(t, addr)
	require.NotContains(t, strings.Split(c.cmd("EHLO client.example", 250), "\n"), "DSN")
	for _, p := range []string{"RET=FULL", "RET=HDRS", "ENVID=abc", "RET=X"} {
		c.protoCmd("MAIL FROM:<a@example.com> "+p, 555, protoText555)
	}
	c.cmd("MAIL FROM:<a@example.com>", 250)
	for _, p := range []string{"NOTIFY=NEVER", "NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a+40b.example", "NOTIFY=BOGUS"} {
		c.protoCmd("RCPT TO:<b@example.com> "+p, 555, protoText555)
	}
	c.cmd("RCPT TO:<b@example.com>", 250)
}

// TestDSNKept: with DSN, RET, ENVID (xtext-decoded), NOTIFY and ORCPT (decoded) are
// kept on the Envelope, DSNRecipients[i] belonging to To[i].
func TestDSNKept(t *testing.T) {
	h := newBdatHandler()
	h.rcpt = func(_ *Session, to string) (string, error) {
		if strings.HasPrefix(to, "refused") {
			return "", SMTPError550
		}
		return "", nil
	}
	addr := serve(t, &Server{Handler: h, DSN: true})
	c := dialGreeted(t, addr)
	require.Contains(t, strings.Split(c.cmd("EHLO client.example", 250), "\n"), "DSN")

	env := dszEnvelope(t, h, addr, " RET=FULL ENVID=abc+2Bdef",
		"<x@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b.example",
		"<y@example.com> NOTIFY=NEVER",
		"<z@example.com>",
		"<w@example.com> ORCPT=utf-8;w+40example.com notify=delay,Success")
	require.Equal(t, "FULL", env.DSNRet)
	require.Equal(t, "abc+def", env.DSNEnvID)
	require.Equal(t, []string{"x@example.com", "y@example.com", "z@example.com", "w@example.com"}, env.To)
	require.Equal(t, []RecipientDSN{
		{Notify: []string{"SUCCESS", "FAILURE"}, ORcpt: "rfc822;a@b.example"},
		{Notify: []string{"NEVER"}},
		{},
		{Notify: []string{"DELAY", "SUCCESS"}, ORcpt: "utf-8;w@example.com"},
	}, env.DSNRecipients)

	env = dszEnvelope(t, h, addr, " ret=hdrs", "<x@example.com>")
	require.Equal(t, "HDRS", env.DSNRet)
	require.Empty(t, env.DSNEnvID)
	require.Equal(t, []RecipientDSN{{}}, env.DSNRecipients)

	env = dszEnvelope(t, h, addr, " ENVID="+strings.Repeat("e", 100), "<x@example.com>")
	require.Equal(t, strings.Repeat("e", 100), env.DSNEnvID, "100 characters is the longest ENVID")

	t.Run("a refused recipient keeps the indexes aligned", func(t *testing.T) {
		helo := bdatHelo()
		c := dialGreeted(t, addr)
		c.cmd("EHLO "+helo, 250)
		c.cmd("MAIL FROM:<a@example.com>", 250)
		c.cmd("RCPT TO:<x@example.com> NOTIFY=NEVER", 250)
		c.cmd("RCPT TO:<refused@example.com> NOTIFY=SUCCESS", 550)
		c.cmd("RCPT TO:<y@example.com> NOTIFY=BOGUS", 501)
		c.cmd("RCPT TO:<y@example.com> NOTIFY=FAILURE", 250)
		c.cmd("DATA", 354)
		c.send("x\r\n.\r\n")
		c.expect(250)
		msgs := h.take(helo)
		require.Len(t, msgs, 1)
		require.Equal(t, []string{"x@example.com", "y@example.com"}, msgs[0].Env.To)
		require.Equal(t, []RecipientDSN{{Notify: []string{"NEVER"}}, {Notify: []string{"FAILURE"}}}, msgs[0].Env.DSNRecipients)
	})
}

// TestDSNMalformed: each malformed or repeated DSN parameter is 501; the command is
// refused as a whole and the session goes on.
func TestDSNMalformed(t *testing.T) {
	addr := serve(t, &Server{DSN: true, MaxErrors: -1})
	c := dialGreeted(t, addr)
	c.cmd("EHLO client.example", 250)
	for _, p := range []string{
		"RET=X", "RET=", "RET", "RET=FULLX", "RET=FULL RET=HDRS", "RET=FULL ret=FULL",
		"ENVID=", "ENVID", "ENVID=" + strings.Repeat("e", 101), "ENVID=a+4g", "ENVID=a+4", "ENVID=a+",
		"ENVID=+2b", "ENVID=+00", "ENVID=+7F", "ENVID=\xc3\xa9", "ENVID=a ENVID=b",
		"RET=HDR\u017f", "RET=FUL\u212a", // Unicode case mapping is no ASCII case

	} {
		c.protoCmd("MAIL FROM:<a@example.com> "+p, 501, protoText501)
	}
	c.protoCmd("RCPT TO:<b@example.com>", 503, protoText503) // no MAIL was accepted
	c.cmd("MAIL FROM:<a@example.com>", 250)
	for _, p := range []string{
		"NOTIFY=NEVER,SUCCESS", "NOTIFY=SUCCESS,NEVER", "NOTIFY=NEVER,NEVER", "NOTIFY=BOGUS", "NOTIFY=",
		"NOTIFY", "NOTIFY=SUCCESS,SUCCESS", "NOTIFY=SUCCESS,,FAILURE", "NOTIFY=SUCCESS,", "NOTIFY=,SUCCESS",
		"NOTIFY=NEVER NOTIFY=NEVER", "NOTIFY=SUCCESS notify=FAILURE",
		"ORCPT=rfc822a@b.example", "ORCPT=;a@b.example", "ORCPT=rfc822;", "ORCPT=rfc822;a+4gb.example",
		"ORCPT=rfc822;a+4", "ORCPT=rfc_822;a@b.example", "ORCPT=", "ORCPT",
		"ORCPT=rfc822;a+0D+0AX-Injected:+20yes", "ORCPT=rfc822;a+00b", "ORCPT=rfc822;a+7Fb", // no control characters
		"NOTIFY=fa\u0131lure", "NOTIFY=\u017fUCCESS",
		"ORCPT=rfc822;" + strings.Repeat("a", 500),
		"ORCPT=rfc822;a@b.example ORCPT=rfc822;a@b.example",
	} {
		c.protoCmd("RCPT TO:<b@example.com> "+p, 501, protoText501)
	}
	c.protoCmd("DATA", 503, protoText503) // no RCPT was accepted
	c.cmd("RCPT TO:<b@example.com> NOTIFY=NEVER ORCPT=rfc822;b@example.com", 250)
}
