package smtpd_test

import (
	"fmt"
	"log/slog"
	"net/smtp"

	"github.com/midismtp/smtpd"
)

// tokenHandler checks OAuth 2.0 bearer tokens (OAUTHBEARER, XOAUTH2); a real one
// asks its OAuth provider whose token it is, with s.Context().
type tokenHandler struct {
	smtpd.BaseHandler
}

var _ smtpd.TokenAuthHandler = tokenHandler{}

func (tokenHandler) OnAuthToken(s *smtpd.Session, t smtpd.AuthToken) (string, error) {
	fmt.Printf("%s token for %s\n", t.Mechanism, t.User)
	if t.User != "alice@example.org" || t.Token != "ya29.good" {
		return "", smtpd.SMTPError535
	}
	return "", nil // AuthorizationID and AuthenticationID: t.User
}

func (tokenHandler) OnMailFrom(s *smtpd.Session, from string) (string, error) {
	fmt.Printf("MAIL from %s, authenticated as %s with %s\n", from, s.AuthenticationID, s.AuthMechanism)
	return "", nil
}

// xoauth2 is a net/smtp client side of XOAUTH2: one response,
// "user=" user ^A "auth=Bearer " token ^A ^A; after a refusal the server sends an
// error challenge, which the client answers with an empty response.
type xoauth2 struct{ user, token string }

func (a xoauth2) Start(*smtp.ServerInfo) (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + a.user + "\x01auth=Bearer " + a.token + "\x01\x01"), nil
}

func (a xoauth2) Next(challenge []byte, more bool) ([]byte, error) {
	if more {
		return []byte{}, nil
	}
	return nil, nil
}

// AuthMechanisms chooses what AUTH offers; the bearer tokens of OAUTHBEARER and
// XOAUTH2 go to the Handler's OnAuthToken (TokenAuthHandler). TLS is forbidden
// here only to keep the example short: a real server offers AUTH over TLS.
func ExampleTokenAuthHandler() {
	srv := &smtpd.Server{
		Handler:        tokenHandler{},
		Hosts:          "127.0.0.1",
		Ports:          "0",
		AuthMode:       smtpd.AuthOptional,
		AuthMechanisms: []string{smtpd.MechanismOAuthBearer, smtpd.MechanismXOAuth2},
		Logger:         slog.New(slog.DiscardHandler),
	}
	if err := srv.Start(); err != nil {
		fmt.Println("start:", err)
		return
	}
	defer srv.Close()

	for _, token := range []string{"expired", "ya29.good"} {
		c, err := smtp.Dial(srv.Addrs()[0].String())
		if err != nil {
			fmt.Println("dial:", err)
			return
		}
		if token == "expired" {
			_, mechs := c.Extension("AUTH")
			fmt.Println("EHLO lists AUTH", mechs)
		}
		fmt.Println("AUTH:", c.Auth(xoauth2{"alice@example.org", token}))
		if token != "expired" {
			c.Mail("alice@example.org")
		}
		c.Quit()
	}
	// Output:
	// EHLO lists AUTH OAUTHBEARER XOAUTH2
	// XOAUTH2 token for alice@example.org
	// AUTH: 535 "Authentication credentials invalid"
	// XOAUTH2 token for alice@example.org
	// AUTH: <nil>
	// MAIL from alice@example.org, authenticated as alice@example.org with XOAUTH2
}
