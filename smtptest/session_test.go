package smtptest_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
)

func TestNewSession(t *testing.T) {
	var ctx context.Context
	t.Run("hook", func(t *testing.T) {
		s := smtptest.NewSession(t)
		ctx = s.Context()
		if ctx.Err() != nil {
			t.Fatal("context cancelled during the test")
		}
		if s.RemoteIP != "127.0.0.1" || s.LocalIP != "127.0.0.1" || s.RemotePort == 0 || s.LocalPort == 0 ||
			s.ConnectedAt.IsZero() || !strings.HasPrefix(s.ID, "smtptest-") || s.LocalResponse == "" ||
			s.IsEncrypted() || s.IsAuthenticated() || s.Message.CRLF != "\r\n" {
			t.Errorf("session %+v", s)
		}
		if _, ok := s.TLSState(); ok {
			t.Error("TLSState reports TLS")
		}
		s.Logger().Debug("from the hook", "n", 1) // to the test's output
		h := &MyHandler{}
		if _, err := h.OnRcptTo(s, "b@example.net"); err != nil {
			t.Errorf("OnRcptTo example.net: %v", err)
		}
		if _, err := h.OnRcptTo(s, "x@elsewhere.test"); !errors.Is(err, smtpd.SMTPError550) {
			t.Errorf("OnRcptTo elsewhere: %v", err)
		}
		s.Envelope.From, s.Envelope.To, s.Message.Data = "a@example.org", []string{"b@example.net"}, []byte("x\r\n")
		if err := h.OnMessage(s); err != nil {
			t.Fatal(err)
		}
		if m := h.Messages(); len(m) != 1 || m[0].From != "a@example.org" || m[0].SessionID != s.ID {
			t.Errorf("recorded %+v", m)
		}
	})
	if ctx == nil || ctx.Err() == nil {
		t.Error("the session's context is not cancelled after its test")
	}
	if smtptest.NewSession(t).ID == smtptest.NewSession(t).ID {
		t.Error("two sessions with one ID")
	}
}
