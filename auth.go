package smtpd

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
)

// This file is AUTH (RFC 4954): the command, the SASL exchange of 334 challenges and
// responses, and what a success or a failure does to the session. The mechanisms
// themselves are in mechanisms.go.

// errAuthAborted means the connection ended inside an AUTH exchange; nothing is owed.
var errAuthAborted = errors.New("smtpd: connection ended during AUTH")

// authOffered reports whether EHLO lists AUTH: AUTH is enabled and either TLS is on
// or the operator forbade TLS (and so chose plaintext AUTH).
func (c *conn) authOffered() bool {
	return c.cfg.authMode != AuthForbidden && (c.cfg.tlsMode == TLSForbidden || c.s.IsEncrypted())
}

// authKeyword is the AUTH line of EHLO: the offered mechanisms that this session
// can use (EXTERNAL only with a client certificate), or "" for none.
func (c *conn) authKeyword() string {
	var names []string
	for _, m := range c.cfg.authMechs {
		if c.mechanismUsable(m) {
			names = append(names, m)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return "AUTH " + strings.Join(names, " ")
}

// cmdAuth: RFC 4954 4. "AUTH mechanism [initial-response]"; the exchange of 334
// challenges follows; "*" cancels (501); success is 235, failure 535.
func (c *conn) cmdAuth(args string) error {
	switch {
	case c.cfg.authMode == AuthForbidden:
		return SMTPError500
	case c.cfg.tlsMode != TLSForbidden && !c.s.IsEncrypted():
		return SMTPError538 // RFC 4954 4: a mechanism that exposes secrets, over plaintext
	case c.phase != phaseReady || c.s.IsAuthenticated():
		return SMTPError503 // RFC 4954 4: not twice, not before EHLO, not in a transaction
	}
	name, rest, _ := strings.Cut(strings.TrimSpace(args), " ")
	rest = strings.TrimSpace(rest)
	if name == "" || strings.ContainsAny(rest, " \t") {
		return SMTPError501
	}
	mech := upperASCII(name)
	if !c.mechanismUsable(mech) {
		return SMTPError504 // RFC 4954 4: a mechanism not offered
	}
	var initial []byte
	if rest != "" {
		var err error
		if initial, err = decodeAuth(rest); err != nil {
			return err
		}
	}
	a := &authAttempt{c: c, mech: mech}
	err := a.exchange(c.newMechanism(a), initial)
	switch {
	case err == errAuthAborted && a.hookErr != nil:
		c.countAuthFailure(a.authcID) // refused, then gone: still a failed guess
		return nil
	case err == errAuthAborted:
		return nil
	case err != nil:
		return c.authFailed(a.authcID, err)
	}
	c.authenticated(a)
	return nil
}

// authAttempt is one AUTH exchange: the mechanism, what the client claimed, and the
// program's verdict on it.
type authAttempt struct {
	c       *conn
	mech    string
	authzID string // the authorization identity requested, "" for none
	authcID string // the authentication identity, for the session and the log
	granted string // the authorization identity the hook returned, "" for the requested one
	called  bool   // the hook was asked
	hookErr error  // the hook's refusal
}

// decide records the hook's verdict; every mechanism's hook call goes through it.
func (a *authAttempt) decide(granted string, err error) error {
	a.called, a.granted, a.hookErr = true, granted, err
	return err
}

// exchange runs the SASL exchange of server: the initial response (nil: none),
// then one 334 challenge and response after another until the mechanism is done.
// A response that the mechanism refuses before asking the hook is 501.
func (a *authAttempt) exchange(server sasl.Server, initial []byte) error {
	resp := initial
	for {
		challenge, done, err := a.next(server, resp)
		switch {
		case err != nil && a.hookErr != nil:
			return a.hookErr
		case err != nil:
			return fmt.Errorf("AUTH %s: %v: %w", a.mech, err, SMTPError501)
		case done && !a.called:
			return fmt.Errorf("AUTH %s ended without credentials: %w", a.mech, SMTPError501)
		case done:
			return nil
		}
		resp, err = a.c.challenge(base64.StdEncoding.EncodeToString(challenge))
		switch {
		case a.hookErr != nil && err != errAuthAborted:
			// Refused already: this was the mechanism's error challenge (RFC 7628
			// 3.2.2), and whatever the client answers — %x01, "*", anything — the
			// refusal stands, with its count and its delay.
			return a.hookErr
		case err != nil:
			return err
		}
	}
}

// next is server.Next that turns a panic of the mechanism's code on a client's
// response into a syntax error: a bad response is a 501, never a 421.
func (a *authAttempt) next(server sasl.Server, resp []byte) (challenge []byte, done bool, err error) {
	defer func() {
		if v := recover(); v != nil {
			a.c.log().Warn("SASL mechanism failed on a response", "mechanism", a.mech, "panic", fmt.Sprint(v))
			challenge, done, err = nil, false, fmt.Errorf("AUTH %s: bad response: %w", a.mech, SMTPError501)
		}
	}()
	return server.Next(resp)
}

// challenge sends a 334 with prompt and reads the response: one line, decoded. "*"
// cancels (501); a line over 12288 bytes is 500. The line is never logged.
func (c *conn) challenge(prompt string) ([]byte, error) {
	c.sendText(334, prompt)
	line, err := c.readCommand(maxAuthResponse + 2) // the client's turn, as for a command: Shutdown may interrupt the wait
	if err == errSoftLimit || err == nil && len(lineText(line)) > maxAuthResponse {
		c.srv.stats.limit(&c.srv.stats.AuthTooLong)
		return nil, errAuthTooLong
	}
	if err != nil {
		c.readFailed(err)
		return nil, errAuthAborted
	}
	c.traceSecret()
	text, err := commandText(line, c.cfg.crlfMode)
	switch {
	case err != nil:
		return nil, errCRLF
	case !c.cfg.pipelining && c.r.buffered():
		return nil, errPipelining
	case string(text) == "*":
		return nil, fmt.Errorf("AUTH cancelled by the client: %w", SMTPError501)
	}
	return decodeAuth(string(text))
}

// decodeAuth decodes a base64 AUTH response; "=" is the empty response (RFC 4954 4).
func decodeAuth(text string) ([]byte, error) {
	if text == "=" {
		return []byte{}, nil
	}
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(text)
	}
	if err != nil {
		return nil, fmt.Errorf("AUTH response is not base64: %w", SMTPError501)
	}
	return b, nil
}

// authenticated records a successful AUTH: the identities, and 235.
func (c *conn) authenticated(a *authAttempt) {
	s := c.s
	switch {
	case a.granted != "":
		s.AuthorizationID = a.granted
	case a.authzID != "":
		s.AuthorizationID = a.authzID
	default:
		s.AuthorizationID = a.authcID
	}
	s.AuthenticationID = a.authcID
	s.AuthMechanism = a.mech
	s.AuthenticatedAt = time.Now().UTC()
	c.srv.stats.AuthSuccesses.Add(1)
	c.log().Info("authenticated", "mechanism", a.mech, "authentication_id", excerpt(a.authcID),
		"authorization_id", excerpt(s.AuthorizationID))
	c.send(replyAuthOK)
}

// authFailed counts a 535 and turns the MaxAuthFailures-th one into a 421.
func (c *conn) authFailed(authcID string, err error) error {
	if se, _ := asSMTPError(err); se.Code != 535 {
		return err
	}
	c.countAuthFailure(authcID)
	c.authDelay()
	if max := c.cfg.maxAuthFailures; max > 0 && c.authFailures >= max {
		c.srv.stats.limit(&c.srv.stats.MaxAuthFailures)
		return fmt.Errorf("%d failed AUTH attempts: %w", c.authFailures, errAuthFailures)
	}
	return err
}

// countAuthFailure counts and logs a refused AUTH.
func (c *conn) countAuthFailure(authcID string) {
	c.authFailures++
	c.srv.stats.AuthFailures.Add(1)
	c.log().Info("authentication failed", "authentication_id", excerpt(authcID), "failures", c.authFailures)
}

// authDelay holds a failed AUTH's reply back for AuthFailureDelay (less when the
// session ends first).
func (c *conn) authDelay() {
	if c.cfg.authFailureDelay <= 0 {
		return
	}
	t := time.NewTimer(c.cfg.authFailureDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.context().Done():
	}
}
