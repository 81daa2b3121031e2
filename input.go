package smtpd

import (
	"bytes"
	"errors"
	"io"
	"time"
)

// This file reads the client's input: the command loop, one line at a time under a
// deadline and a length limit, and the reply owed when a line cannot be read.

var (
	errShuttingDown = errors.New("smtpd: server shutting down")
	errAborted      = errors.New("smtpd: connection closed by Close")
	errWrite        = errors.New("smtpd: writing a reply failed")
)

// loopResult is how commandLoop ended.
type loopResult int

const (
	loopEnded  loopResult = iota // the session is over
	loopParked                   // the client is idle: the session waits parked
)

// commandLoop reads and runs command lines until QUIT, an error that closes the
// connection, the server shutting down — or the client going idle, when the
// session parks (see park.go).
func (s *Session) commandLoop() loopResult {
	for !s.quit {
		// AUTH with an initial response carries a whole AUTH response (RFC 4954
		// 4) after "AUTH <mechanism> " (SASL names are at most 20 characters);
		// every other command is cut at maxCommandLine below, unparsed.
		line, err := s.readCommand(maxAuthResponse + 64)
		if err == errParked {
			return loopParked
		}
		if err == errSoftLimit || err == nil && commandTooLong(line) {
			s.srv.stats.limit(&s.srv.stats.CommandTooLong)
			s.log().Info("command line too long; refused", "limit", maxCommandLine)
			s.replyError(errCommandTooLong, false)
			continue
		}
		if err != nil {
			s.readFailed(err)
			return loopEnded
		}
		if s.srv.isClosing.Load() {
			s.replyError(SMTPError421, true)
			return loopEnded
		}
		s.commands++
		text, err := commandText(line, s.cfg.crlfMode)
		switch {
		case isBdat(text) && bytes.IndexByte(text, 0) < 0 && bytes.IndexByte(text, '\r') < 0:
			s.lineRefused = nil
			if err != nil {
				s.lineRefused = errCRLF
			}
			s.dispatch(text)
		case isBdat(text):
			s.log().Info("BDAT line with NUL or CR; closing", "line", excerpt(string(text)))
			s.closeWith(errBdatSyntax) // its octets cannot be trusted to be counted right
		case s.commands == 1 && isNonSMTP(text):
			s.srv.stats.limit(&s.srv.stats.NonSMTP)
			s.log().Warn("non-SMTP client (HTTP?); closing", "line", excerpt(string(text)))
			s.closeWith(errNonSMTP)
		case err != nil:
			s.traceRecv(text)
			s.replyError(errCRLF, false)
		case !s.cfg.pipelining && s.r.hasLine():
			s.traceRecv(text)
			s.replyError(errPipelining, false)
		default:
			s.dispatch(text)
		}
	}
	return loopEnded
}

// commandTooLong reports whether a command line (not AUTH, which has its own bound)
// has more than maxCommandLine bytes before its line end. The line end is cut off
// first: measured with it, a line ended by a bare LF got one byte more than the limit.
func commandTooLong(line []byte) bool {
	return len(lineText(line)) > maxCommandLine && !isAuthLine(line)
}

// readLine reads one line of at most soft bytes (longer: errSoftLimit, the line
// dropped). A deadline is set for the whole line when it is not already buffered:
// one request, however slowly it drips in. Pending replies are flushed before
// blocking. With idle true the session counts as idle while it waits (Shutdown
// interrupts it) and holds no buffers meanwhile.
func (s *Session) readLine(soft int, idle bool) ([]byte, error) {
	if s.aborted.Load() {
		return nil, errAborted
	}
	if !s.r.hasLine() {
		if err := s.flush(); err != nil {
			return nil, errWrite
		}
		s.setReadDeadline()
		if idle {
			s.idle.Store(true)
			defer s.idle.Store(false)
			if s.srv.isClosing.Load() {
				return nil, errShuttingDown
			}
			if err := s.r.fill(); err != nil {
				return nil, err
			}
		}
	}
	return s.r.readLine(soft)
}

// readCommand is readLine for a command line, which may park the session while
// the client is idle: errParked.
func (s *Session) readCommand(soft int) ([]byte, error) {
	if s.resumed { // the wait happened parked; the line's deadline still runs
		s.resumed = false
		s.idle.Store(false)
		if err := s.parkErr; err != nil {
			s.parkErr = nil
			return nil, err
		}
		return s.r.readLine(soft)
	}
	if s.aborted.Load() {
		return nil, errAborted
	}
	if s.r.hasLine() {
		return s.r.readLine(soft)
	}
	if err := s.flush(); err != nil {
		return nil, errWrite
	}
	s.nextDeadline() // waitOrPark sets it on the connection
	s.idle.Store(true)
	if s.srv.isClosing.Load() {
		s.idle.Store(false)
		return nil, errShuttingDown
	}
	if err := s.waitOrPark(); err != nil {
		if err != errParked {
			s.idle.Store(false)
		}
		return nil, err // parked: still idle, the parked wait goes on
	}
	s.idle.Store(false)
	return s.r.readLine(soft)
}

// setReadDeadline sets the deadline of the next line: the command timeout (shorter
// in stress mode), or inside DATA the moment the transfer falls under the minimum
// data rate, whichever comes first.
func (s *Session) setReadDeadline() {
	s.raw.SetReadDeadline(s.nextDeadline())
}

// nextDeadline computes the next line's deadline (see setReadDeadline) and keeps it
// in lineDeadline.
func (s *Session) nextDeadline() time.Time {
	s.rateDeadline = false
	timeout := s.timeout()
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	if at, ok := s.dataRateDeadline(); ok && (deadline.IsZero() || at.Before(deadline)) {
		deadline, s.rateDeadline = at, true
	}
	s.lineDeadline = deadline
	return deadline
}

// readFailed answers the reason a line could not be read, where one is owed.
func (s *Session) readFailed(err error) {
	switch {
	case err == errAborted || err == errWrite:
		s.log().Debug("session ended", "err", err)
	case err == errShuttingDown || s.srv.isClosing.Load():
		s.replyError(SMTPError421, true)
	case err == errLineLimit:
		s.srv.stats.limit(&s.srv.stats.LineTooLong)
		s.log().Warn("line over IOBufferMaxSize; closing", "limit", s.cfg.bufferMax)
		s.replyError(errLineTooLong, true)
	case isTimeout(err) && s.rateDeadline:
		s.srv.stats.limit(&s.srv.stats.MinDataRate)
		s.log().Info("data transfer under the minimum rate; closing", "bytes", s.dataBytes, "rate", s.minDataRate())
		s.replyError(errSlowData, true)
	case isTimeout(err):
		s.srv.stats.limit(&s.srv.stats.CommandTimeout)
		s.log().Info("client timed out; closing", "timeout", s.timeout())
		s.replyError(errTimeout, true)
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		s.log().Debug("client closed the connection")
	default:
		s.log().Debug("read failed", "err", err)
	}
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

// equalFoldASCII reports whether the first len(s) bytes of b equal s, ignoring
// ASCII case only (b holds at least len(s) bytes). SMTP's words are
// case-insensitive in ASCII (RFC 5321 2.4; RFC 5234 2.3): strings.EqualFold and
// ToUpper would take "ſ" for "S" and "ı" for "I".
func equalFoldASCII[T string | []byte](b T, s string) bool {
	for i := 0; i < len(s); i++ {
		c := b[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		d := s[i]
		if 'a' <= d && d <= 'z' {
			d -= 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}
