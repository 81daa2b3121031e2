package mailauth

import (
	"io"
	"strings"
)

// This file is the canonicalization of RFC 6376 section 3.4, "simple" and
// "relaxed", for headers and bodies, as ARC signatures and seals use it (RFC 8617
// 4.1.2 and 5.1.1).

// canonHeader returns the field canonicalized: simple keeps it as received,
// relaxed lowercases the name, unfolds, makes every run of WSP one space and
// removes WSP around the colon and at the end. Both end in CRLF.
func canonHeader(f field, relaxed bool) string {
	if !relaxed {
		return f.raw
	}
	name, value, _ := strings.Cut(f.raw, ":")
	var b strings.Builder
	b.Grow(len(f.raw))
	b.WriteString(strings.ToLower(strings.TrimRight(name, " \t")))
	b.WriteByte(':')
	space, started := false, false
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\r', '\n':
		case ' ', '\t':
			space = true
		default:
			if space && started {
				b.WriteByte(' ')
			}
			space, started = false, true
			b.WriteByte(c)
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// bodyCanon canonicalizes a body written to it in pieces, simple or relaxed, into
// w, stopping after limit canonical bytes (an l= tag; <0: no limit). Bare LF line
// ends count as CRLF; a lone CR is content. Close ends the body: empty lines at
// its end are dropped, a last line without CRLF gets one, and an empty body is
// CRLF (simple) or nothing (relaxed).
type bodyCanon struct {
	w        io.Writer
	relaxed  bool
	limit    int64
	written  int64
	empties  int  // empty lines held back: they count only if content follows
	content  bool // the current line has content
	space    bool // relaxed: WSP held back, written as one SP if content follows
	cr       bool // a CR that may start a CRLF
	anything bool // any line has been written
	buf      []byte
}

func newBodyCanon(w io.Writer, relaxed bool, limit int64) *bodyCanon {
	return &bodyCanon{w: w, relaxed: relaxed, limit: limit, buf: make([]byte, 0, 4096)}
}

// Write canonicalizes p; it never fails.
func (c *bodyCanon) Write(p []byte) (int, error) {
	for _, ch := range p {
		if c.cr {
			c.cr = false
			if ch == '\n' {
				c.endLine()
				continue
			}
			c.char('\r')
		}
		switch {
		case ch == '\r':
			c.cr = true
		case ch == '\n':
			c.endLine()
		case c.relaxed && (ch == ' ' || ch == '\t'):
			c.space = true
		default:
			c.char(ch)
		}
	}
	c.flush()
	return len(p), nil
}

// char writes one content byte, with the empty lines and the space held back
// before it.
func (c *bodyCanon) char(ch byte) {
	for ; c.empties > 0; c.empties-- {
		c.emit('\r', '\n')
	}
	if c.space {
		c.emit(' ')
		c.space = false
	}
	c.emit(ch)
	c.content = true
}

func (c *bodyCanon) endLine() {
	c.space = false // relaxed: WSP at the end of a line is dropped
	if !c.content {
		c.empties++
		return
	}
	c.emit('\r', '\n')
	c.content = false
	c.anything = true
}

// Close ends the body; it never fails.
func (c *bodyCanon) Close() error {
	if c.cr {
		c.cr = false
		c.char('\r')
	}
	if c.content {
		c.endLine()
	}
	if !c.relaxed && !c.anything {
		c.emit('\r', '\n')
	}
	c.flush()
	return nil
}

func (c *bodyCanon) emit(bs ...byte) {
	for _, b := range bs {
		if c.limit >= 0 && c.written >= c.limit {
			return
		}
		c.buf = append(c.buf, b)
		c.written++
	}
	if len(c.buf) >= cap(c.buf)-2 {
		c.flush()
	}
}

func (c *bodyCanon) flush() {
	if len(c.buf) > 0 {
		c.w.Write(c.buf)
		c.buf = c.buf[:0]
	}
}
