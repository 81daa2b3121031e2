package smtpd

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAuthSecretsNotLogged(t *testing.T) {
	secrets := []string{
		authPass, b64(authPass), authWrong, b64(authWrong),
		plainResp("", authUser, authPass), plainResp("", authUser, authWrong),
		plainResp("bob", authUser, authPass),
	}
	type step = authStep
	for _, tc := range []struct {
		name     string
		mod      func(*Server)
		steps    []step
		rawWrite string // sent in one write after the steps
		replies  int    // replies to read after rawWrite
	}{
		{name: "PLAIN initial response", steps: []step{
			{"AUTH PLAIN " + plainResp("", authUser, authWrong), 535},
			{"AUTH PLAIN " + plainResp("bob", authUser, authPass), 235}}},
		{name: "PLAIN after prompt", steps: []step{
			{"AUTH PLAIN", 334}, {plainResp("", authUser, authWrong), 535},
			{"AUTH PLAIN", 334}, {plainResp("", authUser, authPass), 235}}},
		{name: "LOGIN", steps: []step{
			{"AUTH LOGIN", 334}, {b64(authUser), 334}, {b64(authWrong), 535},
			{"AUTH LOGIN", 334}, {b64(authUser), 334}, {b64(authPass), 235}}},
		{name: "LOGIN with user name", steps: []step{
			{"AUTH LOGIN " + b64(authUser), 334}, {b64(authWrong), 535},
			{"AUTH LOGIN " + b64(authUser), 334}, {b64(authPass), 235}}},
		{name: "LOGIN password line pipelined", steps: []step{
			{"AUTH LOGIN " + b64(authUser), 334}},
			rawWrite: b64(authWrong) + "\r\nNOOP\r\n", replies: 2},
		// A refused line is still a secret: the pipelining rule (pipelining off) and
		// CRLFStrict refuse the AUTH line before it is dispatched.
		{name: "AUTH line refused by the pipelining rule",
			rawWrite: "AUTH PLAIN " + plainResp("", authUser, authPass) + "\r\nNOOP\r\n", replies: 2},
		{name: "AUTH line with a bare LF in CRLFStrict", mod: func(s *Server) { s.CRLFMode = CRLFStrict },
			rawWrite: "AUTH PLAIN " + plainResp("", authUser, authWrong) + "\n", replies: 1},
		// Separators other than one space: the server still reads the response
		// (or refuses the line), and the log must not show it either way.
		{name: "tab before the response",
			rawWrite: "AUTH PLAIN\t" + plainResp("", authUser, authWrong) + "\r\n", replies: 1},
		{name: "tabs only", rawWrite: "AUTH\tPLAIN\t" + plainResp("", authUser, authWrong) + "\r\n", replies: 1},
		{name: "leading space", rawWrite: " AUTH PLAIN " + plainResp("", authUser, authWrong) + "\r\n", replies: 1},
		{name: "two spaces", rawWrite: "AUTH  PLAIN  " + plainResp("", authUser, authWrong) + "\r\n", replies: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf lockedBuffer
			h := newSecHandler()
			srv := &Server{Handler: h, AuthMode: AuthOptional, MaxAuthFailures: -1,
				Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			if tc.mod != nil {
				tc.mod(srv)
			}
			addr := serve(t, srv)
			c := dialGreeted(t, addr)
			c.ehloLines("x")
			for _, st := range tc.steps {
				c.cmd(st.send, st.code)
			}
			if tc.rawWrite != "" {
				c.send(tc.rawWrite)
				for i := 0; i < tc.replies; i++ {
					c.reply()
				}
			}
			c.cmd("QUIT", 221)
			c.expectClosed()
			h.waitDisconnects(t, 1)
			out := buf.String()
			// The log is really at Debug level and traces the session.
			require.Contains(t, out, "QUIT")
			require.Contains(t, out, "AUTH")
			for _, s := range secrets {
				require.NotContains(t, out, s, "a secret reached the log")
			}
		})
	}
}

// After a refused AUTH (503 inside a transaction, or 500 for a line sent ahead of
// its turn) the client's base64 credentials arrive as command lines; they used to
// be traced.
func TestAuthRefusedCredentialsNotLogged(t *testing.T) {
	const user, pass = "refused-user", "Refu5ed-Secret!"
	tests := []struct {
		name    string
		steps   []string // one write each
		replies []int    // replies per step (codes, or 0 for any)
	}{
		{
			name:    "AUTH LOGIN refused inside a transaction",
			steps:   []string{"EHLO x\r\n", "MAIL FROM:<a@b.example>\r\n", "AUTH LOGIN\r\n", b64(pass) + "\r\n"},
			replies: []int{250, 250, 503, 500},
		},
		{
			name:    "AUTH LOGIN with both responses in one write, pipelining off",
			steps:   []string{"EHLO x\r\n", "AUTH LOGIN\r\n" + b64(user) + "\r\n" + b64(pass) + "\r\n"},
			replies: []int{250, 0, 0, 0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs lockedBuffer
			srv := &Server{AuthMode: AuthOptional,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			c := dialGreeted(t, serve(t, srv))
			r := 0
			for _, step := range tc.steps {
				c.send(step)
				for range strings.Count(step, "\n") {
					code, text := c.reply()
					if want := tc.replies[r]; want != 0 {
						require.Equal(t, want, code, "reply %d: %q", r+1, text)
					}
					r++
				}
			}
			c.cmd("QUIT", 221) // every line above was traced before its reply
			out := logs.String()
			require.Contains(t, out, "AUTH LOGIN", "the debug trace is not captured")
			require.NotContains(t, out, b64(pass))
			require.NotContains(t, out, pass)
		})
	}
}
