package smtpd

import (
	"bytes"
	"strings"
)

// This file is the command loop: a command line is read (waiting for the client
// while it is idle), checked, and dispatched through the one command table to its
// cmdX method, each of which reads top to bottom — parse, check, hook, reply.

// command is one row of the command table: the verb set is written here once, and
// the dispatcher, the TLS gate, the junk counter and the tracer read it.
type command struct {
	run     func(c *conn, args string) error // nil: handed to OnUnknown
	plainOK bool                             // allowed before STARTTLS under TLSRequired
	junk    bool                             // counted against MaxJunkCommands
	on      func(cfg *config) bool           // nil: always on; else whether the extension is on
}

// commands is the command table, keyed by upper-case verb; filled by init (its
// functions refer to the table through the tracer).
var commands map[string]*command

func init() {
	commands = map[string]*command{
		"HELO":     {run: (*conn).cmdHelo, plainOK: true, on: smtpOnly},
		"EHLO":     {run: (*conn).cmdEhlo, plainOK: true, on: smtpOnly},
		"LHLO":     {run: (*conn).cmdEhlo, plainOK: true, on: lmtpOnly},
		"BDAT":     {run: (*conn).cmdBdat, plainOK: true}, // checks TLS and CHUNKING itself: its octets must be read
		"MAIL":     {run: (*conn).cmdMail},
		"RCPT":     {run: (*conn).cmdRcpt},
		"DATA":     {run: (*conn).cmdData},
		"RSET":     {run: (*conn).cmdRset, junk: true},
		"NOOP":     {run: (*conn).cmdNoop, plainOK: true, junk: true},
		"QUIT":     {run: (*conn).cmdQuit, plainOK: true},
		"STARTTLS": {run: (*conn).cmdStartTLS, plainOK: true},
		"AUTH":     {run: (*conn).cmdAuth, plainOK: true},
		"XCLIENT":  {run: (*conn).cmdXClient, plainOK: true, on: func(cfg *config) bool { return cfg.xclientNets != nil }},
		"VRFY":     {junk: true},
		"EXPN":     {junk: true},
		"HELP":     {junk: true},
	}
}

func smtpOnly(cfg *config) bool { return !cfg.lmtp }
func lmtpOnly(cfg *config) bool { return cfg.lmtp }

// lookupCommand returns the table row of verb (any case), or nil.
func lookupCommand(verb string) *command {
	if len(verb) > 8 { // no verb is longer: no upper-cased copy of a long word
		return nil
	}
	return commands[upperASCII(verb)]
}

// commandLoop reads and runs command lines until QUIT, an error that closes the
// connection, or the server shutting down — or the client going quiet (true):
// then run carries on on a fresh goroutine, whose wait for the client is at the
// top of its stack (run, commandLoop, await).
func (c *conn) commandLoop() (quiet bool) {
	for c.live() {
		err := c.await(true)
		switch {
		case err == errQuiet:
			return true // run goes on on a fresh goroutine
		case err != nil:
			c.readFailed(err)
			return false
		}
		c.nextCommand()
	}
	return false
}

// nextCommand reads a command line (the client has sent some of it) and runs it.
func (c *conn) nextCommand() {
	// AUTH with an initial response carries a whole AUTH response (RFC 4954 4)
	// after "AUTH <mechanism> " (SASL names are at most 20 characters); every
	// other command is cut at maxCommandLine below, unparsed.
	line, err := c.r.readLine(maxAuthResponse + 64)
	switch {
	case err == errSoftLimit || err == nil && commandTooLong(line):
		c.srv.stats.limit(&c.srv.stats.CommandTooLong)
		c.log().Info("command line too long; refused", "limit", maxCommandLine)
		c.replyError(errCommandTooLong, false)
	case err != nil:
		c.readFailed(err)
	case c.srv.isClosing.Load():
		c.replyError(SMTPError421, true)
	default:
		c.commands++
		c.runLine(line)
	}
}

// runLine checks a command line as a whole — BDAT's octets follow it at once, a
// first line may be a browser's, CRLFStrict, PIPELINING off — and dispatches it.
func (c *conn) runLine(line []byte) {
	text, err := commandText(line, c.cfg.crlfMode)
	switch {
	case isBdat(text) && bytes.IndexByte(text, 0) < 0 && bytes.IndexByte(text, '\r') < 0:
		c.lineRefused = nil
		if err != nil {
			c.lineRefused = errCRLF
		}
		c.dispatch(text)
	case isBdat(text):
		c.log().Info("BDAT line with NUL or CR; closing", "line", excerpt(string(text)))
		c.closeWith(errBdatSyntax) // its octets cannot be trusted to be counted right
	case c.commands == 1 && isNonSMTP(text):
		c.srv.stats.limit(&c.srv.stats.NonSMTP)
		c.log().Warn("non-SMTP client (HTTP?); closing", "line", excerpt(string(text)))
		c.closeWith(errNonSMTP)
	case err != nil:
		c.traceRecv(text)
		c.replyError(errCRLF, false)
	case !c.cfg.pipelining && c.r.buffered():
		// RFC 2920 off: the client sent more before it had this line's reply. Any
		// byte already read counts, so the verdict does not depend on how much of
		// the rest one read happened to bring.
		c.traceRecv(text)
		c.replyError(errPipelining, false)
	default:
		c.dispatch(text)
	}
}

// dispatch runs one command line (its line end removed).
func (c *conn) dispatch(text []byte) {
	c.traceRecv(text)
	if len(text) == 0 || bytes.IndexByte(text, 0) >= 0 || bytes.IndexByte(text, '\r') >= 0 {
		c.replyError(SMTPError500, false)
		return
	}
	line := string(text)
	verb, args := splitCommand(line)
	cmd := commands[verb] // splitCommand upper-cased it
	if cmd != nil && cmd.on != nil && !cmd.on(c.cfg) {
		cmd = nil // an extension that is off is an unknown command
	}
	if c.bdat != nil && verb != "BDAT" && verb != "NOOP" {
		c.resetTransaction() // RFC 3030: a BDAT transfer ends with LAST; anything else but NOOP abandons it
	}
	switch {
	case c.needsTLS(cmd):
		c.replyError(errTLSRequired, false)
		return
	case cmd != nil && cmd.junk && !c.countJunk():
		return
	}
	var err error
	if cmd == nil || cmd.run == nil {
		err = c.succeed(c.h.OnUnknown(c.s, line), replyOK)
	} else {
		err = cmd.run(c, args)
	}
	if err != nil {
		c.replyError(err, false)
	}
}

// splitCommand splits a command line into its upper-cased verb and its argument
// text (trimmed of surrounding spaces).
func splitCommand(line string) (verb, args string) {
	verb, args, _ = strings.Cut(line, " ")
	return upperASCII(verb), strings.Trim(args, " \t")
}

// commandTooLong reports whether a command line (not AUTH, which has its own bound)
// has more than maxCommandLine bytes before its line end. The line end is cut off
// first: measured with it, a line ended by a bare LF got one byte more than the limit.
func commandTooLong(line []byte) bool {
	return len(lineText(line)) > maxCommandLine && !isAuthLine(line)
}

// isNonSMTP reports whether a session's first line is an HTTP request line or
// header: a browser or proxy probe sent to the SMTP port (cross-protocol attacks).
func isNonSMTP(line []byte) bool {
	for _, p := range nonSMTPPrefixes {
		if len(line) >= len(p) && equalFoldASCII(line[:len(p)], p) {
			return true
		}
	}
	return false
}

var nonSMTPPrefixes = []string{"GET ", "POST ", "HEAD ", "PUT ", "CONNECT ", "OPTIONS ", "Host:", "User-Agent:"}

func noArgs(args string) error {
	if args != "" {
		return SMTPError501
	}
	return nil
}

// needsTLS reports whether TLSRequired refuses cmd on this plaintext connection.
func (c *conn) needsTLS(cmd *command) bool {
	return c.cfg.tlsMode == TLSRequired && !c.s.IsEncrypted() && (cmd == nil || !cmd.plainOK)
}

// needsAuth reports whether AuthRequired refuses mail commands in this session.
func (c *conn) needsAuth() bool {
	return c.cfg.authMode == AuthRequired && !c.s.IsAuthenticated()
}

// cmdNoop: RFC 5321 4.1.1.9, "This command does not affect any parameters or
// previously entered commands."
func (c *conn) cmdNoop(args string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	c.send(replyOK)
	return nil
}

// cmdRset: RFC 5321 4.1.1.5, "any stored sender, recipients, and mail data MUST
// be discarded"; valid before HELO too.
func (c *conn) cmdRset(args string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	c.resetTransaction()
	c.send(replyOK)
	return nil
}

// cmdQuit: RFC 5321 4.1.1.10, "The receiver MUST send a "221 OK" reply, and then
// close the transmission channel."
func (c *conn) cmdQuit(args string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	c.closeWith(replyBye)
	return nil
}

// succeed answers a hook's outcome: nil with the default reply, an SMTPError with a
// code below 400 (say 251 from OnRcptTo) with that reply; any other error is
// returned for replyError.
func (c *conn) succeed(err error, def *SMTPError) error {
	if err == nil {
		c.send(def)
		return nil
	}
	if ok := successReply(err); ok != nil {
		c.send(ok)
		return nil
	}
	return err
}
