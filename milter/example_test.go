package milter_test

import (
	"fmt"
	"log"
	"net"
	"net/smtp"
	"strings"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/milter"
)

// stamp is a milter (on go-milter's server side) that adds a header field to
// every message.
type stamp struct{ gomilter.NoOpMilter }

func (stamp) EndOfMessage(m gomilter.Modifier) (*gomilter.Response, error) {
	return gomilter.RespAccept, m.AddHeader("X-Filtered", "by a milter")
}

// printer prints each message it gets.
type printer struct {
	smtpd.BaseHandler
	done chan struct{}
}

func (p *printer) OnMessage(s *smtpd.Session) error {
	if reason, ok := milter.Quarantined(s); ok {
		fmt.Println("quarantined:", reason)
	}
	fmt.Print(strings.ReplaceAll(string(s.Message.Data), "\r\n", "\n"))
	close(p.done)
	return nil
}

// Example wraps a handler with one milter and sends it a message.
func Example() {
	// A milter on loopback (here go-milter's server; in production OpenDKIM,
	// rspamd, spamass-milter, clamav-milter...).
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	filter := gomilter.NewServer(gomilter.WithMilter(func() gomilter.Milter { return stamp{} }),
		gomilter.WithActions(gomilter.OptAddHeader))
	go filter.Serve(ml)
	defer filter.Close()

	// The server, its handler wrapped with the milter.
	milters, err := milter.ParseMilters("inet:" + ml.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	h := &printer{done: make(chan struct{})}
	srv := &smtpd.Server{Handler: milter.Wrap(h, milter.Config{Milters: milters})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()

	msg := "Subject: hello\r\n\r\nHi there.\r\n"
	if err := smtp.SendMail(l.Addr().String(), nil, "a@example.org", []string{"b@example.net"}, []byte(msg)); err != nil {
		log.Fatal(err)
	}
	<-h.done
	// Output:
	// Subject: hello
	// X-Filtered: by a milter
	//
	// Hi there.
}

func ExampleParseMilters() {
	ms, err := milter.ParseMilters("inet:127.0.0.1:8891, unix:/run/rspamd/milter.sock inet:[::1]:11332")
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range ms {
		network, address, _ := milter.ParseAddr(m.Addr)
		fmt.Println(network, address)
	}
	// Output:
	// tcp 127.0.0.1:8891
	// unix /run/rspamd/milter.sock
	// tcp [::1]:11332
}

func ExampleParseDefaultAction() {
	a, err := milter.ParseDefaultAction("accept")
	fmt.Println(a, err)
	_, err = milter.ParseDefaultAction("shutdown")
	fmt.Println(err)
	// Output:
	// accept <nil>
	// milter: unknown default action "shutdown" (want tempfail, accept or reject)
}

// folders is a handler that files quarantined messages apart.
type folders struct {
	smtpd.BaseHandler
	save func(folder string, data []byte) error
}

// OnMessage files the message in "quarantine" when a milter asked for it.
func (f *folders) OnMessage(s *smtpd.Session) error {
	if _, ok := milter.Quarantined(s); ok {
		return f.save("quarantine", s.Message.Data)
	}
	return f.save("inbox", s.Message.Data)
}

// ExampleQuarantined wraps a handler that files quarantined messages apart
// (clamav-milter and rspamd quarantine rather than refuse when so configured).
func ExampleQuarantined() {
	ms, _ := milter.ParseMilters("inet:127.0.0.1:7357") // clamav-milter
	h := &folders{save: func(string, []byte) error { return nil }}
	srv := &smtpd.Server{Handler: milter.Wrap(h, milter.Config{Milters: ms, DefaultAction: milter.TempFail})}
	_ = srv
}
