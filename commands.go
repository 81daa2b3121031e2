package smtpd

import (
	"bytes"
	"strings"
)

// command is one row of the command table: the verb set is written here once, and
// the dispatcher, the TLS gate, the junk counter and the tracer read it.
type command struct {
	run     func(s *Session, args string) error // nil: handed to OnUnknown
	plainOK bool                                // allowed before STARTTLS under TLSRequired
	junk    bool                                // counted against MaxJunkCommands
	on      func(c *config) bool                // nil: always on; else whether the extension is on
}

// commands is the command table, keyed by upper-case verb; filled by init (its
// functions refer to the table through the tracer).
var commands map[string]*command

func init() {
	commands = map[string]*command{
		"HELO":     {run: (*Session).cmdHelo, plainOK: true, on: smtpOnly},
		"EHLO":     {run: (*Session).cmdEhlo, plainOK: true, on: smtpOnly},
		"LHLO":     {run: (*Session).cmdEhlo, plainOK: true, on: lmtpOnly},
		"BDAT":     {run: (*Session).cmdBdat, plainOK: true}, // checks TLS and CHUNKING itself: its octets must be read
		"MAIL":     {run: (*Session).cmdMail},
		"RCPT":     {run: (*Session).cmdRcpt},
		"DATA":     {run: (*Session).cmdData},
		"RSET":     {run: (*Session).cmdRset, junk: true},
		"NOOP":     {run: (*Session).cmdNoop, plainOK: true, junk: true},
		"QUIT":     {run: (*Session).cmdQuit, plainOK: true},
		"STARTTLS": {run: (*Session).cmdStartTLS, plainOK: true},
		"AUTH":     {run: (*Session).cmdAuth, plainOK: true},
		"XCLIENT":  {run: (*Session).cmdXClient, plainOK: true, on: func(c *config) bool { return c.xclientNets != nil }},
		"VRFY":     {junk: true},
		"EXPN":     {junk: true},
		"HELP":     {junk: true},
	}
}

func smtpOnly(c *config) bool { return !c.lmtp }
func lmtpOnly(c *config) bool { return c.lmtp }

// lookupCommand returns the table row of verb (any case), or nil.
func lookupCommand(verb string) *command {
	if len(verb) > 8 { // no verb is longer: no upper-cased copy of a long word
		return nil
	}
	return commands[upperASCII(verb)]
}

// dispatch runs one command line (its line end removed).
func (s *Session) dispatch(text []byte) {
	s.traceRecv(text)
	if len(text) == 0 || bytes.IndexByte(text, 0) >= 0 || bytes.IndexByte(text, '\r') >= 0 {
		s.replyError(SMTPError500, false)
		return
	}
	line := string(text)
	verb, args := splitCommand(line)
	cmd := commands[verb] // splitCommand upper-cased it
	if cmd != nil && cmd.on != nil && !cmd.on(s.cfg) {
		cmd = nil // an extension that is off is an unknown command
	}
	if s.bdat != nil && verb != "BDAT" && verb != "NOOP" {
		s.abandonTransaction() // RFC 3030: a BDAT transfer ends with LAST; anything else abandons it
	}
	switch {
	case s.needsTLS(cmd):
		s.replyError(errTLSRequired, false)
		return
	case cmd != nil && cmd.junk && !s.countJunk():
		return
	}
	var err error
	if cmd == nil || cmd.run == nil {
		err = s.succeed(s.h.OnUnknown(s, line), replyOK)
	} else {
		err = cmd.run(s, args)
	}
	if err != nil {
		s.replyError(err, false)
	}
}

// splitCommand splits a command line into its upper-cased verb and its argument
// text (trimmed of surrounding spaces).
func splitCommand(line string) (verb, args string) {
	verb, args, _ = strings.Cut(line, " ")
	return upperASCII(verb), strings.Trim(args, " \t")
}

// upperASCII upper-cases the ASCII letters of s only: SMTP's words are
// case-insensitive in ASCII (RFC 5321 2.4), and strings.ToUpper would make "QUıT"
// a QUIT.
func upperASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'a' <= s[i] && s[i] <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'a' <= b[j] && b[j] <= 'z' {
					b[j] -= 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func noArgs(args string) error {
	if args != "" {
		return SMTPError501
	}
	return nil
}

// needsTLS reports whether TLSRequired refuses cmd on this plaintext connection.
func (s *Session) needsTLS(cmd *command) bool {
	return s.cfg.tlsMode == TLSRequired && !s.IsEncrypted() && (cmd == nil || !cmd.plainOK)
}

// needsAuth reports whether AuthRequired refuses mail commands in this session.
func (s *Session) needsAuth() bool {
	return s.cfg.authMode == AuthRequired && !s.IsAuthenticated()
}

func (s *Session) cmdNoop(args string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	s.send(replyOK)
	return nil
}

func (s *Session) cmdQuit(args string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	s.closeWith(replyBye)
	return nil
}

func (s *Session) cmdEhlo(domain string) error { return s.greet("EHLO", domain) }

func (s *Session) cmdHelo(domain string) error { return s.greet("HELO", domain) }

// greet runs HELO, EHLO and LMTP's LHLO: a repeated one is a junk command; the domain must be
// at most 255 bytes without control characters.
func (s *Session) greet(verb, domain string) error {
	if !validHelo(domain) {
		return errBadHelo
	}
	if s.state != stateGreet && !s.countJunk() {
		return nil
	}
	s.abandonTransaction()
	if err := s.h.OnHelo(s, domain); err != nil {
		return err
	}
	if !s.xclientHelo {
		s.Helo = domain
	}
	s.state = stateReady
	if verb == "HELO" {
		s.sendText(250, oneLine("OK "+oneLine(s.HeloResponse)))
		return nil
	}
	s.sendText(250, strings.Join(s.ehloLines(), "\n"))
	return nil
}

// validHelo reports whether a HELO/EHLO argument is acceptable: present, at most 255
// bytes (RFC 5321 4.5.3.1.2's domain), no control characters.
func validHelo(domain string) bool {
	if domain == "" || len(domain) > 255 {
		return false
	}
	for i := 0; i < len(domain); i++ {
		if c := domain[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// ehloLines is the EHLO reply: the greeting, then the extensions that are on.
func (s *Session) ehloLines() []string {
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
	lines = append(lines, sizeKeyword(s.cfg.maxMessage))
	if s.cfg.enhancedCodes {
		lines = append(lines, "ENHANCEDSTATUSCODES")
	}
	if s.cfg.chunking {
		lines = append(lines, "CHUNKING", "BINARYMIME")
	}
	if s.cfg.dsn {
		lines = append(lines, "DSN")
	}
	if s.xclientOK {
		lines = append(lines, "XCLIENT "+xclientAttrs)
	}
	return append(lines, "OK")
}
