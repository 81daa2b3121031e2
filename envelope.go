package smtpd

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/midismtp/smtpd/internal/address"
)

// This file holds the transaction commands: MAIL, RCPT, RSET and DATA's command
// part (RFC 5321 4.1.1.2-4.1.1.5), and the ESMTP parameters of MAIL.

// mailParams are the MAIL FROM parameters this server knows.
type mailParams struct {
	body, utf8 string
}

func (s *Session) cmdMail(args string) error {
	if err := s.transactionAllowed(s.state == stateReady); err != nil {
		return err
	}
	path, err := parsePathArg(args, "FROM:", true)
	if err != nil {
		return err
	}
	p, err := s.parseMailParams(path.Params)
	if err != nil {
		return err
	}
	if !path.IsASCII() && p.utf8 == "" {
		return SMTPError553
	}
	s.Envelope = Envelope{EncodingBody: p.body, EncodingUTF8: p.utf8}
	from, err := s.h.OnMailFrom(s, path.Mailbox)
	if successReply(err) == nil && err != nil {
		s.Envelope = Envelope{}
		return err
	}
	s.Envelope.From = orString(from, path.Mailbox)
	s.state = stateMail
	return s.succeed(err, replyMailOK)
}

// transactionAllowed checks what MAIL, RCPT and DATA have in common: the
// command sequence (inSequence) and AuthRequired.
func (s *Session) transactionAllowed(inSequence bool) error {
	switch {
	case !inSequence:
		return SMTPError503
	case s.needsAuth():
		return SMTPError530
	}
	return nil
}

// parsePathArg parses the argument of MAIL (prefix "FROM:") or RCPT ("TO:"): the
// path and its ESMTP parameters, their number capped before any is stored.
func parsePathArg(args, prefix string, nullOK bool) (address.Path, error) {
	arg, ok := cutPrefixFold(args, prefix)
	if !ok {
		return address.Path{}, SMTPError501
	}
	path, err := address.Parse(arg, nullOK)
	switch {
	case errors.Is(err, address.ErrTooManyParams):
		return path, errTooManyParams
	case err != nil:
		return path, &wrappedReply{reply: SMTPError501, err: err}
	}
	return path, nil
}

// parseMailParams reads BODY= and SMTPUTF8; they need Internationalization (501
// otherwise, as MidiSmtpServer), other parameters are 555 (RFC 5321 4.1.1.11).
func (s *Session) parseMailParams(params []address.Param) (mailParams, error) {
	var p mailParams
	for _, prm := range params {
		switch strings.ToUpper(prm.Key) {
		case "BODY":
			if !s.cfg.i18n || p.body != "" {
				return p, SMTPError501
			}
			switch strings.ToUpper(prm.Value) {
			case "7BIT":
				p.body = "7bit"
			case "8BITMIME":
				p.body = "8bitmime"
			default:
				return p, SMTPError501
			}
		case "SMTPUTF8":
			if !s.cfg.i18n || p.utf8 != "" || prm.HasValue {
				return p, SMTPError501
			}
			p.utf8 = "utf8"
		default:
			return p, SMTPError555
		}
	}
	return p, nil
}

func (s *Session) cmdRcpt(args string) error {
	if err := s.transactionAllowed(s.state == stateMail || s.state == stateRcpt); err != nil {
		return err
	}
	path, err := parsePathArg(args, "TO:", false)
	if err != nil {
		return err
	}
	switch {
	case len(path.Params) > 0:
		return SMTPError555
	case !path.IsASCII() && s.Envelope.EncodingUTF8 == "":
		return SMTPError553
	case s.cfg.maxRecipients > 0 && len(s.Envelope.To) >= s.cfg.maxRecipients:
		s.srv.stats.limit(&s.srv.stats.MaxRecipients)
		return errTooManyRecipients
	}
	to, err := s.h.OnRcptTo(s, path.Mailbox)
	if successReply(err) == nil && err != nil {
		return err
	}
	s.Envelope.To = append(s.Envelope.To, orString(to, path.Mailbox))
	s.state = stateRcpt
	return s.succeed(err, replyRcptOK)
}

func (s *Session) cmdRset(args string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	s.resetTransaction()
	s.send(replyOK)
	return nil
}

func (s *Session) cmdData(args string) error {
	if args != "" {
		return SMTPError501
	}
	if err := s.transactionAllowed(s.state == stateRcpt); err != nil {
		return err
	}
	s.Message = Message{CRLF: "\r\n", ReceivedAt: time.Now().UTC()}
	s.sendText(354, `Enter message, ending with "." on a line by itself`)
	return s.receiveData()
}

// succeed answers a hook's outcome: nil with the default reply, an SMTPError with a
// code below 400 (say 251 from OnRcptTo) with that reply; any other error is
// returned for replyError.
func (s *Session) succeed(err error, def *SMTPError) error {
	if err == nil {
		s.send(def)
		return nil
	}
	if ok := successReply(err); ok != nil {
		s.send(ok)
		return nil
	}
	return err
}

// cutPrefixFold cuts prefix from s, ignoring ASCII case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// wrappedReply is an SMTPError reply with the error that caused it, for the log.
type wrappedReply struct {
	reply *SMTPError
	err   error
}

func (w *wrappedReply) Error() string   { return w.err.Error() + " (" + strconv.Itoa(w.reply.Code) + ")" }
func (w *wrappedReply) Unwrap() []error { return []error{w.reply, w.err} }
