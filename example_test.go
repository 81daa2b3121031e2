package smtpd_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"

	"github.com/midismtp/smtpd"
)

// MyHandler accepts everything BaseHandler accepts, refuses one recipient and
// prints every message it receives.
type MyHandler struct {
	smtpd.BaseHandler // the defaults: accept everything, deny AUTH, 500 for unknown commands
}

// OnRcptTo refuses one recipient with 550; an empty return keeps the address as sent.
func (MyHandler) OnRcptTo(s *smtpd.Session, to string) (string, error) {
	if to == "nobody@example.com" {
		return "", smtpd.SMTPError550
	}
	return "", nil
}

// OnMessage runs once per message, after the final dot; returning nil answers 250.
func (MyHandler) OnMessage(s *smtpd.Session) error {
	subject := "(no subject)"
	if msg, err := mail.ReadMessage(bytes.NewReader(s.Message.Data)); err == nil {
		subject = msg.Header.Get("Subject")
	}
	fmt.Printf("from <%s> to %q: %s\n", s.Envelope.From, s.Envelope.To, subject)
	return nil
}

// This is the README's handler example, run against a server on a free loopback
// port: net/smtp sends one message with two recipients, one of which OnRcptTo refuses.
// A program would listen on a fixed port and call Shutdown on SIGINT/SIGTERM (see the
// Server.Shutdown example).
func Example() {
	srv := &smtpd.Server{
		Handler: MyHandler{},
		Hosts:   "127.0.0.1",
		Ports:   "0", // any free port; srv.Addrs() tells which
		Logger:  slog.New(slog.DiscardHandler),
	}
	if err := srv.Start(); err != nil {
		fmt.Println("start:", err)
		return
	}

	c, err := smtp.Dial(srv.Addrs()[0].String())
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	fmt.Println("MAIL:", c.Mail("me@example.org"))
	fmt.Println("RCPT you:", c.Rcpt("you@example.com"))
	fmt.Println("RCPT nobody:", c.Rcpt("nobody@example.com"))
	w, err := c.Data()
	if err != nil {
		fmt.Println("DATA:", err)
		return
	}
	fmt.Fprint(w, "Subject: Hello\r\n\r\nHi there.\r\n")
	fmt.Println("end of data:", w.Close()) // OnMessage has printed its line before the 250
	fmt.Println("QUIT:", c.Quit())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("shutdown:", srv.Shutdown(ctx))
	// Output:
	// MAIL: <nil>
	// RCPT you: <nil>
	// RCPT nobody: 550 "Requested action not taken: mailbox unavailable"
	// from <me@example.org> to ["you@example.com"]: Hello
	// end of data: <nil>
	// QUIT: <nil>
	// shutdown: <nil>
}

// blockingHandler refuses one domain with a wrapped SMTPError550: the client gets
// the 550, the log gets the whole error.
type blockingHandler struct {
	smtpd.BaseHandler
}

func (blockingHandler) OnRcptTo(s *smtpd.Session, to string) (string, error) {
	if strings.HasSuffix(to, "@blocked.example") {
		return "", fmt.Errorf("recipient %s is on the block list: %w", to, smtpd.SMTPError550)
	}
	return "", nil
}

// A hook answers with an SMTP reply by returning an *SMTPError or an error wrapping
// one; the server finds it with errors.As, replies with its code and text, and logs
// the whole error. Any other error is answered 451.
func ExampleSMTPError() {
	var h blockingHandler
	_, err := h.OnRcptTo(nil, "joe@blocked.example")

	var se *smtpd.SMTPError
	if errors.As(err, &se) {
		fmt.Println("logged:", err)
		fmt.Println("reply: ", se.Code, se.Message)
	}
	fmt.Println("is SMTPError550:", errors.Is(err, smtpd.SMTPError550))

	// A reply of one's own, with an RFC 3463 enhanced status code.
	custom := &smtpd.SMTPError{Code: 550, EnhancedCode: "5.7.1", Message: "Relaying denied"}
	fmt.Println("custom:", custom)

	// What a client sees: the enhanced codes only with EnhancedStatusCodes on.
	srv := &smtpd.Server{Handler: h, Hosts: "127.0.0.1", Ports: "0", Logger: slog.New(slog.DiscardHandler)}
	if err := srv.Start(); err != nil {
		fmt.Println("start:", err)
		return
	}
	defer srv.Close()
	c, err := smtp.Dial(srv.Addrs()[0].String())
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer c.Close()
	c.Mail("me@example.org")
	fmt.Println("client:", c.Rcpt("joe@blocked.example"))
	// Output:
	// logged: recipient joe@blocked.example is on the block list: 550 5.1.1 Requested action not taken: mailbox unavailable
	// reply:  550 Requested action not taken: mailbox unavailable
	// is SMTPError550: true
	// custom: 550 5.7.1 Relaying denied
	// client: 550 "Requested action not taken: mailbox unavailable"
}

// Shutdown stops accepting connections, answers idle sessions 421 at once, lets a
// session inside DATA finish its message, and closes what is left when ctx ends.
// A program calls it on SIGINT/SIGTERM:
//
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	<-ctx.Done()
func ExampleServer_Shutdown() {
	srv := &smtpd.Server{Hosts: "127.0.0.1", Ports: "0", Logger: slog.New(slog.DiscardHandler)}
	if err := srv.Start(); err != nil {
		fmt.Println("start:", err)
		return
	}

	// An idle client: connected, greeted, waiting.
	conn, err := net.Dial("tcp", srv.Addrs()[0].String())
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	banner, _ := r.ReadString('\n')
	fmt.Print("client: ", banner[:3], "\n")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = srv.Shutdown(ctx) // returns when every session has ended
	fmt.Println("shutdown:", err)
	srv.Wait() // returns at once now; elsewhere it blocks until the server stopped

	reply, _ := r.ReadString('\n')
	fmt.Println("client:", strings.TrimSpace(reply))
	fmt.Println("connections:", srv.Connections())
	// Output:
	// client: 220
	// shutdown: <nil>
	// client: 421 Service not available, closing transmission channel
	// connections: 0
}

// xyzzyHandler knows one extra command and leaves every other unknown line to
// BaseHandler; after three error replies it ends the session.
type xyzzyHandler struct {
	smtpd.BaseHandler
}

func (h xyzzyHandler) OnUnknown(s *smtpd.Session, line string) error {
	verb, _, _ := strings.Cut(line, " ")
	switch {
	case strings.EqualFold(verb, "XYZZY"):
		return nil // "250 OK"
	case s.Exceptions >= 2:
		return fmt.Errorf("%d bad commands from %s: %w", s.Exceptions+1, s.RemoteIP, smtpd.SMTPError421)
	}
	return h.BaseHandler.OnUnknown(s, line) // Ruby's super: 500
}

// Embed BaseHandler and override only the hooks you need; calling the embedded
// method is Ruby's super.
func ExampleBaseHandler() {
	srv := &smtpd.Server{Handler: xyzzyHandler{}, Hosts: "127.0.0.1", Ports: "0", Logger: slog.New(slog.DiscardHandler)}
	if err := srv.Start(); err != nil {
		fmt.Println("start:", err)
		return
	}
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Addrs()[0].String())
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	r.ReadString('\n') // 220 banner
	for _, cmd := range []string{"XYZZY", "PLUGH", "VRFY joe", "FROB"} {
		fmt.Fprintf(conn, "%s\r\n", cmd)
		reply, _ := r.ReadString('\n')
		fmt.Printf("%-8s -> %s\n", cmd, strings.TrimSpace(reply))
	}
	_, err = r.ReadString('\n')
	fmt.Println("then:", err)
	// Output:
	// XYZZY    -> 250 OK
	// PLUGH    -> 500 Syntax error, command unrecognised or error in parameters or arguments
	// VRFY joe -> 500 Syntax error, command unrecognised or error in parameters or arguments
	// FROB     -> 421 Service not available, closing transmission channel
	// then: EOF
}

// streamHandler takes each message as a stream: it reads the header section with
// net/textproto and counts the body's bytes, never holding the message whole.
type streamHandler struct {
	smtpd.BaseHandler
}

func (streamHandler) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	tp := textproto.NewReader(bufio.NewReader(r))
	header, err := tp.ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return err // an error wrapping an *SMTPError (552 past MaxMessageSize) answers with it
	}
	n, err := io.Copy(io.Discard, tp.R) // or into a file, a socket, a queue
	if err != nil {
		return err
	}
	fmt.Printf("%q from <%s>: %d body bytes\n", header.Get("Subject"), s.Envelope.From, n)
	return nil // 250; OnMessage is not called for a MessageStreamer
}

// A Handler that implements MessageStreamer gets each message as an io.Reader while
// it arrives; memory per session stays a few buffers, whatever the size. The reader
// applies the buffered path's rules: dot-unstuffing, CRLF mode, MaxMessageSize
// (here 1 MiB: the second message gets 552 and the session goes on).
func ExampleMessageStreamer() {
	srv := &smtpd.Server{Handler: streamHandler{}, MaxMessageSize: 1 << 20,
		Hosts: "127.0.0.1", Ports: "0", Logger: slog.New(slog.DiscardHandler)}
	if err := srv.Start(); err != nil {
		fmt.Println("start:", err)
		return
	}
	defer srv.Close()
	c, err := smtp.Dial(srv.Addrs()[0].String())
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer c.Close()
	for _, lines := range []int{4096, 65536} { // 18 bytes a line: 72 KiB, then 1.1 MiB
		c.Mail("me@example.org")
		c.Rcpt("you@example.com")
		w, err := c.Data()
		if err != nil {
			fmt.Println("DATA:", err)
			return
		}
		fmt.Fprint(w, "Subject: Streamed\r\n\r\n", strings.Repeat("0123456789abcdef\r\n", lines))
		fmt.Println("end of data:", w.Close())
	}
	fmt.Println("QUIT:", c.Quit())
	// Output:
	// "Streamed" from <me@example.org>: 73728 body bytes
	// end of data: <nil>
	// end of data: 552 "Requested mail action aborted: exceeded storage allocation"
	// QUIT: <nil>
}

// misspelledHandler means to refuse a recipient, but OnRcpt is no hook: it
// compiles (the embedded BaseHandler supplies OnRcptTo) and is never called.
type misspelledHandler struct {
	smtpd.BaseHandler
}

func (misspelledHandler) OnRcpt(s *smtpd.Session, to string) (string, error) {
	return "", smtpd.SMTPError550
}

// CheckHandler finds the methods of a handler that are named like hooks but that
// the server never calls. Start logs each at Warn, and smtptest.NewServer fails
// the test on them.
func ExampleCheckHandler() {
	fmt.Println(smtpd.CheckHandler(misspelledHandler{}))
	fmt.Println(smtpd.CheckHandler(MyHandler{}))
	// Output:
	// smtpd: smtpd_test.misspelledHandler.OnRcpt is no hook and is never called; did you mean OnRcptTo?
	// <nil>
}
