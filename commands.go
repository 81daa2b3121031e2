package smtpd

import (
	"strconv"
	"strings"
	"time"

	"github.com/midismtp/smtpd/internal/address"
)

// dispatch runs one command line (its line end removed).
func (s *Session) dispatch(line string) {
	verb, args := splitCommand(line)
	s.traceCommand(line)
	if line == "" || strings.IndexByte(line, 0) >= 0 || strings.IndexByte(line, '\r') >= 0 {
		s.replyError(SMTPError500, false)
		return
	}
	if s.needsTLS(verb) {
		s.replyError(errTLSRequired, false)
		return
	}
	var err error
	switch verb {
	case "HELO", "EHLO":
		err = s.cmdHelo(verb, args)
	case "MAIL":
		err = s.cmdMail(args)
	case "RCPT":
		err = s.cmdRcpt(args)
	case "DATA":
		err = s.cmdData(args)
	case "RSET":
		err = s.cmdRset(args)
	case "NOOP":
		err = noArgs(args)
		if err == nil {
			s.reply(250, "OK")
		}
	case "QUIT":
		err = noArgs(args)
		if err == nil {
			s.quit = true
			s.final = true
			s.reply(221, "Service closing transmission channel")
			s.flush()
		}
	case "STARTTLS":
		err = s.cmdStartTLS(args)
	case "AUTH":
		err = s.cmdAuth(args)
	default:
		err = s.succeed(s.h.OnUnknown(s, line), 250, "OK")
	}
	if err != nil {
		s.replyError(err, false)
	}
}

// splitCommand splits a command line into its upper-cased verb and its argument
// text (trimmed of surrounding spaces).
func splitCommand(line string) (verb, args string) {
	verb, args, _ = strings.Cut(line, " ")
	return strings.ToUpper(verb), strings.Trim(args, " \t")
}

// redactAuth returns an AUTH line with its mechanism only, any initial response
// hidden; other lines unchanged.
// It splits as cmdAuth does (any white space), so no spelling of the command
// escapes it.
func redactAuth(line string) string {
	f := strings.Fields(line)
	if len(f) > 2 && strings.EqualFold(f[0], "AUTH") {
		return f[0] + " " + f[1] + " ***"
	}
	return line
}

func noArgs(args string) error {
	if args != "" {
		return SMTPError501
	}
	return nil
}

// needsTLS reports whether TLSRequired refuses verb on this plaintext connection.
func (s *Session) needsTLS(verb string) bool {
	if s.cfg.tlsMode != TLSRequired || s.IsEncrypted() {
		return false
	}
	switch verb {
	case "EHLO", "HELO", "NOOP", "QUIT", "STARTTLS", "AUTH":
		return false
	}
	return true
}

// needsAuth reports whether AuthRequired refuses mail commands in this session.
func (s *Session) needsAuth() bool {
	return s.cfg.authMode == AuthRequired && !s.IsAuthenticated()
}

func (s *Session) cmdHelo(verb, domain string) error {
	if domain == "" {
		return SMTPError501
	}
	s.resetTransaction()
	if err := s.h.OnHelo(s, domain); err != nil {
		return err
	}
	s.Helo = domain
	s.state = stateReady
	if verb == "HELO" {
		s.reply(250, oneLine("OK "+oneLine(s.HeloResponse)))
		return nil
	}
	lines := []string{oneLine(s.HeloResponse)}
	if s.cfg.i18n {
		lines = append(lines, "8BITMIME", "SMTPUTF8")
	}
	if s.cfg.pipelining {
		lines = append(lines, "PIPELINING")
	}
	if s.authOffered() {
		lines = append(lines, "AUTH LOGIN PLAIN")
	}
	if s.cfg.tlsMode != TLSForbidden && !s.IsEncrypted() {
		lines = append(lines, "STARTTLS")
	}
	lines = append(lines, "OK")
	s.reply(250, strings.Join(lines, "\n"))
	return nil
}

// mailParams are the MAIL FROM parameters this server knows.
type mailParams struct {
	body, utf8 string
}

func (s *Session) cmdMail(args string) error {
	switch {
	case s.state == stateGreet || s.state > stateReady:
		return SMTPError503
	case s.needsAuth():
		return SMTPError530
	}
	arg, ok := cutPrefixFold(args, "FROM:")
	if !ok {
		return SMTPError501
	}
	path, err := address.Parse(arg, true)
	if err != nil {
		return wrapSyntax(err)
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
	if from == "" {
		from = path.Mailbox
	}
	s.Envelope.From = from
	s.state = stateMail
	return s.succeed(err, 250, "OK")
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

var errTooManyRecipients = &SMTPError{Code: 452, Message: "Too many recipients"}

func (s *Session) cmdRcpt(args string) error {
	switch {
	case s.state != stateMail && s.state != stateRcpt:
		return SMTPError503
	case s.needsAuth():
		return SMTPError530
	}
	arg, ok := cutPrefixFold(args, "TO:")
	if !ok {
		return SMTPError501
	}
	path, err := address.Parse(arg, false)
	if err != nil {
		return wrapSyntax(err)
	}
	switch {
	case len(path.Params) > 0:
		return SMTPError555
	case !path.IsASCII() && s.Envelope.EncodingUTF8 == "":
		return SMTPError553
	case s.cfg.maxRecipients > 0 && len(s.Envelope.To) >= s.cfg.maxRecipients:
		return errTooManyRecipients
	}
	to, err := s.h.OnRcptTo(s, path.Mailbox)
	if successReply(err) == nil && err != nil {
		return err
	}
	if to == "" {
		to = path.Mailbox
	}
	s.Envelope.To = append(s.Envelope.To, to)
	s.state = stateRcpt
	return s.succeed(err, 250, "OK")
}

func (s *Session) cmdRset(args string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	s.resetTransaction()
	s.reply(250, "OK")
	return nil
}

func (s *Session) cmdData(args string) error {
	switch {
	case args != "":
		return SMTPError501
	case s.state != stateRcpt:
		return SMTPError503
	case s.needsAuth():
		return SMTPError530
	}
	s.Message = Message{CRLF: "\r\n", ReceivedAt: time.Now().UTC()}
	s.reply(354, `Enter message, ending with "." on a line by itself`)
	return s.receiveData()
}

// succeed answers a hook's outcome: nil with the default reply code and text, an
// SMTPError with a code below 400 (say 251 from OnRcptTo) with that reply; any
// other error is returned for replyError.
func (s *Session) succeed(err error, code int, text string) error {
	if err == nil {
		s.reply(code, text)
		return nil
	}
	if ok := successReply(err); ok != nil {
		s.writeReply(ok.Code, ok.EnhancedCode, ok.Message)
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

// wrapSyntax turns an address parse error into a 501 that keeps the reason for the log.
func wrapSyntax(err error) error {
	return &wrappedReply{reply: SMTPError501, err: err}
}

// wrappedReply is an SMTPError reply with the error that caused it, for the log.
type wrappedReply struct {
	reply *SMTPError
	err   error
}

func (w *wrappedReply) Error() string   { return w.err.Error() + " (" + strconv.Itoa(w.reply.Code) + ")" }
func (w *wrappedReply) Unwrap() []error { return []error{w.reply, w.err} }
