package smtpd

import (
	"errors"
	"strconv"
	"strings"
)

// SMTPError is an error with an SMTP reply: a hook returns one (or wraps one with
// fmt.Errorf("...: %w", err)) and the server answers the client with its Code,
// EnhancedCode and Message. It is the port of Ruby's Smtpd???Exception classes.
//
// A Message with line breaks is sent as a multi-line reply; CR never reaches the
// client. The EnhancedCode is sent only while Server.EnhancedStatusCodes is on
// (RFC 2034), a program's own as the predefined ones'; then a reply whose
// EnhancedCode is empty, or not RFC 3463 syntax (class.subject.detail, the class
// equal to Code's first digit, 1-3 digits each), gets its class default X.0.0
// instead, so no hook can inject a reply line through it. OnMailFrom, OnRcptTo,
// OnMessage and OnUnknown may also return one with a success code (2xx or 3xx) to
// succeed with that reply instead of the default one.
type SMTPError struct {
	Code         int    // reply code: 400..599 for an error, 200..399 for a success reply
	EnhancedCode string // RFC 3463 status code such as "5.1.1" (class matching Code), or "": sent only with EnhancedStatusCodes
	Message      string // reply text
}

// Error returns the reply line as a client sees it with EnhancedStatusCodes on:
// code, enhanced code (when set) and text, e.g. "550 5.1.1 Requested action not
// taken: mailbox unavailable". It is what the log shows of a hook's error.
func (e *SMTPError) Error() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(e.Code))
	if e.EnhancedCode != "" {
		b.WriteByte(' ')
		b.WriteString(e.EnhancedCode)
	}
	b.WriteByte(' ')
	b.WriteString(e.Message)
	return b.String()
}

// Temporary reports whether the code is a transient (4xx) one.
func (e *SMTPError) Temporary() bool { return e.Code >= 400 && e.Code < 500 }

// The predefined replies, one for every exception class of MidiSmtpServer, with its
// texts (but SMTPError421's, which is RFC 5321's) and the RFC 3463 code of its
// meaning, sent while Server.EnhancedStatusCodes is on. Each is a plain value: a
// copy sends the same reply. They are shared: do not modify them.
var (
	// SMTPError421 closes the connection after the reply.
	SMTPError421 = &SMTPError{Code: 421, EnhancedCode: "4.3.2", Message: "Service not available, closing transmission channel"}
	SMTPError432 = &SMTPError{Code: 432, EnhancedCode: "4.7.12", Message: "Password transition is needed"}
	SMTPError450 = &SMTPError{Code: 450, EnhancedCode: "4.2.0", Message: "Requested mail action not taken: mailbox unavailable"}
	SMTPError451 = &SMTPError{Code: 451, EnhancedCode: "4.3.0", Message: "Requested action aborted: local error in processing"}
	SMTPError452 = &SMTPError{Code: 452, EnhancedCode: "4.3.1", Message: "Requested action not taken: insufficient system storage"}
	SMTPError454 = &SMTPError{Code: 454, EnhancedCode: "4.7.0", Message: "Temporary authentication failure"}
	SMTPError500 = &SMTPError{Code: 500, EnhancedCode: "5.5.2", Message: "Syntax error, command unrecognised or error in parameters or arguments"}
	SMTPError501 = &SMTPError{Code: 501, EnhancedCode: "5.5.4", Message: "Syntax error in parameters or arguments"}
	SMTPError502 = &SMTPError{Code: 502, EnhancedCode: "5.5.1", Message: "Command not implemented"}
	SMTPError503 = &SMTPError{Code: 503, EnhancedCode: "5.5.1", Message: "Bad sequence of commands"}
	SMTPError504 = &SMTPError{Code: 504, EnhancedCode: "5.5.4", Message: "Command parameter not implemented"}
	SMTPError521 = &SMTPError{Code: 521, EnhancedCode: "5.3.2", Message: "Service does not accept mail"}
	SMTPError530 = &SMTPError{Code: 530, EnhancedCode: "5.7.0", Message: "Authentication required"}
	SMTPError534 = &SMTPError{Code: 534, EnhancedCode: "5.7.9", Message: "Authentication mechanism is too weak"}
	SMTPError535 = &SMTPError{Code: 535, EnhancedCode: "5.7.8", Message: "Authentication credentials invalid"}
	SMTPError538 = &SMTPError{Code: 538, EnhancedCode: "5.7.11", Message: "Encryption required for requested authentication mechanism"}
	SMTPError550 = &SMTPError{Code: 550, EnhancedCode: "5.1.1", Message: "Requested action not taken: mailbox unavailable"}
	SMTPError552 = &SMTPError{Code: 552, EnhancedCode: "5.3.4", Message: "Requested mail action aborted: exceeded storage allocation"}
	SMTPError553 = &SMTPError{Code: 553, EnhancedCode: "5.1.3", Message: "Requested action not taken: mailbox name not allowed"}
	SMTPError554 = &SMTPError{Code: 554, EnhancedCode: "5.0.0", Message: "Transaction failed"}
	SMTPError555 = &SMTPError{Code: 555, EnhancedCode: "5.5.4", Message: "MAIL FROM/RCPT TO parameters not recognized or not implemented"}
)

// Replies of the server itself that no hook returns; their texts are MidiSmtpServer's
// where it has one.
var (
	errBusy         = &SMTPError{Code: 421, EnhancedCode: "4.3.2", Message: "Service too busy or not available, closing transmission channel"}
	errTLSRequired  = &SMTPError{Code: 530, EnhancedCode: "5.7.0", Message: "Encryption required, must issue STARTTLS command first"}
	errPipelining   = &SMTPError{Code: 500, EnhancedCode: "5.5.0", Message: "Bad input, PIPELINING is not allowed"}
	errCRLF         = &SMTPError{Code: 500, EnhancedCode: "5.5.2", Message: "Bad input, Lines must be terminated by CRLF sequence"}
	errLineTooLong  = &SMTPError{Code: 421, EnhancedCode: "4.5.0", Message: "Line too long, closing transmission channel"}
	errTimeout      = &SMTPError{Code: 421, EnhancedCode: "4.4.2", Message: "Timeout, closing transmission channel"}
	errAuthFailures = &SMTPError{Code: 421, EnhancedCode: "4.7.0", Message: "Too many authentication failures, closing transmission channel"}

	errTooManyRecipients = &SMTPError{Code: 452, EnhancedCode: "4.5.3", Message: "Too many recipients"}
	errCommandTooLong    = &SMTPError{Code: 500, EnhancedCode: "5.5.2", Message: "Line too long"}
	errAuthTooLong       = &SMTPError{Code: 500, EnhancedCode: "5.5.6", Message: "AUTH response too long"}
	errTooManyErrors     = &SMTPError{Code: 421, EnhancedCode: "4.7.0", Message: "Too many errors, closing transmission channel"}
	errTooManyJunk       = &SMTPError{Code: 421, EnhancedCode: "4.7.0", Message: "Too many commands without mail, closing transmission channel"}
	errPerIP             = &SMTPError{Code: 421, EnhancedCode: "4.7.0", Message: "Too many connections from your address, closing transmission channel"}
	errWaitTimeout       = &SMTPError{Code: 421, EnhancedCode: "4.3.2", Message: "Service too busy, try again later, closing transmission channel"}
	errPregreet          = &SMTPError{Code: 554, EnhancedCode: "5.5.1", Message: "Protocol error, client talked before the greeting"}
	errNonSMTP           = &SMTPError{Code: 554, EnhancedCode: "5.5.1", Message: "Non-SMTP command, closing transmission channel"}
	errSlowData          = &SMTPError{Code: 421, EnhancedCode: "4.4.2", Message: "Data transfer too slow, closing transmission channel"}
	errBufferedData      = &SMTPError{Code: 452, EnhancedCode: "4.3.1", Message: "Insufficient system storage, try again later"}
	errXClientDenied     = &SMTPError{Code: 550, EnhancedCode: "5.7.0", Message: "XCLIENT not permitted"}
	errBadHelo           = &SMTPError{Code: 501, EnhancedCode: "5.5.2", Message: "Syntax error in parameters or arguments"}
	errTooManyParams     = &SMTPError{Code: 501, EnhancedCode: "5.5.4", Message: "Too many parameters"}
	errRequireTLSPlain   = &SMTPError{Code: 530, EnhancedCode: "5.7.10", Message: "REQUIRETLS needs an encrypted connection"}
	errBdatSyntax        = &SMTPError{Code: 501, EnhancedCode: "5.5.4", Message: "Syntax error, BDAT needs a size and an optional LAST, closing transmission channel"}
)

// The server's success replies (hooks may replace some with their own).
var (
	replyOK        = &SMTPError{Code: 250, EnhancedCode: "2.0.0", Message: "OK"}
	replyMailOK    = &SMTPError{Code: 250, EnhancedCode: "2.1.0", Message: "OK"}
	replyRcptOK    = &SMTPError{Code: 250, EnhancedCode: "2.1.5", Message: "OK"}
	replyDelivered = &SMTPError{Code: 250, EnhancedCode: "2.0.0", Message: "Requested mail action okay, completed"}
	replyBye       = &SMTPError{Code: 221, EnhancedCode: "2.0.0", Message: "Service closing transmission channel"}
	replyAuthOK    = &SMTPError{Code: 235, EnhancedCode: "2.7.0", Message: "OK"}
	replyStartTLS  = &SMTPError{Code: 220, EnhancedCode: "2.0.0", Message: "Ready to start TLS"}
)

// ErrServerClosed is returned by Serve, and by Start's listeners, after Shutdown or Close.
var ErrServerClosed = errors.New("smtpd: Server closed")

// validEnhanced reports whether enh is an RFC 3463 status code whose class
// (2, 4 or 5) is code's first digit: class "." 1*3digit "." 1*3digit.
func validEnhanced(code int, enh string) bool {
	if len(enh) < 5 || len(enh) > 9 || int(enh[0]-'0') != code/100 || enh[1] != '.' {
		return false
	}
	if c := enh[0]; c != '2' && c != '4' && c != '5' {
		return false
	}
	subject, detail, ok := strings.Cut(enh[2:], ".")
	return ok && isDigits(subject, 1, 3) && isDigits(detail, 1, 3)
}

// asSMTPError finds the error reply (4xx or 5xx SMTPError) in err's chain; any other
// error becomes 451.
func asSMTPError(err error) (*SMTPError, bool) {
	var se *SMTPError
	if errors.As(err, &se) && se != nil && se.Code >= 400 && se.Code <= 599 {
		return se, true
	}
	return SMTPError451, false
}

// successReply returns the SMTPError in err's chain when its code is a success one
// (200-399): OnMailFrom, OnRcptTo, OnMessage and OnUnknown may return one to succeed
// with their own reply, e.g. "251 User not local; will forward". From other hooks a
// success code is a mistake and answers 451.
func successReply(err error) *SMTPError {
	if err == nil {
		return nil
	}
	return asSuccess(err)
}

// asSuccess is successReply's errors.As, apart so that a nil error costs no allocation.
func asSuccess(err error) *SMTPError {
	var se *SMTPError
	if errors.As(err, &se) && se != nil && se.Code >= 200 && se.Code < 400 {
		return se
	}
	return nil
}

// wrappedReply is an SMTPError reply with the error that caused it, for the log.
type wrappedReply struct {
	reply *SMTPError
	err   error
}

func (w *wrappedReply) Error() string   { return w.err.Error() + " (" + strconv.Itoa(w.reply.Code) + ")" }
func (w *wrappedReply) Unwrap() []error { return []error{w.reply, w.err} }
