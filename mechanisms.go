package smtpd

import (
	"bytes"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"
)

// This file holds the SASL mechanisms AUTH offers (Server.AuthMechanisms) and how
// each one's credentials reach the program: PLAIN (RFC 4616) and LOGIN to OnAuth,
// OAUTHBEARER (RFC 7628) and XOAUTH2 to a TokenAuthHandler, EXTERNAL (RFC 4422
// appendix A) with the TLS client certificate to an ExternalAuthHandler. PLAIN,
// OAUTHBEARER and EXTERNAL are go-sasl's servers; LOGIN and XOAUTH2 are a line each.

// The mechanism names.
const (
	MechanismPlain       = "PLAIN"
	MechanismLogin       = "LOGIN"
	MechanismOAuthBearer = "OAUTHBEARER"
	MechanismXOAuth2     = "XOAUTH2"
	MechanismExternal    = "EXTERNAL"
)

// defaultMechanisms are offered when Server.AuthMechanisms is nil: MidiSmtpServer's
// EHLO line, "AUTH LOGIN PLAIN".
var defaultMechanisms = []string{MechanismLogin, MechanismPlain}

// AuthToken is what OAUTHBEARER (RFC 7628) and XOAUTH2 send: a bearer token (an
// OAuth 2.0 access token) for a user.
type AuthToken struct {
	Mechanism string // MechanismOAuthBearer or MechanismXOAuth2
	User      string // whose token it is: OAUTHBEARER's gs2 authzid ("a="), XOAUTH2's "user="
	Token     string // the bearer token, without "Bearer "
	Host      string // OAUTHBEARER's "host=", when sent
	Port      int    // OAUTHBEARER's "port=", when sent
}

// TokenAuthHandler is an optional interface of a Handler: with OAUTHBEARER or
// XOAUTH2 among Server.AuthMechanisms, OnAuthToken checks the token. As OnAuth: a
// non-empty return becomes s.AuthorizationID (else t.User), t.User becomes
// s.AuthenticationID; an error refuses (SMTPError535 to deny; the client then gets
// the mechanism's error challenge, RFC 7628 3.2.2, before the 535).
type TokenAuthHandler interface {
	OnAuthToken(s *Session, t AuthToken) (string, error)
}

// ExternalAuthHandler is an optional interface of a Handler: with EXTERNAL among
// Server.AuthMechanisms, OnAuthExternal decides whether the TLS client certificate
// (s.TLSState(): PeerCertificates, and VerifiedChains when Server.TLSClientAuth
// verifies them) authenticates the client as authorizationID ("" when the client
// asked for none: the certificate's own identity). A non-empty return becomes
// s.AuthorizationID (else authorizationID, else the certificate's subject);
// s.AuthenticationID is the certificate's subject. An error refuses
// (SMTPError535). EXTERNAL is offered only to a session with a client certificate.
type ExternalAuthHandler interface {
	OnAuthExternal(s *Session, authorizationID string) (string, error)
}

// mechanismUsable reports whether this session may use mech: it is offered, and
// for EXTERNAL the client presented a certificate.
func (c *conn) mechanismUsable(mech string) bool {
	for _, m := range c.cfg.authMechs {
		if m == mech {
			return mech != MechanismExternal || c.peerCertificate() != ""
		}
	}
	return false
}

// peerCertificate is the subject of the client's TLS certificate, "" for none.
func (c *conn) peerCertificate() string {
	if c.tlsState == nil || len(c.tlsState.PeerCertificates) == 0 {
		return ""
	}
	leaf := c.tlsState.PeerCertificates[0]
	if leaf.Subject.CommonName != "" {
		return leaf.Subject.CommonName
	}
	return leaf.Subject.String()
}

// newMechanism returns the SASL server of a.mech (one mechanismUsable accepted),
// its hook call recorded in a.
func (c *conn) newMechanism(a *authAttempt) sasl.Server {
	switch a.mech {
	case MechanismPlain:
		return sasl.NewPlainServer(func(authzID, authcID, password string) error {
			a.authzID, a.authcID = authzID, authcID
			return a.decide(c.h.OnAuth(c.s, authzID, authcID, password))
		})
	case MechanismLogin:
		return &loginServer{check: func(user, password string) error {
			a.authcID = user
			return a.decide(c.h.OnAuth(c.s, "", user, password))
		}}
	case MechanismOAuthBearer:
		return sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
			err := c.checkToken(a, AuthToken{Mechanism: a.mech, User: o.Username, Token: o.Token, Host: o.Host, Port: o.Port})
			if err != nil {
				return &sasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer"}
			}
			return nil
		})
	case MechanismXOAuth2:
		return &xoauth2Server{check: func(user, token string) error {
			return c.checkToken(a, AuthToken{Mechanism: a.mech, User: user, Token: token})
		}}
	}
	return sasl.NewExternalServer(func(authzID string) error {
		a.authzID, a.authcID = authzID, c.peerCertificate()
		eh, ok := c.h.(ExternalAuthHandler)
		if !ok {
			return a.decide("", SMTPError535) // Start refuses this configuration; a defence in depth
		}
		return a.decide(eh.OnAuthExternal(c.s, authzID))
	})
}

// checkToken hands a bearer token to the TokenAuthHandler.
func (c *conn) checkToken(a *authAttempt, t AuthToken) error {
	a.authcID = t.User
	th, ok := c.h.(TokenAuthHandler)
	if !ok {
		return a.decide("", SMTPError535) // Start refuses this configuration; a defence in depth
	}
	return a.decide(th.OnAuthToken(c.s, t))
}

// loginServer is the LOGIN mechanism (draft-murchison-sasl-login): the prompts
// "Username:" and "Password:"; an initial response is the user name.
type loginServer struct {
	check func(user, password string) error
	user  []byte
	step  int
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch {
	case l.step == 0 && resp == nil:
		l.step = 1
		return []byte("Username:"), false, nil
	case l.step <= 1:
		l.user, l.step = resp, 2
		return []byte("Password:"), false, nil
	case l.step == 2:
		l.step = 3
		return nil, true, l.check(string(l.user), string(resp))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}

// xoauth2Server is Google's XOAUTH2: one response,
// "user=" user ^A "auth=Bearer " token ^A ^A; a refusal is answered with an error
// challenge (a JSON status, as Gmail's), whose response (empty) ends it.
type xoauth2Server struct {
	check  func(user, token string) error
	failed error
}

var errXOAuth2Syntax = errors.New("malformed XOAUTH2 response")

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	switch {
	case x.failed != nil:
		return nil, true, x.failed
	case resp == nil:
		return []byte{}, false, nil
	}
	user, token, ok := parseXOAuth2(resp)
	if !ok {
		return nil, false, errXOAuth2Syntax
	}
	if err := x.check(user, token); err != nil {
		x.failed = err
		return []byte(`{"status":"401","schemes":"bearer"}`), false, nil
	}
	return nil, true, nil
}

// parseXOAuth2 reads "user=" user ^A "auth=Bearer " token ^A ^A.
func parseXOAuth2(resp []byte) (user, token string, ok bool) {
	fields := bytes.Split(bytes.TrimSuffix(resp, []byte{1, 1}), []byte{1})
	for _, f := range fields {
		k, v, found := strings.Cut(string(f), "=")
		switch {
		case !found:
			return "", "", false
		case k == "user":
			user = v
		case k == "auth" && len(v) > 7 && equalFoldASCII(v, "Bearer "):
			token = v[7:]
		}
	}
	return user, token, user != "" && token != "" && !hasControl(user) && !hasControl(token)
}
