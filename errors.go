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
// A Message with line breaks is sent as a multi-line reply. An empty EnhancedCode
// sends none (the predefined errors have none, as in MidiSmtpServer). OnMailFrom,
// OnRcptTo, OnMessage and OnUnknown may also return one with a success code (2xx or
// 3xx) to succeed with that reply instead of the default one.
type SMTPError struct {
	Code         int    // reply code, 400..599
	EnhancedCode string // RFC 3463 status code such as "5.1.1", or ""
	Message      string // reply text
}

// Error returns the reply as the client sees it, e.g. "550 Requested action not taken: mailbox unavailable".
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

// The predefined replies, one for every exception class of MidiSmtpServer, with its texts.
var (
	// SMTPError421 closes the connection after the reply.
	SMTPError421 = &SMTPError{Code: 421, Message: "Service not available, closing transmission channel"}
	SMTPError432 = &SMTPError{Code: 432, Message: "Password transition is needed"}
	SMTPError450 = &SMTPError{Code: 450, Message: "Requested mail action not taken: mailbox unavailable"}
	SMTPError451 = &SMTPError{Code: 451, Message: "Requested action aborted: local error in processing"}
	SMTPError452 = &SMTPError{Code: 452, Message: "Requested action not taken: insufficient system storage"}
	SMTPError454 = &SMTPError{Code: 454, Message: "Temporary authentication failure"}
	SMTPError500 = &SMTPError{Code: 500, Message: "Syntax error, command unrecognised or error in parameters or arguments"}
	SMTPError501 = &SMTPError{Code: 501, Message: "Syntax error in parameters or arguments"}
	SMTPError502 = &SMTPError{Code: 502, Message: "Command not implemented"}
	SMTPError503 = &SMTPError{Code: 503, Message: "Bad sequence of commands"}
	SMTPError504 = &SMTPError{Code: 504, Message: "Command parameter not implemented"}
	SMTPError521 = &SMTPError{Code: 521, Message: "Service does not accept mail"}
	SMTPError530 = &SMTPError{Code: 530, Message: "Authentication required"}
	SMTPError534 = &SMTPError{Code: 534, Message: "Authentication mechanism is too weak"}
	SMTPError535 = &SMTPError{Code: 535, Message: "Authentication credentials invalid"}
	SMTPError538 = &SMTPError{Code: 538, Message: "Encryption required for requested authentication mechanism"}
	SMTPError550 = &SMTPError{Code: 550, Message: "Requested action not taken: mailbox unavailable"}
	SMTPError552 = &SMTPError{Code: 552, Message: "Requested mail action aborted: exceeded storage allocation"}
	SMTPError553 = &SMTPError{Code: 553, Message: "Requested action not taken: mailbox name not allowed"}
	SMTPError554 = &SMTPError{Code: 554, Message: "Transaction failed"}
	SMTPError555 = &SMTPError{Code: 555, Message: "MAIL FROM/RCPT TO parameters not recognized or not implemented"}
)

// Replies of the server itself that no hook returns; their texts are MidiSmtpServer's.
var (
	errBusy         = &SMTPError{Code: 421, Message: "Service too busy or not available, closing transmission channel"}
	errTLSRequired  = &SMTPError{Code: 530, Message: "Encryption required, must issue STARTTLS command first"}
	errPipelining   = &SMTPError{Code: 500, Message: "Bad input, PIPELINING is not allowed"}
	errCRLF         = &SMTPError{Code: 500, Message: "Bad input, Lines must be terminated by CRLF sequence"}
	errLineTooLong  = &SMTPError{Code: 421, Message: "Line too long, closing transmission channel"}
	errTimeout      = &SMTPError{Code: 421, Message: "Timeout, closing transmission channel"}
	errAuthFailures = &SMTPError{Code: 421, Message: "Too many authentication failures, closing transmission channel"}
)

// ErrServerClosed is returned by Serve, and by Start's listeners, after Shutdown or Close.
var ErrServerClosed = errors.New("smtpd: Server closed")

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
	var se *SMTPError
	if err != nil && errors.As(err, &se) && se != nil && se.Code >= 200 && se.Code < 400 {
		return se
	}
	return nil
}
