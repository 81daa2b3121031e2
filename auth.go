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
	f := strings.Fields(args)
	if len(f) == 0 || len(f) > 2 {
		return SMTPError501
	}
	var initial *string
	if len(f) == 2 {
		initial = &f[1]
	}
	var err error
	switch strings.ToUpper(f[0]) {
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
	return err
}

// authPlain runs RFC 4616 PLAIN through go-sasl, with or without an initial response.
func (s *Session) authPlain(initial *string) error {
	var resp []byte
	var err error
	if initial != nil {
		resp, err = decodeAuth(*initial)
	} else {
		s.reply(334, "")
		resp, err = s.readAuthResponse()
	}
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
	var user []byte
	var err error
	if initial != nil {
		user, err = decodeAuth(*initial)
	} else {
		s.reply(334, loginUserPrompt)
		user, err = s.readAuthResponse()
	}
	if err != nil {
		return err
	}
	s.reply(334, loginPassPrompt)
	pass, err := s.readAuthResponse()
	if err != nil {
		return err
	}
	return s.authenticate("", string(user), string(pass))
}

// readAuthResponse reads one line of an AUTH exchange and decodes it. "*" cancels
// (501). The line is never logged.
func (s *Session) readAuthResponse() ([]byte, error) {
	line, err := s.readLine(true)
	if err != nil {
		s.readFailed(err)
		s.quit = true
		return nil, errAuthAborted
	}
	s.trace("<<< ", "*** (AUTH response)")
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
	s.logger.Info("authenticated", "authentication_id", authcID, "authorization_id", s.AuthorizationID)
	s.reply(235, "OK")
	return nil
}

// authFailed counts a 535 and turns the MaxAuthFailures-th one into a 421.
func (s *Session) authFailed(authcID string, err error) error {
	if se, _ := asSMTPError(err); se.Code != 535 {
		return err
	}
	s.authFailures++
	s.logger.Info("authentication failed", "authentication_id", authcID, "failures", s.authFailures)
	if max := s.cfg.maxAuthFailures; max > 0 && s.authFailures >= max {
		return fmt.Errorf("%d failed AUTH attempts: %w", s.authFailures, errAuthFailures)
	}
	return err
}
