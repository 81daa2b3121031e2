package smtpd_test

import (
	"fmt"
	"net/smtp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// sessionState is a copy of the session fields a hook saw.
type sessionState struct {
	Helo     string
	Envelope smtpd.Envelope
	Message  smtpd.Message
}

func sessionSnapshot(s *smtpd.Session) sessionState {
	st := sessionState{Helo: s.Helo, Envelope: s.Envelope, Message: s.Message}
	st.Envelope.To = append([]string(nil), s.Envelope.To...)
	st.Message.Data = append([]byte(nil), s.Message.Data...)
	return st
}

func TestSessionStateReset(t *testing.T) {
	states := make(chan sessionState, 1)
	atMessage := make(chan sessionState, 1)
	h := &hookHandler{
		unknown: func(s *smtpd.Session, line string) error {
			states <- sessionSnapshot(s)
			return nil
		},
		message: func(s *smtpd.Session) error {
			atMessage <- sessionSnapshot(s)
			return nil
		},
	}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.Internationalization = true })
	c := ts.DialGreeted(t)
	state := func() sessionState {
		t.Helper()
		c.Cmd("XSTATE", 250)
		return <-states
	}
	empty := smtpd.Envelope{To: nil}
	emptyMsg := smtpd.Message{CRLF: "\r\n"}
	normalize := func(st sessionState) sessionState {
		if len(st.Envelope.To) == 0 {
			st.Envelope.To = nil
		}
		if len(st.Message.Data) == 0 {
			st.Message.Data = nil
		}
		return st
	}

	st := normalize(state())
	require.Equal(t, sessionState{Envelope: empty, Message: emptyMsg}, st, "fresh session")

	c.Cmd("EHLO first.example", 250)
	c.Cmd("MAIL FROM:<a@b.example> BODY=8BITMIME SMTPUTF8", 250)
	c.Cmd("RCPT TO:<c@d.example>", 250)
	st = normalize(state())
	require.Equal(t, "first.example", st.Helo)
	require.Equal(t, smtpd.Envelope{From: "a@b.example", To: []string{"c@d.example"}, EncodingBody: "8bitmime", EncodingUTF8: "utf8",
		FromParams: []string{"BODY=8BITMIME", "SMTPUTF8"}, ToParams: [][]string{nil}}, st.Envelope)

	// RSET: envelope and message gone, Helo kept.
	c.Cmd("RSET", 250)
	st = normalize(state())
	require.Equal(t, sessionState{Helo: "first.example", Envelope: empty, Message: emptyMsg}, st, "after RSET")

	// DATA: during OnMessage the message is complete; afterwards everything is reset.
	c.Cmd("MAIL FROM:<a@b.example> BODY=7BIT", 250)
	c.Cmd("RCPT TO:<c@d.example>", 250)
	c.Cmd("RCPT TO:<e@f.example>", 250)
	before := time.Now().UTC().Add(-time.Second)
	c.Cmd("DATA", 354)
	c.Send("Subject: s\r\n\r\nbody\r\n.\r\n")
	c.Expect(250)
	m := <-atMessage
	require.Equal(t, "Subject: s\r\n\r\nbody\r\n", string(m.Message.Data))
	require.Equal(t, len(m.Message.Data), m.Message.Bytesize)
	require.True(t, m.Message.Headers)
	require.Equal(t, "\r\n", m.Message.CRLF)
	require.True(t, m.Message.ReceivedAt.After(before))
	require.False(t, m.Message.DeliveredAt.Before(m.Message.ReceivedAt))
	require.Equal(t, smtpd.Envelope{From: "a@b.example", To: []string{"c@d.example", "e@f.example"}, EncodingBody: "7bit",
		FromParams: []string{"BODY=7BIT"}, ToParams: [][]string{nil, nil}}, m.Envelope)
	require.Regexp(t, `-2$`, m.Message.ID)
	st = normalize(state())
	require.Equal(t, sessionState{Helo: "first.example", Envelope: empty, Message: emptyMsg}, st, "after DATA")

	// A transaction in progress ...
	c.Cmd("MAIL FROM:<a@b.example>", 250)
	c.Cmd("RCPT TO:<c@d.example>", 250)
	st = normalize(state())
	require.Equal(t, "a@b.example", st.Envelope.From)

	// ... is reset by a new EHLO: envelope reset, Helo replaced.
	c.Cmd("EHLO second.example", 250)
	st = normalize(state())
	require.Equal(t, sessionState{Helo: "second.example", Envelope: empty, Message: emptyMsg}, st, "after EHLO")
	c.Cmd("HELO third.example", 250)
	require.Equal(t, "third.example", state().Helo)
}

func TestSessionResponseTexts(t *testing.T) {
	tests := []struct {
		name      string
		local     string
		helo      string
		banner    string
		heloReply string
		ehloFirst string
	}{
		{"changed", "my.host ESMTP MidiSmtpServer", "my.host at your service", "my.host ESMTP MidiSmtpServer", "OK my.host at your service", "my.host at your service"},
		{"CR LF removed", "my.host\r\n ESMTP", "Hi,\r\n friend\n", "my.host ESMTP", "OK Hi, friend", "Hi, friend"},
		{"reply injection flattened", "x\r\n250 fake", "ok\r\n250-STARTTLS", "x250 fake", "OK ok250-STARTTLS", "ok250-STARTTLS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := smtptest.NewServer(t, &hookHandler{connect: func(s *smtpd.Session) error {
				s.LocalResponse = tc.local
				s.HeloResponse = tc.helo
				return nil
			}})
			c := ts.Dial(t)
			require.Equal(t, tc.banner, c.Expect(220))
			require.Equal(t, tc.heloReply, c.Cmd("HELO client.example", 250))
			require.Equal(t, tc.ehloFirst+"\n"+smtpd.ProtoTextEhloSize+"\nOK", c.Cmd("EHLO client.example", 250))
			require.Equal(t, smtpd.ProtoTextOK, c.Cmd("NOOP", 250))
		})
	}
	t.Run("set in OnHelo", func(t *testing.T) {
		ts := smtptest.NewServer(t, &hookHandler{helo: func(s *smtpd.Session, helo string) error {
			s.HeloResponse = "Hello " + helo + ", I am glad to meet you"
			return nil
		}}, func(s *smtpd.Server) { s.Pipelining = true })
		c := ts.DialGreeted(t)
		require.Equal(t, "OK Hello one.example, I am glad to meet you", c.Cmd("HELO one.example", 250))
		require.Equal(t, "Hello two.example, I am glad to meet you\nPIPELINING\n"+smtpd.ProtoTextEhloSize+"\nOK", c.Cmd("EHLO two.example", 250))
	})
}

// The Ruby suite's full session: OnDataStart adds a Received header, OnDataHeaders an
// X-inject header that must land right before the blank line.
func TestSessionHooksAddHeaders(t *testing.T) {
	rec := &smtptest.Recorder{}
	var received string
	var startLen int
	var mu sync.Mutex
	h := &hookHandler{
		dataStart: func(s *smtpd.Session) error {
			line := fmt.Sprintf("Received: from %s ([%s]) by %s with SMTP; %s", s.Helo, s.RemoteIP, s.LocalHost,
				s.Message.ReceivedAt.Format(time.RFC1123Z))
			mu.Lock()
			received = line
			startLen = len(s.Message.Data)
			mu.Unlock()
			s.Message.Data = append(s.Message.Data, line+s.Message.CRLF...)
			return nil
		},
		dataHdrs: func(s *smtpd.Session) error {
			s.Message.Data = append(s.Message.Data, "X-inject: 1"+s.Message.CRLF...)
			return nil
		},
		message: rec.OnMessage,
	}
	ts := smtptest.NewServer(t, h)
	c := ts.DialGreeted(t)
	c.Cmd("EHLO client.example", 250)
	c.Cmd("MAIL FROM:<sender@example.com>", 250)
	c.Cmd("RCPT TO:<rcpt@example.com>", 250)
	c.Cmd("DATA", 354)
	c.Send("From: sender@example.com\r\nTo: rcpt@example.com\r\nSubject: test\r\n\r\nHello\r\n\r\nBye\r\n.\r\n")
	c.Expect(250)
	c.Cmd("QUIT", 221)
	m := rec.Wait(t, 1)[0]
	mu.Lock()
	defer mu.Unlock()
	require.Zero(t, startLen, "OnDataStart runs before the first byte is stored")
	require.True(t, strings.HasPrefix(received, "Received: from client.example ([127.0.0.1]) by 127.0.0.1 with SMTP; "), received)
	require.Equal(t, received+"\r\nFrom: sender@example.com\r\nTo: rcpt@example.com\r\nSubject: test\r\nX-inject: 1\r\n\r\nHello\r\n\r\nBye\r\n", string(m.Data))
	require.Equal(t, 1, strings.Count(string(m.Data), "X-inject"), "headers hook runs once, at the first empty line")
}

// netSMTPBytes is what net/smtp puts on the wire for msg, after the server's
// dot-unstuffing: every line end CRLF, and a final CRLF when missing.
func netSMTPBytes(msg string) string {
	s := strings.ReplaceAll(msg, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\n", "\r\n")
	if s != "" && !strings.HasSuffix(s, "\r\n") {
		s += "\r\n"
	}
	return s
}

func TestSessionNetSMTPSendMail(t *testing.T) {
	tests := []struct {
		name string
		i18n bool
		msg  string
		body string
	}{
		{"crlf", false, "From: a@b.example\r\nSubject: one\r\n\r\nHello.\r\n", ""},
		{"lf and dots, no final newline", false, "Subject: dots\n\n.leading dot\n..two\n.\nlast line", ""},
		{"8bitmime", true, "Subject: 8bit\r\n\r\ngrüße\r\n", "8bitmime"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &smtptest.Recorder{}
			ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.Internationalization = tc.i18n })
			err := smtp.SendMail(ts.Addr, nil, "a@b.example", []string{"c@d.example", "e@f.example"}, []byte(tc.msg))
			require.NoError(t, err)
			m := h.Wait(t, 1)[0]
			require.Equal(t, netSMTPBytes(tc.msg), string(m.Data))
			require.Equal(t, "a@b.example", m.From)
			require.Equal(t, []string{"c@d.example", "e@f.example"}, m.To)
			require.Equal(t, "localhost", m.Helo)
			require.Equal(t, tc.body, m.EncodingBody)
		})
	}
}

func TestSessionNetSMTPTenMessages(t *testing.T) {
	h := &smtptest.Recorder{}
	ts := smtptest.NewServer(t, h)
	c := ts.Client(t)
	require.NoError(t, c.Hello("ten.example"))
	var msgs []string
	for i := range 10 {
		msg := fmt.Sprintf("Subject: message %d\r\nX-N: %d\r\n\r\n", i, i)
		switch i % 3 {
		case 0:
			msg += strings.Repeat(fmt.Sprintf("line %d of a longer body\r\n", i), 200)
		case 1:
			msg += ".starts with a dot\n..two dots\nbare LF ends\n"
		case 2:
			msg += "no final line end " + strings.Repeat("x", i)
		}
		msgs = append(msgs, msg)
		require.NoError(t, c.Mail(fmt.Sprintf("from%d@example.com", i)))
		require.NoError(t, c.Rcpt(fmt.Sprintf("to%d@example.com", i)))
		w, err := c.Data()
		require.NoError(t, err)
		_, err = w.Write([]byte(msg))
		require.NoError(t, err)
		require.NoError(t, w.Close())
	}
	require.NoError(t, c.Quit())
	got := h.Wait(t, 10)
	require.Len(t, got, 10)
	for i, m := range got {
		require.Equal(t, netSMTPBytes(msgs[i]), string(m.Data), "message %d", i)
		require.Equal(t, fmt.Sprintf("from%d@example.com", i), m.From)
		require.Equal(t, []string{fmt.Sprintf("to%d@example.com", i)}, m.To)
		require.Equal(t, "ten.example", m.Helo)
	}
}

// isolationHandler checks in each hook that the session only sees its own client's
// data: every value carries the client's token.
type isolationHandler struct {
	smtpd.BaseHandler
	mu     sync.Mutex
	tokens map[*smtpd.Session]string
	bad    []string
	count  int
}

func (h *isolationHandler) fail(format string, args ...any) error {
	h.mu.Lock()
	h.bad = append(h.bad, fmt.Sprintf(format, args...))
	h.mu.Unlock()
	return smtpd.SMTPError554
}

func (h *isolationHandler) OnHelo(s *smtpd.Session, helo string) error {
	h.mu.Lock()
	h.tokens[s] = strings.TrimPrefix(helo, "client-")
	h.mu.Unlock()
	return nil
}

func (h *isolationHandler) token(s *smtpd.Session) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tokens[s]
}

func (h *isolationHandler) OnMailFrom(s *smtpd.Session, from string) (string, error) {
	if tok := h.token(s); from != "from-"+tok+"@example.com" {
		return "", h.fail("session %s got MAIL FROM %s", tok, from)
	}
	return "", nil
}

func (h *isolationHandler) OnRcptTo(s *smtpd.Session, to string) (string, error) {
	if tok := h.token(s); !strings.HasSuffix(to, "-"+tok+"@example.com") || s.Envelope.From != "from-"+tok+"@example.com" {
		return "", h.fail("session %s got RCPT TO %s (from %s)", tok, to, s.Envelope.From)
	}
	return "", nil
}

func (h *isolationHandler) OnMessage(s *smtpd.Session) error {
	tok := h.token(s)
	switch {
	case s.Helo != "client-"+tok:
		return h.fail("session %s has Helo %s", tok, s.Helo)
	case s.Envelope.From != "from-"+tok+"@example.com":
		return h.fail("session %s has From %s", tok, s.Envelope.From)
	case len(s.Envelope.To) != 2 || s.Envelope.To[0] != "to-"+tok+"@example.com" || s.Envelope.To[1] != "cc-"+tok+"@example.com":
		return h.fail("session %s has To %v", tok, s.Envelope.To)
	case string(s.Message.Data) != isolationMessage(tok):
		return h.fail("session %s has data %q", tok, s.Message.Data)
	}
	h.mu.Lock()
	h.count++
	h.mu.Unlock()
	return nil
}

func isolationMessage(tok string) string {
	return "Subject: token " + tok + "\r\n\r\n" + strings.Repeat("body of "+tok+"\r\n", 20)
}

func TestSessionsIsolatedInParallel(t *testing.T) {
	const clients, perClient = 100, 3
	h := &isolationHandler{tokens: map[*smtpd.Session]string{}}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.MaxProcessings = clients })
	start := make(chan struct{})
	ready := make(chan error, clients)
	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			tok := fmt.Sprintf("t%03d", i)
			c, err := smtp.Dial(ts.Addr)
			if err == nil {
				err = c.Hello("client-" + tok)
			}
			ready <- err
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			<-start
			for j := range perClient {
				if err := isolationSend(c, tok); err != nil {
					errs <- fmt.Errorf("client %s message %d: %w", tok, j, err)
					return
				}
			}
			errs <- c.Quit()
		}()
	}
	for range clients {
		require.NoError(t, <-ready)
	}
	close(start)
	for range clients {
		require.NoError(t, <-errs)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Empty(t, h.bad, "a session saw another's data")
	require.Equal(t, clients*perClient, h.count)
}

func isolationSend(c *smtp.Client, tok string) error {
	if err := c.Mail("from-" + tok + "@example.com"); err != nil {
		return err
	}
	if err := c.Rcpt("to-" + tok + "@example.com"); err != nil {
		return err
	}
	if err := c.Rcpt("cc-" + tok + "@example.com"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(isolationMessage(tok))); err != nil {
		return err
	}
	return w.Close()
}

// OnDataStart runs for an empty message too (at the final dot), so a Received header
// added there is stored.
func TestSessionEmptyMessageRunsOnDataStart(t *testing.T) {
	rec := &smtptest.Recorder{}
	var starts atomic.Int32
	h := &hookHandler{
		dataStart: func(s *smtpd.Session) error {
			starts.Add(1)
			s.Message.Data = append(s.Message.Data, "Received: by test"+s.Message.CRLF...)
			return nil
		},
		message: rec.OnMessage,
	}
	ts := smtptest.NewServer(t, h)
	c := greeted(t, ts)
	c.Cmd("MAIL FROM:<a@b.example>", 250)
	c.Cmd("RCPT TO:<c@d.example>", 250)
	c.Cmd("DATA", 354)
	c.Send(".\r\n")
	require.Equal(t, smtpd.ProtoText250Data, c.Expect(250))
	m := rec.Wait(t, 1)[0]
	require.Equal(t, int32(1), starts.Load(), "OnDataStart calls")
	require.Equal(t, "Received: by test\r\n", string(m.Data))
}
