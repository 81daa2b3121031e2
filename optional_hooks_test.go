package smtpd_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// eventLog is a handler that records the optional hooks (DataCommandHandler,
// ResetHandler) among the mail hooks, and what the session showed them.
type eventLog struct {
	smtpd.BaseHandler
	mu         sync.Mutex
	events     []string
	refuseData error
}

func (h *eventLog) add(e string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
}

func (h *eventLog) log() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.events, " ")
}

func (h *eventLog) OnMailFrom(s *smtpd.Session, from string) (string, error) {
	h.add("mail:" + s.Message.ID[strings.LastIndexByte(s.Message.ID, '-')+1:] + ":" + strings.Join(s.CommandParams(), ","))
	return "", nil
}

func (h *eventLog) OnRcptTo(s *smtpd.Session, to string) (string, error) {
	h.add("rcpt:" + to + ":" + strings.Join(s.CommandParams(), ","))
	return "", nil
}

func (h *eventLog) OnDataCommand(s *smtpd.Session) error {
	h.add("data")
	return h.refuseData
}

func (h *eventLog) OnReset(s *smtpd.Session) {
	h.add("reset:" + s.Envelope.From)
}

func (h *eventLog) OnMessage(s *smtpd.Session) error {
	h.add("message:" + strings.Join(s.Envelope.FromParams, ",") + ":" + strings.Join(s.Envelope.ToParams[0], ","))
	if s.UserData == nil {
		s.UserData = 0
	}
	s.UserData = s.UserData.(int) + 1
	return nil
}

func (h *eventLog) OnDisconnect(s *smtpd.Session) {
	if n, ok := s.UserData.(int); ok {
		h.add("disconnect:" + strings.Repeat("m", n))
	}
}

// TestOptionalHooks checks when OnDataCommand and OnReset run, the ESMTP
// parameters as sent, the message IDs and UserData across a session.
func TestOptionalHooks(t *testing.T) {
	h := &eventLog{}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.DSN = true; s.Chunking = true })
	c := ts.DialGreeted(t)
	c.Cmd("EHLO client.example", 250)
	c.Cmd("MAIL FROM:<a@example.org> SIZE=10 ret=HDRS", 250)
	c.Cmd("RCPT TO:<b@example.org> NOTIFY=NEVER", 250)
	c.Cmd("DATA", 354)
	c.Send("Subject: x\r\n\r\nbody\r\n.\r\n")
	c.Expect(250)
	c.Cmd("MAIL FROM:<c@example.org>", 250)
	c.Cmd("RSET", 250)
	c.Cmd("RSET", 250) // no transaction: no OnReset
	c.Cmd("MAIL FROM:<d@example.org>", 250)
	c.Cmd("RCPT TO:<e@example.org>", 250)
	c.Send("BDAT 4\r\nab\r\n")
	c.Expect(250)
	c.Cmd("EHLO again.example", 250) // abandons the BDAT transfer
	c.Cmd("MAIL FROM:<f@example.org>", 250)
	c.Cmd("QUIT", 221)
	c.ExpectClosed()
	ts.Close()
	require.Equal(t, "mail:1:SIZE=10,ret=HDRS rcpt:b@example.org:NOTIFY=NEVER data message:SIZE=10,ret=HDRS:NOTIFY=NEVER reset:a@example.org "+
		"mail:2: reset:c@example.org "+
		"mail:3: rcpt:e@example.org: data reset:d@example.org "+
		"mail:4: reset:f@example.org disconnect:m", h.log())
}

// TestResetAfterRefusedMessage: a message the server refuses by itself (over
// MaxMessageSize) ends its transaction: OnReset runs, OnMessage does not.
func TestResetAfterRefusedMessage(t *testing.T) {
	h := &eventLog{}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.MaxMessageSize = 100 })
	c := ts.DialGreeted(t)
	c.Cmd("HELO client.example", 250)
	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.org>", 250)
	c.Cmd("DATA", 354)
	c.Send(strings.Repeat("x", 200) + "\r\n.\r\n")
	c.Expect(552)
	c.Cmd("QUIT", 221)
	c.ExpectClosed()
	ts.Close()
	require.Equal(t, "mail:1: rcpt:b@example.org: data reset:a@example.org", h.log())
}

// TestDataCommandRefusal: an error from OnDataCommand is DATA's reply, before any
// 354, and the transaction stays.
func TestDataCommandRefusal(t *testing.T) {
	h := &eventLog{refuseData: smtpd.SMTPError554}
	ts := smtptest.NewServer(t, h)
	c := ts.DialGreeted(t)
	c.Cmd("HELO client.example", 250)
	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.org>", 250)
	c.Cmd("DATA", 554)
	h.refuseData = nil
	c.Cmd("DATA", 354)
	c.Send("\r\n.\r\n")
	c.Expect(250)
}

// TestMessageIDs: every transaction gets "<Session.ID>-<n>".
func TestMessageIDs(t *testing.T) {
	rec := &smtptest.Recorder{}
	ts := smtptest.NewServer(t, rec)
	c := ts.DialGreeted(t)
	c.Cmd("HELO client.example", 250)
	for range 2 {
		c.Cmd("MAIL FROM:<a@example.org>", 250)
		c.Cmd("RCPT TO:<b@example.org>", 250)
		c.Cmd("DATA", 354)
		c.Send("\r\n.\r\n")
		c.Expect(250)
	}
	msgs := rec.Wait(t, 2)
	require.NotEmpty(t, msgs[0].ID)
	require.Equal(t, strings.TrimSuffix(msgs[0].ID, "-1")+"-2", msgs[1].ID)
}
