package smtpd

import (
	"errors"
	"strconv"

	"github.com/midismtp/smtpd/internal/address"
)

// This file holds the transaction commands: MAIL, RCPT, RSET and DATA's command
// part (RFC 5321 4.1.1.2-4.1.1.5), and the ESMTP parameters of MAIL.

// mailParams are the MAIL FROM parameters this server knows.
type mailParams struct {
	body, utf8 string
	size       int
	ret, envID string
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
	if max := s.cfg.maxMessage; max > 0 && p.size > max {
		s.srv.stats.limit(&s.srv.stats.MaxMessageSize)
		return SMTPError552
	}
	s.Envelope = Envelope{EncodingBody: p.body, EncodingUTF8: p.utf8, Size: p.size, DSNRet: p.ret, DSNEnvID: p.envID,
		FromParams: rawParams(path.Params)}
	s.transactions++
	s.Message.ID = s.ID + "-" + strconv.Itoa(s.transactions)
	s.params = s.Envelope.FromParams
	from, err := s.h.OnMailFrom(s, path.Mailbox)
	s.params = nil
	if successReply(err) == nil && err != nil {
		s.Envelope = Envelope{}
		s.Message.ID = ""
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

// parseMailParams reads the MAIL FROM parameters: SIZE always; BODY= and SMTPUTF8
// need Internationalization (501 otherwise, as MidiSmtpServer; BODY=BINARYMIME
// needs Chunking); RET= and ENVID= need DSN; other parameters, and a repeated one,
// are 555 (RFC 5321 4.1.1.11) or 501.
func (s *Session) parseMailParams(params []address.Param) (mailParams, error) {
	var p mailParams
	seen := map[string]bool{}
	for _, prm := range params {
		key := upperASCII(prm.Key)
		if seen[key] {
			return p, SMTPError501
		}
		seen[key] = true
		if err := s.mailParam(&p, key, prm); err != nil {
			return p, err
		}
	}
	return p, nil
}

// mailParam reads one MAIL FROM parameter into p.
func (s *Session) mailParam(p *mailParams, key string, prm address.Param) error {
	ok := true
	switch {
	case key == "SIZE":
		p.size, ok = parseSize(prm.Value)
	case key == "BODY" && (s.cfg.i18n || s.cfg.chunking):
		p.body, ok = s.bodyParam(prm.Value)
	case key == "SMTPUTF8" && s.cfg.i18n:
		p.utf8, ok = "utf8", !prm.HasValue
	case key == "RET" && s.cfg.dsn:
		p.ret, ok = parseRet(prm.Value)
	case key == "ENVID" && s.cfg.dsn:
		p.envID, ok = parseEnvID(prm.Value)
	case key == "BODY" || key == "SMTPUTF8":
		return SMTPError501 // MidiSmtpServer's reply when Internationalization is off
	default:
		return SMTPError555
	}
	if !ok {
		return SMTPError501
	}
	return nil
}

// bodyParam reads BODY=: 7BIT, 8BITMIME (Internationalization) or BINARYMIME (Chunking).
func (s *Session) bodyParam(v string) (string, bool) {
	switch keywordASCII(v, "7BIT", "8BITMIME", "BINARYMIME") {
	case "7BIT":
		return "7bit", true
	case "8BITMIME":
		return "8bitmime", s.cfg.i18n
	case "BINARYMIME":
		return "binarymime", s.cfg.chunking
	}
	return "", false
}

// rcptParams reads the RCPT TO parameters: NOTIFY= and ORCPT= with DSN, at most
// once each; anything else is 555.
func (s *Session) rcptParams(params []address.Param) (RecipientDSN, error) {
	var d RecipientDSN
	for _, prm := range params {
		key := upperASCII(prm.Key)
		ok := false
		switch {
		case !s.cfg.dsn || key != "NOTIFY" && key != "ORCPT":
			return d, SMTPError555
		case key == "NOTIFY" && d.Notify == nil:
			d.Notify, ok = parseNotify(prm.Value)
		case key == "ORCPT" && d.ORcpt == "":
			d.ORcpt, ok = parseORcpt(prm.Value)
		}
		if !ok {
			return d, SMTPError501
		}
	}
	return d, nil
}

func (s *Session) cmdRcpt(args string) error {
	if err := s.transactionAllowed(s.state == stateMail || s.state == stateRcpt); err != nil {
		return err
	}
	path, err := parsePathArg(args, "TO:", false)
	if err != nil {
		return err
	}
	dsn, err := s.rcptParams(path.Params)
	switch {
	case err != nil:
		return err
	case !path.IsASCII() && s.Envelope.EncodingUTF8 == "":
		return SMTPError553
	case s.cfg.maxRecipients > 0 && len(s.Envelope.To) >= s.cfg.maxRecipients:
		s.srv.stats.limit(&s.srv.stats.MaxRecipients)
		return errTooManyRecipients
	}
	s.params = rawParams(path.Params)
	to, err := s.h.OnRcptTo(s, path.Mailbox)
	params := s.params
	s.params = nil
	if successReply(err) == nil && err != nil {
		return err
	}
	s.Envelope.To = append(s.Envelope.To, orString(to, path.Mailbox))
	s.Envelope.ToParams = append(s.Envelope.ToParams, params)
	if s.cfg.dsn {
		s.Envelope.DSNRecipients = append(s.Envelope.DSNRecipients, dsn)
	}
	s.state = stateRcpt
	return s.succeed(err, replyRcptOK)
}

func (s *Session) cmdRset(args string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	s.abandonTransaction()
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
	if s.Envelope.EncodingBody == "binarymime" {
		return SMTPError503 // RFC 3030 3: BINARYMIME is sent with BDAT only
	}
	if err := s.dataCommand(); err != nil {
		return err
	}
	s.sendText(354, `Enter message, ending with "." on a line by itself`)
	return s.receiveData()
}

// rawParams renders ESMTP parameters as the client sent them: "KEY=value" or "KEY".
func rawParams(params []address.Param) []string {
	if len(params) == 0 {
		return nil
	}
	out := make([]string, len(params))
	for i, p := range params {
		out[i] = p.Key
		if p.HasValue {
			out[i] += "=" + p.Value
		}
	}
	return out
}

// dataCommand runs a DataCommandHandler's OnDataCommand: at DATA before the 354,
// at a transaction's first BDAT.
func (s *Session) dataCommand() error {
	if dh, ok := s.h.(DataCommandHandler); ok {
		return dh.OnDataCommand(s)
	}
	return nil
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
	if len(s) < len(prefix) || !equalFoldASCII(s, prefix) {
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
