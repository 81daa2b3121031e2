package smtpd

import "bytes"

// This file is what the server itself reads of a message's header section while
// it arrives: where the section ends, and RFC 8689's "TLS-Required: No" field.

// maxWatchedLine is how much of each header line headerWatch looks at: enough for a
// field name and a short value; the rest of a long line is not kept.
const maxWatchedLine = 64

// headerWatch follows the header section line by line, DATA's whole lines and
// BDAT's pieces alike, in bounded memory.
type headerWatch struct {
	done          bool   // the empty line ending the section has passed
	head          []byte // the start of the line being received
	inTLSRequired bool   // the current field is TLS-Required
	value         []byte // its value so far, unfolded (bounded)
	tlsRequiredNo bool   // a "TLS-Required: No" field was seen
}

// line takes the next piece of message data; it reports true once, when the piece
// ends the header section.
func (h *headerWatch) line(d dataLine) bool {
	if h.done {
		return false
	}
	if room := maxWatchedLine - len(h.head); room > 0 {
		h.head = append(h.head, d.text[:min(len(d.text), room)]...)
	}
	if !d.complete {
		return false
	}
	line := h.head
	h.head = h.head[:0]
	switch {
	case d.isEmpty:
		h.endField()
		h.done, h.head = true, nil
		return true
	case len(line) > 0 && (line[0] == ' ' || line[0] == '\t'): // a folded continuation (RFC 5322 2.2.3)
		if h.inTLSRequired && len(h.value) < maxWatchedLine {
			h.value = append(h.value, line...)
		}
	default:
		h.endField()
		if value, ok := cutFieldName(line, "TLS-Required"); ok {
			h.inTLSRequired, h.value = true, append(h.value[:0], value...)
		}
	}
	return false
}

// finish ends the watch at the end of the data: a message may be a header
// section alone, with no empty line (RFC 5322 3.5). It reports true when the
// section ended only now.
func (h *headerWatch) finish() bool {
	if h.done {
		return false
	}
	h.endField()
	h.done, h.head = true, nil
	return true
}

// endField ends the field being unfolded: a TLS-Required field whose value is "No"
// (any case, RFC 8689 5) sets tlsRequiredNo.
func (h *headerWatch) endField() {
	if h.inTLSRequired {
		v := bytes.TrimSpace(h.value)
		h.tlsRequiredNo = h.tlsRequiredNo || len(v) == 2 && equalFoldASCII(v, "NO")
	}
	h.inTLSRequired = false
}

// cutFieldName returns the value of a header line of the field name (any ASCII
// case, optional white space before the colon, RFC 5322 4.5.3's obsolete syntax).
func cutFieldName(line []byte, name string) ([]byte, bool) {
	if len(line) < len(name) || !equalFoldASCII(line, name) {
		return nil, false
	}
	rest := bytes.TrimLeft(line[len(name):], " \t")
	if len(rest) == 0 || rest[0] != ':' {
		return nil, false
	}
	return rest[1:], true
}
