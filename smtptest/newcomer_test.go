package smtptest_test

import (
	"net/smtp"
	"strings"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
)

// MyHandler stands for the handler a user tests: it accepts one login,
// alice/secret, and mail for example.net only. It embeds smtptest.Recorder (in
// place of smtpd.BaseHandler) so that the test sees the messages it accepted.
type MyHandler struct {
	smtptest.Recorder
}

// OnAuth accepts alice with password secret.
func (*MyHandler) OnAuth(_ *smtpd.Session, _, user, pass string) (string, error) {
	if user == "alice" && pass == "secret" {
		return "", nil
	}
	return "", smtpd.SMTPError535
}

// OnRcptTo accepts recipients at example.net.
func (*MyHandler) OnRcptTo(_ *smtpd.Session, to string) (string, error) {
	if !strings.HasSuffix(to, "@example.net") {
		return "", smtpd.SMTPError550
	}
	return "", nil
}

// TestNewcomerHandlerTest is a newcomer's test of a handler: STARTTLS, AUTH and
// one message, through net/smtp; then a wrong password. Its body stays within 15
// lines.
func TestNewcomerHandlerTest(t *testing.T) {
	ts := smtptest.NewServer(t, &MyHandler{}, func(s *smtpd.Server) {
		s.TLSMode, s.AuthMode = smtpd.TLSRequired, smtpd.AuthRequired
	})
	msg := "Subject: hello\r\n\r\nHi Bob.\r\n"
	auth := smtp.PlainAuth("", "alice", "secret", "127.0.0.1")
	if err := ts.SendMail(auth, "alice@example.org", []string{"bob@example.net"}, msg); err != nil {
		t.Fatal(err)
	}
	if m := ts.Recorder.Messages()[0]; m.AuthenticationID != "alice" || !m.Encrypted || string(m.Data) != msg {
		t.Errorf("recorded %+v", m)
	}
	bad := smtp.PlainAuth("", "alice", "guess", "127.0.0.1")
	if err := ts.SendMail(bad, "alice@example.org", []string{"bob@example.net"}, msg); err == nil {
		t.Error("a wrong password was accepted")
	}
}
