package mailauth

import (
	"bytes"
	"strings"
)

// This file splits a header section (RFC 5322 2.2) into fields, as DKIM and ARC see
// them: line ends made CRLF, continuation lines kept with their field.

// field is one header field as received.
type field struct {
	name string // the name, trimmed of whitespace before the colon
	raw  string // the whole field, "Name: value" with its folding, lines ending in CRLF
}

// value returns what follows the colon, folding and the last CRLF kept out.
func (f field) value() string {
	_, v, _ := strings.Cut(f.raw, ":")
	return strings.TrimSuffix(v, "\r\n")
}

// is reports whether the field is called name (case-insensitive).
func (f field) is(name string) bool { return strings.EqualFold(f.name, name) }

// parseHeader splits a header section into fields, up to the empty line that
// ends it or the end of b. A line starting with a space or tab continues the field before it; a
// line without a colon is a field with no value (a nameless one when it is the
// first line and a continuation). Bare LF line ends count as CRLF.
func parseHeader(b []byte) []field {
	var (
		fields []field
		cur    strings.Builder
		name   string
	)
	flush := func() {
		if cur.Len() > 0 {
			fields = append(fields, field{name: name, raw: cur.String()})
			cur.Reset()
		}
	}
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break // the empty line ending the section
		}
		if isWSP(line[0]) && cur.Len() > 0 {
			cur.Write(line)
			cur.WriteString("\r\n")
			continue
		}
		flush()
		n, _, _ := bytes.Cut(line, []byte(":"))
		name = strings.TrimSpace(string(n))
		cur.Write(line)
		cur.WriteString("\r\n")
	}
	flush()
	return fields
}

// headerBytes joins fields back into a header section ending in the empty line.
func headerBytes(fields []field) []byte {
	n := 2
	for _, f := range fields {
		n += len(f.raw)
	}
	b := make([]byte, 0, n)
	for _, f := range fields {
		b = append(b, f.raw...)
	}
	return append(b, "\r\n"...)
}

// headerScanner finds the empty line that ends a header section arriving in
// pieces (CRLF or bare LF).
type headerScanner struct {
	lineLen int // bytes of the current line so far, a trailing CR not counted
	sawCR   bool
}

// scan returns how many bytes of p belong to the header section, the empty line
// included, and whether that line ended in p.
func (s *headerScanner) scan(p []byte) (int, bool) {
	for i, c := range p {
		switch {
		case c == '\n':
			if s.lineLen == 0 {
				return i + 1, true
			}
			s.lineLen, s.sawCR = 0, false
		case c == '\r' && !s.sawCR:
			s.sawCR = true
		default:
			if s.sawCR {
				s.lineLen++ // the CR was content
			}
			s.sawCR = c == '\r'
			if !s.sawCR {
				s.lineLen++
			}
		}
	}
	return len(p), false
}
