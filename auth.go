package smtpd

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
)

// The LOGIN mechanism's prompts: base64 of "Username:" and "Password:".
const (
	loginUserPrompt = "VXNlcm5hbWU6"
	loginPassPrompt = "UGFzc3dvcmQ6"
)

// errAuthAborted means the connection ended inside an AUTH exchange; nothing is owed.
var errAuthAborted = errors.New("smtpd: connection ended during AUTH")

// authOffered reports whether EHLO lists AUTH: AUTH is enabled and either TLS is on
// or the operator forbade TLS (and so chose plaintext AUTH).
func (c *conn) authOffered() bool {
	return c.cfg.authMode != AuthForbidden && (c.cfg.tlsMode == TLSForbidden || c.s.IsEncrypted())
}

// cmdAuth runs AUTH PLAIN or AUTH LOGIN (RFC 4954).
func (c *conn) cmdAuth(args string) error {
	switch {
	case c.cfg.authMode == AuthForbidden:
		return SMTPError500
	case c.cfg.tlsMode != TLSForbidden && !c.s.IsEncrypted():
		return SMTPError538
	case c.phase != phaseReady || c.s.IsAuthenticated():
		return SMTPError503
	}
	mech, rest, _ := strings.Cut(strings.TrimSpace(args), " ")
	rest = strings.TrimSpace(rest)
	if mech == "" || strings.ContainsAny(rest, " \t") {
		return SMTPError501
	}
	var initial *string
	if rest != "" {
		initial = &rest
	}
	var err error
	switch upperASCII(mech) {
	case "PLAIN":
		err = c.authPlain(initial)
	case "LOGIN":
		err = c.authLogin(initial)
	default:
		return SMTPError504
	}
	if err == errAuthAborted {
		return nil
	}
	if err == nil && c.s.IsAuthenticated() {
		c.s.AuthMechanism = upperASCII(mech)
	}
	return err
}

// authPlain runs RFC 4616 PLAIN through go-sasl, with or without an initial response.
func (c *conn) authPlain(initial *string) error {
	resp, err := c.firstResponse(initial, "")
	if err != nil {
		return err
	}
	called := false
	var authErr error
	server := sasl.NewPlainServer(func(authzID, authcID, password string) error {
		called = true
		authErr = c.authenticate(authzID, authcID, password)
		return authErr
	})
	_, _, err = server.Next(resp)
	if !called {
		return fmt.Errorf("AUTH PLAIN: %v: %w", err, SMTPError501)
	}
	return authErr
}

// authLogin runs the LOGIN mechanism; "AUTH LOGIN <user>" skips the first prompt.
func (c *conn) authLogin(initial *string) error {
	user, err := c.firstResponse(initial, loginUserPrompt)
	if err != nil {
		return err
	}
	pass, err := c.challenge(loginPassPrompt)
	if err != nil {
		return err
	}
	return c.authenticate("", string(user), string(pass))
}

// firstResponse is the client's first AUTH response: the initial response sent with
// the command, or the answer to a first challenge.
func (c *conn) firstResponse(initial *string, prompt string) ([]byte, error) {
	if initial != nil {
		return decodeAuth(*initial)
	}
	return c.challenge(prompt)
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

// authenticate asks OnAuth and, on success, records the identities and answers 235.
func (c *conn) authenticate(authzID, authcID, password string) error {
	ret, err := c.h.OnAuth(c.s, authzID, authcID, password)
	if err != nil {
		return c.authFailed(authcID, err)
	}
	switch {
	case ret != "":
		c.s.AuthorizationID = ret
	case authzID != "":
		c.s.AuthorizationID = authzID
	default:
		c.s.AuthorizationID = authcID
	}
	c.s.AuthenticationID = authcID
	c.s.AuthenticatedAt = time.Now().UTC()
	c.srv.stats.AuthSuccesses.Add(1)
	c.log().Info("authenticated", "authentication_id", excerpt(authcID), "authorization_id", excerpt(c.s.AuthorizationID))
	c.send(replyAuthOK)
	return nil
}

// authFailed counts a 535 and turns the MaxAuthFailures-th one into a 421.
func (c *conn) authFailed(authcID string, err error) error {
	if se, _ := asSMTPError(err); se.Code != 535 {
		return err
	}
	c.authFailures++
	c.srv.stats.AuthFailures.Add(1)
	c.log().Info("authentication failed", "authentication_id", excerpt(authcID), "failures", c.authFailures)
	c.authDelay()
	if max := c.cfg.maxAuthFailures; max > 0 && c.authFailures >= max {
		c.srv.stats.limit(&c.srv.stats.MaxAuthFailures)
		return fmt.Errorf("%d failed AUTH attempts: %w", c.authFailures, errAuthFailures)
	}
	return err
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
	case <-c.ctx.Done():
	}
}
