package smtptest_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/smtp"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
)

// A protocol-level test: a server with PIPELINING on, and a raw client that
// checks every reply.
func ExampleNewServer() {
	t := &testing.T{} // in a test: its *testing.T

	ts := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.Pipelining = true })
	c := ts.DialGreeted(t)
	c.Cmd("EHLO client.example.org", 250)
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

// A Recorder works with any smtpd.Server: here one serving a listener of its own,
// fed by smtp.SendMail.
func ExampleRecorder() {
	rec := &smtptest.Recorder{}
	srv := &smtpd.Server{Handler: rec, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(l)
	defer srv.Close()

	msg := "Subject: hello\r\n\r\nHi Bob.\r\n"
	err = smtp.SendMail(l.Addr().String(), nil, "alice@example.org", []string{"bob@example.net"}, []byte(msg))
	if err != nil {
		panic(err)
	}
	for _, m := range rec.Messages() {
		fmt.Printf("from %s to %v over TLS %v: %q\n", m.From, m.To, m.Encrypted, m.Data)
	}
	// Output:
	// from alice@example.org to [bob@example.net] over TLS false: "Subject: hello\r\n\r\nHi Bob.\r\n"
}

// A unit test of one hook, without a server: OnRcptTo of MyHandler (accepts
// example.net only).
func ExampleNewSession() {
	t := &testing.T{} // in a test: its *testing.T

	s := smtptest.NewSession(t)
	s.Helo, s.Envelope.From = "client.example.org", "alice@example.org"
	h := &MyHandler{}
	if _, err := h.OnRcptTo(s, "bob@example.net"); err != nil {
		t.Errorf("OnRcptTo(bob@example.net): %v", err)
	}
	if _, err := h.OnRcptTo(s, "eve@elsewhere.test"); !errors.Is(err, smtpd.SMTPError550) {
		t.Errorf("OnRcptTo(eve@elsewhere.test): %v, want 550", err)
	}
}

// A newcomer's test of a handler: STARTTLS, AUTH and one message through
// net/smtp. MyHandler accepts alice/secret and embeds a Recorder. It is
// TestNewcomerHandlerTest's body.
func Example_newcomer() {
	t := &testing.T{} // in a test: its *testing.T

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

// The same steps as SendMail, one by one, with net/smtp's Client.
func ExampleServer_ClientTLSConfig() {
	t := &testing.T{} // in a test: its *testing.T

	ts := smtptest.NewServer(t, &MyHandler{}, func(s *smtpd.Server) {
		s.TLSMode, s.AuthMode = smtpd.TLSOptional, smtpd.AuthOptional
	})
	c := ts.Client(t)
	if err := c.StartTLS(ts.ClientTLSConfig()); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(smtp.PlainAuth("", "alice", "secret", "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@example.org"); err != nil {
		t.Fatal(err)
	}
	// ... Rcpt, Data, Quit
}

// A Conn switches to TLS in the middle of a session.
func ExampleConn_StartTLS() {
	t := &testing.T{} // in a test: its *testing.T

	ts := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.TLSMode = smtpd.TLSRequired })
	c := ts.DialGreeted(t)
	c.Cmd("EHLO client.example.org", 250)
	c.Cmd("MAIL FROM:<a@example.org>", 530) // encryption required
	c.StartTLS(nil)                         // nil: ts.ClientTLSConfig()
	c.Cmd("EHLO client.example.org", 250)
	c.Cmd("MAIL FROM:<a@example.org>", 250)
}
