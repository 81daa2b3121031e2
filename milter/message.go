package milter

import (
	"bytes"
	"errors"
	"io"
	"strings"
)

// This file is the message as the milters change it, byte for byte as Postfix's
// cleanup writes it: the fields the milters did not touch keep their bytes, the
// body stays in the source unless a milter replaced it.

// message is a message in its source (Message.Data or a spool) with the milters'
// changes to its header fields and body.
type message struct {
	src      io.ReaderAt
	size     int64
	fields   []field
	bodyOff  int64  // where the body starts in src
	sepStart int64  // where the empty line before the body starts; -1 if none
	body     []byte // the body a milter gave, when replaced
	replaced bool
	edited   bool // a header field was added, changed or removed
}

// errBadEdit is a change a milter may not ask for: a header field name that is
// empty or not printable ASCII without ':'.
var errBadEdit = errors.New("milter: bad header field name in a change")

// fieldBytes returns a field's bytes, at most limit of them (0: all).
func (m *message) fieldBytes(fl *field, limit int64) []byte {
	if fl.raw != nil {
		return fl.raw
	}
	n := fl.end - fl.start
	if limit > 0 {
		n = min(n, limit)
	}
	buf := make([]byte, n)
	got, _ := m.src.ReadAt(buf, fl.start)
	return buf[:got]
}

// changed reports whether the milters changed the content.
func (m *message) changed() bool { return m.edited || m.replaced }

// header returns the header section as it is now, with the empty line that ends
// it (CRLF when the message had none, as Postfix adds one).
func (m *message) header() []byte {
	var b bytes.Buffer
	for i := range m.fields {
		raw := m.fieldBytes(&m.fields[i], 0)
		b.Write(raw)
		if !bytes.HasSuffix(raw, []byte("\n")) {
			b.WriteString("\r\n")
		}
	}
	if m.sepStart >= 0 {
		sep := make([]byte, m.bodyOff-m.sepStart)
		m.src.ReadAt(sep, m.sepStart)
		b.Write(sep)
	} else {
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// bodyReader reads the body as it is now.
func (m *message) bodyReader() io.Reader {
	if m.replaced {
		return bytes.NewReader(m.body)
	}
	return io.NewSectionReader(m.src, m.bodyOff, m.size-m.bodyOff)
}

// reader reads the whole message as it is now.
func (m *message) reader() io.Reader {
	if !m.changed() {
		return io.NewSectionReader(m.src, 0, m.size)
	}
	return io.MultiReader(bytes.NewReader(m.header()), m.bodyReader())
}

// validName reports whether a milter's header field name may be used.
func validName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// renderField writes a field a milter gave as Postfix's cleanup does: "Name:",
// a space unless the milter negotiated leading spaces (then its value carries
// its own), the value; each "\n" in the value starts a new line, which gets a
// leading TAB unless it begins with a space or a TAB; every line ends with CRLF.
func renderField(name, value string, leadSpace bool) []byte {
	var b bytes.Buffer
	b.WriteString(name)
	b.WriteByte(':')
	if !leadSpace {
		b.WriteByte(' ')
	}
	value = strings.ReplaceAll(value, "\r\n", "\n")
	for i, line := range strings.Split(value, "\n") {
		if i > 0 && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
			b.WriteByte('\t')
		}
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// addHeader appends a field after the last one (SMFIR_ADDHEADER).
func (m *message) addHeader(name, value string, leadSpace bool) {
	m.fields = append(m.fields, field{name: name, raw: renderField(name, value, leadSpace)})
	m.edited = true
}

// insertHeader inserts a field (SMFIR_INSHEADER): at index 0 before the first
// field, at index n after the n-th, counting every field (the program's hidden
// ones too, as Postfix counts its own Received:); past the last, at the end.
func (m *message) insertHeader(index int, name, value string, leadSpace bool) {
	f := field{name: name, raw: renderField(name, value, leadSpace)}
	if index < 0 || index >= len(m.fields) {
		m.fields = append(m.fields, f)
	} else {
		m.fields = append(m.fields[:index+1], m.fields[index:]...)
		m.fields[index] = f
	}
	m.edited = true
}

// changeHeader changes the index-th field named name (SMFIR_CHGHEADER; 1-based,
// counting the fields of that name, case-insensitively, that milters see): an
// empty value removes it; a field that is not there is added at the end, unless
// the value is empty.
func (m *message) changeHeader(index int, name, value string, leadSpace bool) {
	index = max(index, 1) // Sendmail: 0 is 1
	for i := range m.fields {
		fl := &m.fields[i]
		if fl.hidden || !strings.EqualFold(fl.name, name) {
			continue
		}
		if index--; index > 0 {
			continue
		}
		if value == "" {
			m.fields = append(m.fields[:i], m.fields[i+1:]...)
		} else {
			*fl = field{name: name, raw: renderField(name, value, leadSpace)}
		}
		m.edited = true
		return
	}
	if value != "" {
		m.addHeader(name, value, leadSpace)
	}
}

// replaceBody sets the body a milter gave (all its SMFIR_REPLBODY chunks), with
// its line ends as Postfix writes them: each "\n" (and "\r\n") becomes CRLF, and
// a last line without a line end gets one.
func (m *message) replaceBody(body []byte) {
	var b bytes.Buffer
	b.Grow(len(body) + len(body)/32 + 2)
	for len(body) > 0 {
		i := bytes.IndexByte(body, '\n')
		if i < 0 {
			b.Write(body)
			b.WriteString("\r\n")
			break
		}
		b.Write(bytes.TrimSuffix(body[:i], []byte("\r")))
		b.WriteString("\r\n")
		body = body[i+1:]
	}
	m.body, m.replaced = b.Bytes(), true
}
