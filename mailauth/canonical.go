package mailauth

import (
	"bytes"
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
	cr       bool // the last piece ended in a CR that may start a CRLF
	anything bool // any line has been written
	buf      []byte
}

// The canonical bytes written other than the body's own.
var (
	crlf = []byte("\r\n")
	sp   = []byte(" ")
)

func newBodyCanon(w io.Writer, relaxed bool, limit int64) *bodyCanon {
	return &bodyCanon{w: w, relaxed: relaxed, limit: limit, buf: make([]byte, 0, 8192)}
}

// Write canonicalizes p, a line at a time; it never fails.
func (c *bodyCanon) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.cr {
			c.cr = false
			if p[0] == '\n' {
				c.endLine()
				p = p[1:]
				continue
			}
			c.text(crlf[:1])
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if p[len(p)-1] == '\r' {
				c.cr, p = true, p[:len(p)-1]
			}
			c.segment(p)
			break
		}
		c.segment(bytes.TrimSuffix(p[:i], crlf[:1]))
		c.endLine()
		p = p[i+1:]
	}
	c.flush()
	return n, nil
}

// segment takes part of a line: as it is (simple), or with each run of WSP made
// one space, held back until content follows (relaxed).
func (c *bodyCanon) segment(seg []byte) {
	if !c.relaxed {
		c.text(seg)
		return
	}
	for len(seg) > 0 {
		j := 0
		for j < len(seg) && seg[j] != ' ' && seg[j] != '\t' {
			j++
		}
		c.text(seg[:j])
		seg = seg[j:]
		k := 0
		for k < len(seg) && (seg[k] == ' ' || seg[k] == '\t') {
			k++
		}
		if k > 0 {
			c.space, seg = true, seg[k:]
		}
	}
}

// text writes content, with the empty lines and the space held back before it.
func (c *bodyCanon) text(b []byte) {
	if len(b) == 0 {
		return
	}
	for ; c.empties > 0; c.empties-- {
		c.emit(crlf)
	}
	if c.space {
		c.emit(sp)
		c.space = false
	}
	c.emit(b)
	c.content = true
}

func (c *bodyCanon) endLine() {
	c.space = false // relaxed: WSP at the end of a line is dropped
	if !c.content {
		c.empties++
		return
	}
	c.emit(crlf)
	c.content = false
	c.anything = true
}

// Close ends the body; it never fails.
func (c *bodyCanon) Close() error {
	if c.cr {
		c.cr = false
		c.text(crlf[:1])
	}
	if c.content {
		c.endLine()
	}
	if !c.relaxed && !c.anything {
		c.emit(crlf)
	}
	c.flush()
	return nil
}

// emit writes canonical bytes, up to the limit, through the buffer.
func (c *bodyCanon) emit(b []byte) {
	if c.limit >= 0 {
		b = b[:min(int64(len(b)), max(c.limit-c.written, 0))]
	}
	c.written += int64(len(b))
	if len(c.buf)+len(b) > cap(c.buf) {
		c.flush()
	}
	if len(b) >= cap(c.buf) {
		c.w.Write(b)
		return
	}
	c.buf = append(c.buf, b...)
}

func (c *bodyCanon) flush() {
	if len(c.buf) > 0 {
		c.w.Write(c.buf)
		c.buf = c.buf[:0]
	}
}
