package smtpd

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	text235 = "OK"
	text535 = "Authentication credentials invalid"
	text538 = "Encryption required for requested authentication mechanism"
)

func TestAuthForbidden(t *testing.T) {
	h := newSecHandler()
	addr := authServe(t, AuthForbidden, h, nil)
	c := dialGreeted(t, addr)
	for _, l := range c.ehloLines("client.example") {
		require.NotContains(t, strings.ToUpper(l), "AUTH", "EHLO must not offer AUTH when forbidden")
	}
	for _, cmd := range []string{
		"AUTH PLAIN",
		"AUTH PLAIN " + plainResp("", authUser, authPass),
		"AUTH LOGIN",
		"AUTH LOGIN " + b64(authUser),
		"AUTH CRAM-MD5",
		"AUTH",
		"auth plain",
	} {
		c.send(cmd + "\r\n")
		code, text := c.reply()
		require.Equal(t, 500, code, "%s: %q (never 334)", cmd, text)
		// No exchange was started: the next command is a command.
		c.cmd("NOOP", 250)
	}
	require.Empty(t, h.authCalls())
}

func TestAuthAdvertised(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode AuthMode
	}{{"optional", AuthOptional}, {"required", AuthRequired}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHandler()
			addr := authServe(t, tc.mode, h, nil)
			c := dialGreeted(t, addr)
			lines := c.ehloLines("client.example")
			require.Contains(t, lines, "AUTH LOGIN PLAIN")
			require.NotContains(t, lines, "STARTTLS")
			require.Equal(t, "OK", lines[len(lines)-1])
			// Plaintext AUTH works: TLS is forbidden, the operator chose it.
			require.Equal(t, text235, c.cmd("AUTH PLAIN "+plainResp("", authUser, authPass), 235))
		})
	}
}

func TestAuthRequired(t *testing.T) {
	t.Run("refused before AUTH", func(t *testing.T) {
		h := newSecHandler()
		addr := authServe(t, AuthRequired, h, nil)
		c := dialGreeted(t, addr)
		c.ehloLines("client.example")
		require.Equal(t, protoText530Auth, c.cmd("MAIL FROM:<a@example.com>", 530))
		// MAIL was refused, so RCPT and DATA are out of sequence (state is checked first).
		c.cmd("RCPT TO:<b@example.com>", 503)
		c.cmd("DATA", 503)
		require.Equal(t, text535, c.cmd("AUTH PLAIN "+plainResp("", authUser, authWrong), 535))
		require.Equal(t, protoText530Auth, c.cmd("MAIL FROM:<a@example.com>", 530), "a failed AUTH does not authenticate")
		c.cmd("AUTH PLAIN "+plainResp("", authUser, authPass), 235)
		c.sendMessage("a@example.com", "b@example.com")
		c.cmd("QUIT", 221)
		snap := h.snapshots(t, 1)[0]
		require.True(t, snap.Authenticated)
		require.Equal(t, authUser, snap.AuthenticationID)
		require.Equal(t, []string{"a@example.com"}, h.mailCalls(), "OnMailFrom runs only for the accepted MAIL")
	})
	// RCPT and DATA have the 530 check too; they reach it when a hook has taken the
	// authentication back during the transaction.
	for _, tc := range []struct {
		name  string
		steps []authStep
	}{
		{"RCPT", []authStep{{"MAIL FROM:<a@example.com>", 250}, {"RCPT TO:<b@example.com>", 530}}},
		{"DATA", []authStep{{"MAIL FROM:<a@example.com>", 250}, {"RCPT TO:<deauth@example.com>", 250}, {"DATA", 530}}},
	} {
		t.Run(tc.name+" after de-authentication by a hook", func(t *testing.T) {
			h := &deauthHandler{secHandler: newSecHandler(), rcpt: tc.name == "DATA"}
			addr := serve(t, &Server{Handler: h, AuthMode: AuthRequired})
			c := dialGreeted(t, addr)
			c.ehloLines("client.example")
			c.cmd("AUTH PLAIN "+plainResp("", authUser, authPass), 235)
			for _, st := range tc.steps {
				text := c.cmd(st.send, st.code)
				if st.code == 530 {
					require.Equal(t, protoText530Auth, text)
				}
			}
		})
	}
}

// deauthHandler clears the authentication in OnMailFrom (or, with rcpt, in OnRcptTo).
type deauthHandler struct {
	*secHandler
	rcpt bool
}

func (h *deauthHandler) OnMailFrom(s *Session, from string) (string, error) {
	if !h.rcpt {
		s.AuthenticatedAt = time.Time{}
	}
	return "", nil
}

func (h *deauthHandler) OnRcptTo(s *Session, to string) (string, error) {
	if h.rcpt {
		s.AuthenticatedAt = time.Time{}
	}
	return "", nil
}

// authStep is one command line and the reply code it must get.
type authStep struct {
	send string
	code int
}

func TestAuthExchanges(t *testing.T) {
	good := plainResp("", authUser, authPass)
	type step struct {
		send string
		code int
		raw  string // when set: the exact reply line, CRLF included
		text string // when set: the exact reply text
	}
	for _, tc := range []struct {
		name  string
		steps []step
		calls []secCall // OnAuth calls
		ok    bool      // authenticated at the end
	}{
		{"PLAIN initial response", []step{{send: "AUTH PLAIN " + good, code: 235, text: text235}},
			[]secCall{{"", authUser, authPass}}, true},
		{"PLAIN lower case", []step{{send: "auth plain " + good, code: 235}},
			[]secCall{{"", authUser, authPass}}, true},
		{"PLAIN without initial response", []step{
			{send: "AUTH PLAIN", raw: "334 \r\n"},
			{send: good, code: 235, text: text235}},
			[]secCall{{"", authUser, authPass}}, true},
		{"PLAIN wrong password", []step{{send: "AUTH PLAIN " + plainResp("", authUser, authWrong), code: 535, text: text535}},
			[]secCall{{"", authUser, authWrong}}, false},
		{"PLAIN unknown user", []step{{send: "AUTH PLAIN " + plainResp("", "mallory", authPass), code: 535, text: text535}},
			[]secCall{{"", "mallory", authPass}}, false},
		{"PLAIN wrong password after prompt", []step{
			{send: "AUTH PLAIN", raw: "334 \r\n"},
			{send: plainResp("", authUser, authWrong), code: 535, text: text535}},
			[]secCall{{"", authUser, authWrong}}, false},
		{"PLAIN =", []step{{send: "AUTH PLAIN =", code: 501}}, nil, false},
		{"PLAIN = after prompt", []step{{send: "AUTH PLAIN", raw: "334 \r\n"}, {send: "=", code: 501}}, nil, false},
		{"PLAIN cancelled", []step{{send: "AUTH PLAIN", raw: "334 \r\n"}, {send: "*", code: 501}}, nil, false},
		{"PLAIN bad base64", []step{{send: "AUTH PLAIN !!not-base64!!", code: 501}}, nil, false},
		{"PLAIN bad base64 after prompt", []step{{send: "AUTH PLAIN", raw: "334 \r\n"}, {send: "@@@@", code: 501}}, nil, false},
		{"PLAIN two parts", []step{{send: "AUTH PLAIN " + b64(authUser+"\x00"+authPass), code: 501}}, nil, false},
		{"PLAIN four parts", []step{{send: "AUTH PLAIN " + b64("\x00"+authUser+"\x00"+authPass+"\x00x"), code: 501}}, nil, false},
		{"LOGIN", []step{
			{send: "AUTH LOGIN", raw: "334 VXNlcm5hbWU6\r\n"},
			{send: b64(authUser), raw: "334 UGFzc3dvcmQ6\r\n"},
			{send: b64(authPass), code: 235, text: text235}},
			[]secCall{{"", authUser, authPass}}, true},
		{"LOGIN with the user name", []step{
			{send: "AUTH LOGIN " + b64(authUser), raw: "334 UGFzc3dvcmQ6\r\n"},
			{send: b64(authPass), code: 235, text: text235}},
			[]secCall{{"", authUser, authPass}}, true},
		{"LOGIN wrong password", []step{
			{send: "AUTH LOGIN", raw: "334 VXNlcm5hbWU6\r\n"},
			{send: b64(authUser), raw: "334 UGFzc3dvcmQ6\r\n"},
			{send: b64(authWrong), code: 535, text: text535}},
			[]secCall{{"", authUser, authWrong}}, false},
		{"LOGIN unknown user", []step{
			{send: "AUTH LOGIN " + b64("mallory"), raw: "334 UGFzc3dvcmQ6\r\n"},
			{send: b64(authPass), code: 535, text: text535}},
			[]secCall{{"", "mallory", authPass}}, false},
		{"LOGIN cancelled at the user prompt", []step{
			{send: "AUTH LOGIN", raw: "334 VXNlcm5hbWU6\r\n"},
			{send: "*", code: 501}}, nil, false},
		{"LOGIN cancelled at the password prompt", []step{
			{send: "AUTH LOGIN", raw: "334 VXNlcm5hbWU6\r\n"},
			{send: b64(authUser), raw: "334 UGFzc3dvcmQ6\r\n"},
			{send: "*", code: 501}}, nil, false},
		{"LOGIN cancelled after the user name", []step{
			{send: "AUTH LOGIN " + b64(authUser), raw: "334 UGFzc3dvcmQ6\r\n"},
			{send: "*", code: 501}}, nil, false},
		{"LOGIN bad base64 user", []step{
			{send: "AUTH LOGIN", raw: "334 VXNlcm5hbWU6\r\n"},
			{send: "%%%", code: 501}}, nil, false},
		{"LOGIN bad base64 password", []step{
			{send: "AUTH LOGIN", raw: "334 VXNlcm5hbWU6\r\n"},
			{send: b64(authUser), raw: "334 UGFzc3dvcmQ6\r\n"},
			{send: "%%%", code: 501}}, nil, false},
		{"LOGIN bad base64 initial", []step{{send: "AUTH LOGIN %%%", code: 501}}, nil, false},
		{"unknown mechanism", []step{{send: "AUTH CRAM-MD5", code: 504}}, nil, false},
		{"unknown mechanism with response", []step{{send: "AUTH XOAUTH2 " + b64("x"), code: 504}}, nil, false},
		{"no mechanism", []step{{send: "AUTH", code: 501}}, nil, false},
		{"too many words", []step{{send: "AUTH PLAIN " + good + " x", code: 501}}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHandler()
			addr := authServe(t, AuthRequired, h, nil)
			c := dialGreeted(t, addr)
			c.ehloLines("client.example")
			for _, st := range tc.steps {
				if st.raw != "" {
					c.send(st.send + "\r\n")
					require.Equal(t, st.raw, c.rawLine(), "reply to %q", st.send)
					continue
				}
				text := c.cmd(st.send, st.code)
				if st.text != "" {
					require.Equal(t, st.text, text)
				}
			}
			require.Equal(t, tc.calls, h.authCalls())
			// No line was swallowed: the next command is answered as a command.
			c.cmd("NOOP", 250)
			if tc.ok {
				c.sendMessage("a@example.com", "b@example.com")
				snap := h.snapshots(t, 1)[0]
				require.Equal(t, authUser, snap.AuthenticationID)
				require.Equal(t, authUser, snap.AuthorizationID)
				return
			}
			c.cmd("MAIL FROM:<a@example.com>", 530)
			// A failed or cancelled exchange leaves AUTH available.
			c.cmd("AUTH PLAIN "+good, 235)
			c.cmd("MAIL FROM:<a@example.com>", 250)
		})
	}
}

func TestAuthSequence(t *testing.T) {
	good := "AUTH PLAIN " + plainResp("", authUser, authPass)
	for _, tc := range []struct {
		name  string
		steps []authStep
	}{
		{"before EHLO", []authStep{{good, 503}, {"AUTH LOGIN", 503}, {"EHLO x", 250}, {good, 235}}},
		{"twice", []authStep{{"EHLO x", 250}, {good, 235}, {good, 503}, {"AUTH LOGIN", 503}}},
		{"inside a transaction", []authStep{{"EHLO x", 250}, {"MAIL FROM:<a@b.example>", 250}, {good, 503},
			{"RCPT TO:<c@d.example>", 250}, {good, 503}, {"RSET", 250}, {good, 235}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHandler()
			addr := authServe(t, AuthOptional, h, nil)
			c := dialGreeted(t, addr)
			for _, st := range tc.steps {
				c.cmd(st.send, st.code)
			}
			// No 503 exchange prompted for anything: the session goes on.
			c.cmd("NOOP", 250)
		})
	}
}

func TestAuthBase64Alphabet(t *testing.T) {
	plain := plainResp("", authUser, authPass)
	login := b64(authPass)
	for _, enc := range []string{plain, login} {
		require.True(t, strings.ContainsAny(enc, "+") && strings.ContainsAny(enc, "/"),
			"test credential must encode to base64 with '+' and '/': %s", enc)
	}
	for _, tc := range []struct {
		name  string
		steps []authStep
	}{
		{"PLAIN", []authStep{{"AUTH PLAIN " + plain, 235}}},
		{"PLAIN after prompt", []authStep{{"AUTH PLAIN", 334}, {plain, 235}}},
		{"LOGIN", []authStep{{"AUTH LOGIN", 334}, {b64(authUser), 334}, {login, 235}}},
		// Unpadded base64 is accepted as well.
		{"PLAIN unpadded", []authStep{{"AUTH PLAIN " + strings.TrimRight(plain, "="), 235}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHandler()
			addr := authServe(t, AuthRequired, h, nil)
			c := dialGreeted(t, addr)
			c.ehloLines("x")
			for _, st := range tc.steps {
				c.cmd(st.send, st.code)
			}
			require.Equal(t, []secCall{{"", authUser, authPass}}, h.authCalls())
		})
	}
}

func TestAuthAuthorizationID(t *testing.T) {
	for _, tc := range []struct {
		name     string
		authz    string // requested in PLAIN
		ret      string // OnAuth's return
		login    bool   // use LOGIN (no authorization identity)
		wantAuth string // AuthorizationID
	}{
		{"none requested", "", "", false, authUser},
		{"requested", "bob", "", false, "bob"},
		{"returned wins over requested", "bob", "carol", false, "carol"},
		{"returned", "", "carol", false, "carol"},
		{"LOGIN", "", "", true, authUser},
		{"LOGIN returned", "", "carol", true, "carol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHandler()
			h.ret = tc.ret
			addr := authServe(t, AuthRequired, h, nil)
			c := dialGreeted(t, addr)
			c.ehloLines("x")
			before := time.Now()
			if tc.login {
				c.cmd("AUTH LOGIN "+b64(authUser), 334)
				c.cmd(b64(authPass), 235)
			} else {
				c.cmd("AUTH PLAIN "+plainResp(tc.authz, authUser, authPass), 235)
			}
			c.cmd("RSET", 250) // authentication survives RSET
			c.cmd("EHLO again", 250)
			c.sendMessage("a@example.com", "b@example.com")
			require.Equal(t, []secCall{{tc.authz, authUser, authPass}}, h.authCalls(),
				"OnAuth gets the requested authorization identity as sent")
			snap := h.snapshots(t, 1)[0]
			require.Equal(t, tc.wantAuth, snap.AuthorizationID)
			require.Equal(t, authUser, snap.AuthenticationID)
			require.True(t, snap.Authenticated)
			require.False(t, snap.AuthenticatedAt.Before(before.Add(-time.Second)), "AuthenticatedAt %v", snap.AuthenticatedAt)
			require.False(t, snap.AuthenticatedAt.After(time.Now()))
			require.False(t, snap.Encrypted)
			require.False(t, snap.TLSOK)
		})
	}
	t.Run("foreign authorization identity is not granted by itself", func(t *testing.T) {
		h := newSecHandler()
		addr := authServe(t, AuthRequired, h, nil)
		c := dialGreeted(t, addr)
		c.ehloLines("x")
		// The authorization identity is a valid user, the credentials are not.
		c.cmd("AUTH PLAIN "+plainResp(authUser, "mallory", "x"), 535)
		c.cmd("MAIL FROM:<a@example.com>", 530)
		require.Equal(t, []secCall{{authUser, "mallory", "x"}}, h.authCalls())
	})
}

func TestAuthLongResponse(t *testing.T) {
	// A 12,288-octet response line (RFC 4954 4): 9216 decoded octets.
	longPass := strings.Repeat("p", 9216-len("\x00"+authUser+"\x00"))
	resp := plainResp("", authUser, longPass)
	require.Len(t, resp, 12288)
	for _, tc := range []struct {
		name    string
		accept  string // the password OnAuth accepts
		initial bool
		code    int
	}{
		{"initial response accepted", longPass, true, 235},
		{"initial response refused", authPass, true, 535},
		{"after prompt accepted", longPass, false, 235},
		{"after prompt refused", authPass, false, 535},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHandler()
			h.pass = tc.accept
			addr := authServe(t, AuthRequired, h, nil)
			c := dialGreeted(t, addr)
			c.ehloLines("x")
			if tc.initial {
				c.cmd("AUTH PLAIN "+resp, tc.code)
			} else {
				c.cmd("AUTH PLAIN", 334)
				c.cmd(resp, tc.code)
			}
			calls := h.authCalls()
			require.Len(t, calls, 1)
			require.Equal(t, authUser, calls[0].Authc)
			require.Equal(t, longPass, calls[0].Password)
			c.cmd("NOOP", 250)
		})
	}
}
