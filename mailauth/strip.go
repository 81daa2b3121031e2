package mailauth

import (
	"bufio"
	"bytes"
	"io"
	"strings"
)

// This file removes forged Authentication-Results fields (RFC 8601 section 5):
// those of the incoming header section whose authserv-id is ours. Fields of other
// authserv-ids stay, and so does everything after the header section.

// maxHeldField is how much of one incoming Authentication-Results field is held
// back while its authserv-id is read. A field whose authserv-id has not ended
// within it (a comment of 64 KiB before it) is removed: no real server writes one.
const maxHeldField = 64 << 10

// StripForged returns msg without the Authentication-Results fields that claim
// authServID (case-insensitive; comments and whitespace before it skipped). It
// returns msg itself when there is none.
func StripForged(msg []byte, authServID string) []byte {
	if !hasARField(msg) {
		return msg
	}
	out, _ := io.ReadAll(NewStripReader(bytes.NewReader(msg), authServID))
	return out
}

// hasARField reports whether msg's header section has a line starting with
// "Authentication-Results".
func hasARField(msg []byte) bool {
	const name = "authentication-results"
	for len(msg) > 0 {
		line, rest, _ := bytes.Cut(msg, []byte("\n"))
		if len(bytes.TrimSuffix(line, []byte("\r"))) == 0 {
			return false // the empty line: the header section has ended
		}
		if len(line) >= len(name) && strings.EqualFold(string(line[:len(name)]), name) {
			return true
		}
		msg = rest
	}
	return false
}

// NewStripReader returns a reader of r's message without the Authentication-Results
// fields that claim authServID, as StripForged. It reads the header section line
// by line, holding back at most one Authentication-Results field (up to 64 KiB),
// and passes the body through untouched.
func NewStripReader(r io.Reader, authServID string) io.Reader {
	return &stripReader{src: bufio.NewReaderSize(r, 4096), id: authServID, lineStart: true}
}

// The fate of the header field being read.
const (
	fieldPass = iota // written out
	fieldHold        // an Authentication-Results field, held back until decided
	fieldDrop        // ours: discarded
)

type stripReader struct {
	src       *bufio.Reader
	id        string
	out       []byte // what is ready to be read
	held      []byte
	state     int
	lineStart bool
	inBody    bool
	err       error
}

func (s *stripReader) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.inBody {
			return s.src.Read(p)
		}
		s.step()
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	return n, nil
}

// step reads one piece of a header line (at most the buffer) and decides where
// it goes.
func (s *stripReader) step() {
	s.out = s.out[:0]
	frag, err := s.src.ReadSlice('\n')
	if len(frag) > 0 {
		s.header(frag)
	}
	switch {
	case err == bufio.ErrBufferFull:
	case err != nil:
		s.resolve(true)
		s.err = err
	}
}

// header handles a piece of the header section.
func (s *stripReader) header(frag []byte) {
	starts := s.lineStart
	s.lineStart = frag[len(frag)-1] == '\n'
	if starts && !isWSP(frag[0]) {
		s.resolve(true) // a new field: the previous one has ended
		if len(frag) <= 2 && bytes.Equal(bytes.TrimPrefix(frag, []byte("\r")), []byte("\n")) {
			s.emit(frag)
			s.inBody = true
			return
		}
		s.state = fieldPass
		if name, _, ok := bytes.Cut(frag, []byte(":")); ok && strings.EqualFold(strings.TrimSpace(string(name)), "Authentication-Results") {
			s.state = fieldHold
		}
	}
	switch s.state {
	case fieldPass:
		s.emit(frag)
	case fieldHold:
		s.held = append(s.held, frag...)
		if len(s.held) > maxHeldField {
			s.resolve(false)
		}
	}
}

// resolve decides the held field: complete tells whether it has ended. A field
// decided while incomplete goes on passing or dropping its remaining lines.
func (s *stripReader) resolve(complete bool) {
	if s.state != fieldHold {
		return
	}
	_, value, _ := bytes.Cut(s.held, []byte(":"))
	ours, decided := claimsID(string(value), s.id, complete)
	if ours || !decided {
		s.state = fieldDrop
	} else {
		s.emit(s.held)
		s.state = fieldPass
	}
	s.held = s.held[:0]
}

func (s *stripReader) emit(b []byte) { s.out = append(s.out, b...) }

// claimsID reports whether an Authentication-Results value names id as its
// authserv-id (RFC 8601: CFWS, then a token or quoted-string). decided is false
// when the value ended before the authserv-id did and complete is false; a
// complete value without one is malformed and decided as not ours.
func claimsID(value, id string, complete bool) (ours, decided bool) {
	i, ok := skipCFWS(value, 0)
	if !ok || i == len(value) {
		return false, complete
	}
	var got string
	if value[i] == '"' {
		var b strings.Builder
		for i++; i < len(value) && value[i] != '"'; i++ {
			if value[i] == '\\' && i+1 < len(value) {
				i++
			}
			if value[i] != '\r' && value[i] != '\n' {
				b.WriteByte(value[i])
			}
		}
		if i == len(value) {
			return false, complete
		}
		got = b.String()
	} else {
		j := i
		for j < len(value) && isTokenChar(value[j]) {
			j++
		}
		if j == len(value) && !complete {
			return false, false
		}
		got = value[i:j]
	}
	return got != "" && strings.EqualFold(got, id), true
}

// skipCFWS skips whitespace and (nested) comments from i; false when a comment
// has not ended.
func skipCFWS(s string, i int) (int, bool) {
	depth := 0
	for ; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0 || isFWS(c):
		default:
			return i, true
		}
	}
	return i, depth == 0
}

func isTokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && strings.IndexByte(`()<>@,;:\"/[]?=`, c) < 0
}
