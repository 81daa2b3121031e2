package smtptest_test

import (
	"strings"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
)

func TestConnSession(t *testing.T) {
	ts := smtptest.NewServer(t, nil)
	c := ts.Dial(t)
	if code, text := c.Reply(); code != 220 || !strings.HasSuffix(text, "says welcome!") {
		t.Fatalf("banner %d %q", code, text)
	}
	ehlo := c.Cmd("EHLO client.test", 250)
	if lines := strings.Split(ehlo, "\n"); len(lines) < 2 || lines[len(lines)-1] != "OK" {
		t.Errorf("EHLO reply %q: want the lines joined by \\n, the last one OK", ehlo)
	}
	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.net>", 250)
	c.Cmd("DATA", 354)
	c.Send("Subject: raw\r\n\r\n..leading dot\r\n.\r\n")
	c.Expect(250)
	c.Cmd("QUIT", 221)
	c.ExpectClosed()
	if m := ts.Recorder.Messages()[0]; string(m.Data) != "Subject: raw\r\n\r\n.leading dot\r\n" || m.Helo != "client.test" {
		t.Errorf("recorded %+v", m)
	}
}

// The Recorder keeps From, To and Data exactly as the session had them.
func TestRecorderByteExact(t *testing.T) {
	ts := smtptest.NewServer(t, nil, func(s *smtpd.Server) {
		s.CRLFMode, s.Pipelining, s.Internationalization = smtpd.CRLFLeave, true, true
	})
	c := ts.DialGreeted(t)
	c.Cmd("EHLO client.test", 250)
	c.Send("MAIL FROM:<\"odd user\"@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<Ça@example.net>\r\nDATA\r\n")
	for _, code := range []int{250, 250, 553, 354} { // no SMTPUTF8: the UTF-8 address is refused
		c.Expect(code)
	}
	data := "Subject: exact\r\n\r\nbare\nLF\r\nbare\rCR\r\n..\r\n\xff\xfe\r\nno final newline? yes:\r\n"
	c.Send(strings.ReplaceAll(data, "\r\n..", "\r\n....") + ".\r\n")
	c.Expect(250)
	m := ts.Recorder.Messages()[0]
	want := strings.ReplaceAll(data, "\r\n..", "\r\n...") // one dot of the two unstuffed
	if m.From != `"odd user"@example.org` || len(m.To) != 1 || m.To[0] != "b@example.net" ||
		string(m.Data) != want || m.EncodingBody != "8bitmime" {
		t.Errorf("recorded From %q To %q Data %q Body %q; want Data %q", m.From, m.To, m.Data, m.EncodingBody, want)
	}
}

func TestConnStartTLS(t *testing.T) {
	ts := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.TLSMode = smtpd.TLSRequired })
	c := ts.DialGreeted(t)
	if ext := c.Cmd("EHLO client.test", 250); !strings.Contains(ext, "STARTTLS") {
		t.Fatalf("EHLO %q", ext)
	}
	c.Cmd("MAIL FROM:<a@example.org>", 530)
	c.StartTLS(nil)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.net>", 250)
	c.Cmd("DATA", 354)
	c.Send("Subject: tls\r\n\r\nx\r\n.\r\n")
	c.Expect(250)
	c.Cmd("QUIT", 221)
	c.ExpectClosed()
	if m := ts.Recorder.Messages()[0]; !m.Encrypted {
		t.Errorf("recorded %+v", m)
	}
}

func TestConnPipeliningRefusedAndClosed(t *testing.T) {
	ts := smtptest.NewServer(t, nil)
	c := ts.DialGreeted(t)
	c.Send("NOOP\r\nNOOP\r\n")
	c.Expect(500) // pipelining is off
	c.Expect(250)
	c.Send("QUIT\r\n")
	if code, text := c.Reply(); code != 221 {
		t.Fatalf("QUIT: %d %q", code, text)
	}
	c.ExpectClosed()
}

// The flow of ExampleNewServer: a pipelined transaction.
func TestPipelinedTransaction(t *testing.T) {
	ts := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.Pipelining = true })
	c := ts.DialGreeted(t)
	if ext := c.Cmd("EHLO client.example.org", 250); !strings.Contains(ext, "PIPELINING") {
		t.Fatalf("EHLO %q", ext)
	}
	c.Send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
	c.Expect(250)
	c.Expect(250)
	c.Expect(354)
	c.Send("Subject: hello\r\n\r\nHi.\r\n.\r\n")
	c.Expect(250)
	c.Cmd("QUIT", 221)
	c.ExpectClosed()
	if msgs := ts.Recorder.Messages(); len(msgs) != 1 || msgs[0].From != "a@example.org" {
		t.Errorf("recorded %+v", msgs)
	}
}
