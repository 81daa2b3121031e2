package smtpd_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/smtp"

	"github.com/midismtp/smtpd"
)

// relayHandler shows the two RFC 8689 requests a relay must honour.
type relayHandler struct {
	smtpd.BaseHandler
}

func (relayHandler) OnMessage(s *smtpd.Session) error {
	fmt.Printf("%s: REQUIRETLS %v, TLS-Required: No %v\n", s.Envelope.From, s.Envelope.RequireTLS, s.Envelope.TLSRequiredNo)
	return nil
}

// mailWith sends a MAIL FROM with parameters, which net/smtp's Client.Mail cannot.
func mailWith(c *smtp.Client, line string) error {
	id, err := c.Text.Cmd("%s", line)
	if err != nil {
		return err
	}
	c.Text.StartResponse(id)
	defer c.Text.EndResponse(id)
	_, _, err = c.Text.ReadResponse(250)
	return err
}

// With RequireTLS, REQUIRETLS (RFC 8689) is offered over TLS only, and MAIL FROM
// ... REQUIRETLS on plaintext is 530 (530 5.7.10 with EnhancedStatusCodes). Over
// TLS it sets Envelope.RequireTLS; a "TLS-Required: No" header field sets
// Envelope.TLSRequiredNo.
func ExampleServer_requireTLS() {
	srv := &smtpd.Server{Handler: relayHandler{}, Hosts: "127.0.0.1", Ports: "0",
		TLSMode: smtpd.TLSOptional, RequireTLS: true, Logger: slog.New(slog.DiscardHandler)}
	if err := srv.Start(); err != nil {
		fmt.Println("start:", err)
		return
	}
	defer srv.Close()
	leaf, err := x509.ParseCertificate(srv.ActiveTLSConfig().Certificates[0].Certificate[0]) // self-signed, for 127.0.0.1
	if err != nil {
		fmt.Println("certificate:", err)
		return
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)

	c, err := smtp.Dial(srv.Addrs()[0].String())
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer c.Close()
	c.Hello("client.example.org")
	ok, _ := c.Extension("REQUIRETLS")
	fmt.Println("plaintext: REQUIRETLS offered:", ok)
	fmt.Println("plaintext:", mailWith(c, "MAIL FROM:<a@example.org> REQUIRETLS"))

	if err := c.StartTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}); err != nil {
		fmt.Println("STARTTLS:", err)
		return
	}
	ok, _ = c.Extension("REQUIRETLS")
	fmt.Println("TLS: REQUIRETLS offered:", ok)
	for _, m := range []struct{ mail, header string }{
		{"MAIL FROM:<a@example.org> REQUIRETLS", ""},
		{"MAIL FROM:<b@example.org>", "TLS-Required: No\r\n"},
	} {
		if err := mailWith(c, m.mail); err != nil {
			fmt.Println("MAIL:", err)
			return
		}
		c.Rcpt("you@example.com")
		w, err := c.Data()
		if err != nil {
			fmt.Println("DATA:", err)
			return
		}
		fmt.Fprint(w, m.header+"Subject: hello\r\n\r\nHi.\r\n")
		w.Close()
	}
	c.Quit()
	// Output:
	// plaintext: REQUIRETLS offered: false
	// plaintext: 530 "REQUIRETLS needs an encrypted connection"
	// TLS: REQUIRETLS offered: true
	// a@example.org: REQUIRETLS true, TLS-Required: No false
	// b@example.org: REQUIRETLS false, TLS-Required: No true
}
