package smtpd

import "bytes"

// This file is the line discipline of SMTP: the CRLF modes, a command line's text,
// the one end of DATA (<CRLF>.<CRLF>), and a line of message data dot-unstuffed with
// the line end its mode stores (RFC 5321 2.3.8, 4.1.1.4, 4.5.2).

// CRLFMode says how line ends in the DATA stream are handled and which ones a
// command line may have. In every mode DATA ends only on <CRLF>.<CRLF>.
type CRLFMode int

const (
	// CRLFEnsure (the default, as Postfix's "normalize") accepts CRLF and bare LF line
	// ends and stores every line with CRLF. A bare CR is kept as data, never deleted.
	CRLFEnsure CRLFMode = iota
	// CRLFLeave accepts CRLF and bare LF line ends and stores every byte as sent.
	// Message.CRLF follows the line end of the line last received.
	CRLFLeave
	// CRLFStrict refuses a bare CR or LF: a command line with one is answered
	// "500 Bad input, Lines must be terminated by CRLF sequence" at once; a message
	// with one is read to its real end and not delivered, the final dot getting that reply.
	CRLFStrict
)

// String returns the mode's name: "ensure", "leave" or "strict".
func (m CRLFMode) String() string {
	switch m {
	case CRLFEnsure:
		return "ensure"
	case CRLFLeave:
		return "leave"
	case CRLFStrict:
		return "strict"
	}
	return "CRLFMode(?)"
}

// splitLineEnd cuts a line read by readLine into its text and its line end ("\r\n",
// "\n", or "" for none). A CR that is not directly before the LF stays in the text.
func splitLineEnd(line []byte) (text, end []byte) {
	n := len(line)
	switch {
	case n >= 2 && line[n-2] == '\r' && line[n-1] == '\n':
		return line[:n-2], line[n-2:]
	case n >= 1 && line[n-1] == '\n':
		return line[:n-1], line[n-1:]
	}
	return line, nil
}

// lineText is a line without its line end.
func lineText(line []byte) []byte {
	text, _ := splitLineEnd(line)
	return text
}

// commandText returns the text of a command line under mode: the line without its
// end. In CRLFStrict a line not ended by CRLF, or with a CR inside, is errBareLineEnd.
func commandText(line []byte, mode CRLFMode) ([]byte, error) {
	text, end := splitLineEnd(line)
	if mode == CRLFStrict && (len(end) != 2 || bytes.IndexByte(text, '\r') >= 0) {
		return text, errBareLineEnd
	}
	return text, nil
}

// dotLine is the DATA-terminator test of RFC 5321 4.1.1.4: a line that is exactly
// ".\r\n", read right after a line ended by CRLF (or as the first line of the
// data). Nothing else ends DATA, in any CRLF mode: "\n.\n", "\r.\r", ".\r\r\n" and the
// like are data (SMTP smuggling, CVE-2023-51764).
func dotLine(line []byte, afterCRLF bool) bool {
	return afterCRLF && len(line) == 3 && line[0] == '.' && line[1] == '\r' && line[2] == '\n'
}

// dataLine is one line of message data, read, dot-unstuffed and with the line end
// the CRLF mode stores.
type dataLine struct {
	text     []byte // without the leading stuffing dot
	end      []byte // the line end to store
	bare     bool   // the line had a bare CR or LF (not "\r\n"-ended, or a CR inside)
	isEmpty  bool   // the line had no text: the end of the header section
	complete bool   // the piece ends a line (always for DATA; BDAT pieces may not)
}

var crlf = []byte("\r\n")

// parseDataLine prepares a line of message data (not the terminator) for storing.
func parseDataLine(line []byte, mode CRLFMode) dataLine {
	text, end := splitLineEnd(line)
	d := dataLine{text: text, end: end, complete: true}
	d.bare = len(end) != 2 || bytes.IndexByte(text, '\r') >= 0
	d.isEmpty = len(text) == 0
	// RFC 5321 4.5.2: a period first on a line with other characters is removed.
	if len(text) > 1 && text[0] == '.' {
		d.text = text[1:]
	}
	if mode == CRLFEnsure && len(end) > 0 {
		d.end = crlf
	}
	return d
}

// lineEndsCRLF reports whether the raw line ends with "\r\n".
func lineEndsCRLF(line []byte) bool {
	n := len(line)
	return n >= 2 && line[n-2] == '\r' && line[n-1] == '\n'
}

// lineEndString returns end as one of the constant strings, without allocating.
func lineEndString(end []byte) string {
	switch len(end) {
	case 2:
		return "\r\n"
	case 1:
		return "\n"
	}
	return ""
}
