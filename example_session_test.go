package smtpd_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/smtp"
	"strings"
	"time"

	"github.com/midismtp/smtpd"
)

// tally is one connection's own state, kept in Session.UserData.
type tally struct {
	delivered []string // the numbers of the messages delivered, from Message.ID
}

// tallyOf returns the session's tally, made at its first use.
func tallyOf(s *smtpd.Session) *tally {
	t, _ := s.UserData.(*tally)
	if t == nil {
		t = &tally{}
		s.UserData = t
	}
	return t
}

// tallyHandler refuses one sender, and counts the messages of each session in
// its UserData, without a lock: the hooks of one session run one at a time.
type tallyHandler struct {
	smtpd.BaseHandler
}

func (tallyHandler) OnMailFrom(s *smtpd.Session, from string) (string, error) {
	if from == "spammer@example.net" {
		return "", smtpd.SMTPError550
	}
	return "", nil
}

func (tallyHandler) OnMessage(s *smtpd.Session) error {
	n := strings.TrimPrefix(s.Message.ID, s.ID+"-") // Message.ID is "<Session.ID>-<n>"
	t := tallyOf(s)
	t.delivered = append(t.delivered, n)
	fmt.Println("message", n, "of the session")
	return nil
}

func (tallyHandler) OnDisconnect(s *smtpd.Session) {
	if t, ok := s.UserData.(*tally); ok {
		fmt.Println("session delivered messages", t.delivered)
	}
}

// Session.UserData holds a program's own value for one connection, and
// Message.ID names each message: the session's ID and the number of its MAIL FROM.
// A MAIL FROM that OnMailFrom refuses, and a transaction abandoned by RSET, use
// their numbers too: here messages 1 and 4 are delivered.
func ExampleSession_userData() {
	srv := &smtpd.Server{Handler: tallyHandler{}, Hosts: "127.0.0.1", Ports: "0", Logger: slog.New(slog.DiscardHandler)}
	if err := srv.Start(); err != nil {
		fmt.Println("start:", err)
		return
	}
	c, err := smtp.Dial(srv.Addrs()[0].String())
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	send := func() {
		c.Mail("me@example.org")
		c.Rcpt("you@example.com")
		w, err := c.Data()
		if err != nil {
			fmt.Println("DATA:", err)
			return
		}
		fmt.Fprint(w, "Subject: hello\r\n\r\nHi.\r\n")
		w.Close()
	}
	send()                                              // 1: delivered
	fmt.Println("MAIL:", c.Mail("spammer@example.net")) // 2: refused by OnMailFrom
	c.Mail("me@example.org")                            // 3: begun,
	fmt.Println("RSET:", c.Reset())                     //    then abandoned
	send()                                              // 4: delivered
	quit := c.Quit()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(ctx) // returns once the session has ended: OnDisconnect has run
	fmt.Println("QUIT:", quit)
	// Output:
	// message 1 of the session
	// MAIL: 550 "Requested action not taken: mailbox unavailable"
	// RSET: <nil>
	// message 4 of the session
	// session delivered messages [1 4]
	// QUIT: <nil>
}
