package smtpd

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAuthMaxFailures(t *testing.T) {
	wrong := "AUTH PLAIN " + plainResp("", authUser, authWrong)
	good := "AUTH PLAIN " + plainResp("", authUser, authPass)
	t.Run("default 3", func(t *testing.T) {
		h := newSecHandler()
		addr := authServe(t, AuthOptional, h, nil)
		c := dialGreeted(t, addr)
		c.ehloLines("x")
		require.Equal(t, text535, c.cmd(wrong, 535))
		require.Equal(t, text535, c.cmd(wrong, 535))
		c.cmd(wrong, 421)
		c.expectClosed()
		require.Len(t, h.authCalls(), 3)
	})
	t.Run("LOGIN failures count", func(t *testing.T) {
		h := newSecHandler()
		addr := authServe(t, AuthOptional, h, nil)
		c := dialGreeted(t, addr)
		c.ehloLines("x")
		for i := 0; i < 3; i++ {
			c.cmd("AUTH LOGIN "+b64(authUser), 334)
			code := 535
			if i == 2 {
				code = 421
			}
			c.cmd(b64(authWrong), code)
		}
		c.expectClosed()
	})
	t.Run("syntax errors and cancels do not count", func(t *testing.T) {
		h := newSecHandler()
		addr := authServe(t, AuthOptional, h, nil)
		c := dialGreeted(t, addr)
		c.ehloLines("x")
		c.cmd(wrong, 535)
		for _, st := range []authStep{
			{"AUTH CRAM-MD5", 504},
			{"AUTH", 501},
			{"AUTH PLAIN !!!", 501},
			{"AUTH PLAIN =", 501},
			{"AUTH PLAIN", 334}, {"*", 501},
			{"AUTH LOGIN", 334}, {b64(authUser), 334}, {"*", 501},
			{"AUTH LOGIN", 334}, {"%%%", 501},
		} {
			c.cmd(st.send, st.code)
		}
		c.cmd(wrong, 535)
		c.cmd(wrong, 421)
		c.expectClosed()
		// 535, 504, 501 x 6, 535, 421: every error reply is an exception.
		require.Equal(t, []int{10}, h.waitDisconnects(t, 1))
	})
	t.Run("2", func(t *testing.T) {
		h := newSecHandler()
		addr := authServe(t, AuthOptional, h, func(s *Server) { s.MaxAuthFailures = 2 })
		c := dialGreeted(t, addr)
		c.ehloLines("x")
		c.cmd(wrong, 535)
		c.cmd(wrong, 421)
		c.expectClosed()
	})
	t.Run("1", func(t *testing.T) {
		h := newSecHandler()
		addr := authServe(t, AuthOptional, h, func(s *Server) { s.MaxAuthFailures = 1 })
		c := dialGreeted(t, addr)
		c.ehloLines("x")
		c.cmd(wrong, 421)
		c.expectClosed()
	})
	t.Run("off", func(t *testing.T) {
		h := newSecHandler()
		addr := authServe(t, AuthOptional, h, func(s *Server) { s.MaxAuthFailures = -1 })
		c := dialGreeted(t, addr)
		c.ehloLines("x")
		for i := 0; i < 10; i++ {
			require.Equal(t, text535, c.cmd(wrong, 535), "failure %d", i+1)
		}
		c.cmd(good, 235)
		require.Len(t, h.authCalls(), 11)
	})
}

func TestAuthTimeoutInExchange(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []authStep
	}{
		{"PLAIN prompt", []authStep{{"AUTH PLAIN", 334}}},
		{"LOGIN user prompt", []authStep{{"AUTH LOGIN", 334}}},
		{"LOGIN password prompt", []authStep{{"AUTH LOGIN " + b64(authUser), 334}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHandler()
			addr := authServe(t, AuthOptional, h, func(s *Server) { s.IOCmdTimeout = 300 * time.Millisecond })
			c := dialGreeted(t, addr)
			c.ehloLines("x")
			for _, st := range tc.steps {
				c.cmd(st.send, st.code)
			}
			// The client never answers the prompt.
			require.Equal(t, "Timeout, closing transmission channel", c.expect(421))
			c.expectClosed()
			require.Empty(t, h.authCalls())
		})
	}
}
