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
func (s *Session) authOffered() bool {
	return s.cfg.authMode != AuthForbidden && (s.cfg.tlsMode == TLSForbidden || s.IsEncrypted())
}

// cmdAuth runs AUTH PLAIN or AUTH LOGIN (RFC 4954).
func (s *Session) cmdAuth(args string) error {
	switch {
	case s.cfg.authMode == AuthForbidden:
		return SMTPError500
	case s.cfg.tlsMode != TLSForbidden && !s.IsEncrypted():
		return SMTPError538
	case s.state != stateReady || s.IsAuthenticated():
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
		err = s.authPlain(initial)
	case "LOGIN":
		err = s.authLogin(initial)
	default:
		return SMTPError504
	}
	if err == errAuthAborted {
		return nil
	}
	if err == nil && s.IsAuthenticated() {
		s.AuthMechanism = upperASCII(mech)
	}
	return err
}

// authPlain runs RFC 4616 PLAIN through go-sasl, with or without an initial response.
func (s *Session) authPlain(initial *string) error {
	resp, err := s.firstResponse(initial, "")
	if err != nil {
		return err
	}
	called := false
	var authErr error
	server := sasl.NewPlainServer(func(authzID, authcID, password string) error {
		called = true
		authErr = s.authenticate(authzID, authcID, password)
		return authErr
	})
	_, _, err = server.Next(resp)
	if !called {
		return fmt.Errorf("AUTH PLAIN: %v: %w", err, SMTPError501)
	}
	return authErr
}

// authLogin runs the LOGIN mechanism; "AUTH LOGIN <user>" skips the first prompt.
func (s *Session) authLogin(initial *string) error {
	user, err := s.firstResponse(initial, loginUserPrompt)
	if err != nil {
		return err
	}
	pass, err := s.challenge(loginPassPrompt)
	if err != nil {
		return err
	}
	return s.authenticate("", string(user), string(pass))
}

// firstResponse is the client's first AUTH response: the initial response sent with
// the command, or the answer to a first challenge.
func (s *Session) firstResponse(initial *string, prompt string) ([]byte, error) {
	if initial != nil {
		return decodeAuth(*initial)
	}
	return s.challenge(prompt)
}

// challenge sends a 334 with prompt and reads the response: one line, decoded. "*"
// cancels (501); a line over 12288 bytes is 500. The line is never logged.
func (s *Session) challenge(prompt string) ([]byte, error) {
	s.sendText(334, prompt)
	line, err := s.readLine(maxAuthResponse+2, true)
	if err == errSoftLimit || err == nil && len(lineText(line)) > maxAuthResponse {
		s.srv.stats.limit(&s.srv.stats.AuthTooLong)
		return nil, errAuthTooLong
	}
	if err != nil {
		s.readFailed(err)
		s.quit = true
		return nil, errAuthAborted
	}
	s.traceSecret()
	text, err := commandText(line, s.cfg.crlfMode)
	switch {
	case err != nil:
		return nil, errCRLF
	case !s.cfg.pipelining && s.r.hasLine():
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
func (s *Session) authenticate(authzID, authcID, password string) error {
	ret, err := s.h.OnAuth(s, authzID, authcID, password)
	if err != nil {
		return s.authFailed(authcID, err)
	}
	switch {
	case ret != "":
		s.AuthorizationID = ret
	case authzID != "":
		s.AuthorizationID = authzID
	default:
		s.AuthorizationID = authcID
	}
	s.AuthenticationID = authcID
	s.AuthenticatedAt = time.Now().UTC()
	s.srv.stats.AuthSuccesses.Add(1)
	s.log().Info("authenticated", "authentication_id", excerpt(authcID), "authorization_id", excerpt(s.AuthorizationID))
	s.send(replyAuthOK)
	return nil
}

// authFailed counts a 535 and turns the MaxAuthFailures-th one into a 421.
func (s *Session) authFailed(authcID string, err error) error {
	if se, _ := asSMTPError(err); se.Code != 535 {
		return err
	}
	s.authFailures++
	s.srv.stats.AuthFailures.Add(1)
	s.log().Info("authentication failed", "authentication_id", excerpt(authcID), "failures", s.authFailures)
	s.authDelay()
	if max := s.cfg.maxAuthFailures; max > 0 && s.authFailures >= max {
		s.srv.stats.limit(&s.srv.stats.MaxAuthFailures)
		return fmt.Errorf("%d failed AUTH attempts: %w", s.authFailures, errAuthFailures)
	}
	return err
}

// authDelay holds a failed AUTH's reply back for AuthFailureDelay (less when the
// session ends first).
func (s *Session) authDelay() {
	if s.cfg.authFailureDelay <= 0 {
		return
	}
	t := time.NewTimer(s.cfg.authFailureDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}
