package smtpd

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file is the one home of protocol tracing and of what client input may reach
// a log line: traces are Debug lines with constant messages ("recv", "send") and the
// line as an attribute; AUTH secrets are redacted here and nowhere else; client text
// in any log line goes through excerpt.

// maxExcerpt is how many bytes of client input a log line carries at most.
const maxExcerpt = 64

// maxTraced is how many bytes a Debug trace's quoted excerpt of a protocol line has
// at most. The log handler escapes that excerpt once more (each \ and " doubled),
// so a trace line stays under 1 KiB whatever the client sends.
const maxTraced = 384

// excerpt returns a short, escaped excerpt of client input for a log line: escaped
// as a Go string literal (control characters and invalid UTF-8 as \x..), without
// the quotes, at most maxExcerpt bytes, with the full length when cut.
func excerpt(s string) string {
	return clip(s, maxExcerpt)
}

// clip escapes s as strconv.Quote does (without the quotes), cut so that the
// result has at most n bytes: escaping makes up to 4 bytes of one (\xff), so
// cutting the input at n is not enough.
func clip(s string, n int) string {
	cut := min(len(s), n)
	for {
		for cut > 0 && cut < len(s) && !utf8.RuneStart(s[cut]) {
			cut--
		}
		q := strconv.Quote(s[:cut])
		if len(q) <= n+2 || cut == 0 {
			q = q[1 : len(q)-1] // the escapes without the quotes: the log handler quotes as it must
			if cut == len(s) {
				return q
			}
			return q + "... (" + strconv.Itoa(len(s)) + " bytes)"
		}
		cut = cut * (n + 2) / len(q) // strictly less: len(q) > n+2
	}
}

// traceSent logs a reply at Debug.
func (c *conn) traceSent(reply string) {
	if c.debug {
		c.log().Debug("send", "line", clip(strings.TrimRight(reply, "\r\n"), maxTraced))
	}
}

// traceRecv logs a received command line at Debug, hiding AUTH's initial response
// and any line that may be an AUTH response sent out of turn (one base64 word that
// is not a command: after a refused AUTH, a client's credentials arrive as commands).
func (c *conn) traceRecv(line []byte) {
	if !c.debug {
		return
	}
	switch {
	case maybeCredential(line):
		c.log().Debug("recv", "line", "*** (a base64 word, hidden: it may be a credential)")
	case isAuthLine(line):
		c.log().Debug("recv", "line", redactAuth(string(line)))
	default:
		c.log().Debug("recv", "line", clip(string(line), maxTraced))
	}
}

// traceSecret logs that an AUTH response was received, without it.
func (c *conn) traceSecret() {
	if c.debug {
		c.log().Debug("recv", "line", "*** (AUTH response)")
	}
}

// maybeCredential reports whether line is a single base64 word that is not a
// command verb.
func maybeCredential(line []byte) bool {
	if len(line) == 0 {
		return false
	}
	for _, c := range line {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	return lookupCommand(string(line)) == nil
}

// isAuthLine reports whether line's first word (after any white space) is AUTH.
func isAuthLine(line []byte) bool {
	i := 0
	for i < len(line) && isSpace(line[i]) {
		i++
	}
	line = line[i:]
	return len(line) >= 4 && equalFoldASCII(line, "AUTH") && (len(line) == 4 || isSpace(line[4]))
}

// redactAuth returns an AUTH line with its mechanism only, any initial response
// hidden. It splits on any white space, so no spelling of the command escapes it.
func redactAuth(line string) string {
	f := strings.Fields(line)
	switch {
	case len(f) > 2:
		return f[0] + " " + clip(f[1], maxExcerpt) + " ***"
	case len(f) == 2:
		return f[0] + " " + clip(f[1], maxExcerpt)
	}
	return line
}
