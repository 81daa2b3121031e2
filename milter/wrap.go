package milter

import (
	"github.com/midismtp/smtpd"
)

// errNotReady is the skeleton's fail-safe reply: no message passes unfiltered.
var errNotReady = &smtpd.SMTPError{Code: 451, EnhancedCode: "4.7.1", Message: "Milter client not ready, try again later"}

// Wrap returns a Handler that calls the milters at every stage Postfix does and
// applies their replies and modifications to what h (the program's handler) sees.
// h may implement the optional interfaces (smtpd.MessageStreamer,
// smtpd.RecipientHandler, ...); Wrap keeps them.
//
// SKELETON: every transaction is refused with 451 4.7.1 until the client is built.
func Wrap(h smtpd.Handler, c Config) smtpd.Handler {
	return &skeleton{Handler: h}
}

type skeleton struct{ smtpd.Handler }

func (w *skeleton) OnMailFrom(s *smtpd.Session, from string) (string, error) {
	return "", errNotReady
}

// Quarantined reports whether a milter asked to quarantine the current message,
// with its reason; valid in h's OnMessage / OnMessageStream.
func Quarantined(s *smtpd.Session) (reason string, ok bool) {
	return "", false
}
