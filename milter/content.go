package milter

import (
	"bytes"
	"io"
	"sync"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
)

// This file sends a message's content to the milters: each header field, the end
// of the headers and the body in chunks, to the first milters as the message
// arrives; then the end of the message to each milter in order, where a milter
// that comes after one that may change the content gets the content as changed
// (Postfix: "each milter sees the result of any changes made by a preceding
// milter"). The message itself stays where the server keeps it (Message.Data) or
// in the stream hook's spool: the feeder keeps only offsets.

const (
	chunkSize       = 65535  // body bytes per SMFIC_BODY (Postfix's MILTER_CHUNK_SIZE)
	headerSizeLimit = 102400 // bytes of a header field sent to a milter (Postfix's header_size_limit)
	maxFields       = 10000  // header fields tracked; more refuses the message
	lineKeep        = 1000   // bytes of a line kept to tell a header line from a body line
)

// errTooManyFields refuses a message whose header section has more than
// maxFields fields: the feeder would have to remember each.
var errTooManyFields = &smtpd.SMTPError{Code: 552, EnhancedCode: "5.3.4", Message: "Message header too large"}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// field is one header field of the message: its bytes in the source, or its own
// (a field a milter added or changed).
type field struct {
	name       string
	start, end int64  // the field's bytes in the source, its line ends included
	raw        []byte // the field's bytes when it is not the source's
	hidden     bool   // the program's own (added in OnDataStart): not shown to milters
}

// feeder is one message on its way to the milters.
type feeder struct {
	ss    *msession
	msg   message
	conns []*mconn // the milters that take the content, in order
	live  int      // conns[:live] get it as it arrives
	body  []bool   // conns[i] got a body chunk

	off       int64  // bytes of the message seen
	line      []byte // the first bytes of the line being read
	lineStart int64
	cur       int   // index of the field being read, -1 for none
	hiddenEnd int64 // fields that start before it are hidden
	inBody    bool
	sent      int64 // body bytes sent to the live milters (an offset)
	chunk     *[]byte
	done      bool    // the verdict is known: nothing more goes to the milters
	verdict   outcome // refusal or discard
}

// newFeeder starts the content of a message for the milters that take it.
func newFeeder(ss *msession, src io.ReaderAt, hiddenEnd int64) *feeder {
	f := &feeder{ss: ss, msg: message{src: src, sepStart: -1}, cur: -1, hiddenEnd: hiddenEnd}
	for _, c := range ss.conns {
		if c.state == mOpen && c.inTxn {
			f.conns = append(f.conns, c)
		}
	}
	f.body = make([]bool, len(f.conns))
	// A milter gets the content live unless one before it may change it.
	for f.live < len(f.conns) {
		f.live++
		if f.conns[f.live-1].canEditContent() {
			break
		}
	}
	return f
}

// close gives the feeder's buffer back.
func (f *feeder) close() {
	if f.chunk != nil {
		chunkPool.Put(f.chunk)
		f.chunk = nil
	}
}

// feed takes the next bytes of the message, which the source holds at f.off.
func (f *feeder) feed(p []byte) {
	for len(p) > 0 && !f.inBody && !f.done {
		seg := p
		i := bytes.IndexByte(p, '\n')
		if i >= 0 {
			seg = p[:i+1]
		}
		if n := lineKeep - len(f.line); n > 0 {
			f.line = append(f.line, seg[:min(n, len(seg))]...)
		}
		f.off += int64(len(seg))
		p = p[len(seg):]
		if i >= 0 {
			f.endLine()
		}
	}
	f.off += int64(len(p))
	if f.inBody {
		f.sendBody(false)
	}
}

// endLine handles a complete header-section line: a continuation, a new field,
// the empty line that ends the headers, or the first line of a body that has no
// empty line before it.
func (f *feeder) endLine() {
	line, start := f.line, f.lineStart
	f.line, f.lineStart = f.line[:0], f.off
	if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') && f.cur >= 0 {
		f.msg.fields[f.cur].end = f.off
		return
	}
	f.endField()
	switch name, ok := headerName(line); {
	case isBlankLine(line):
		f.msg.sepStart = start
		f.startBody(f.off)
	case ok:
		if len(f.msg.fields) == maxFields {
			f.stop(outcome{reply: errTooManyFields})
			return
		}
		f.msg.fields = append(f.msg.fields, field{name: name, start: start, end: f.off, hidden: start < f.hiddenEnd})
		f.cur = len(f.msg.fields) - 1
	default:
		f.startBody(start)
	}
}

// isBlankLine reports whether a line is empty but for its line end.
func isBlankLine(line []byte) bool {
	return string(line) == "\r\n" || string(line) == "\n"
}

// headerName returns the name of a header field's first line ("Name:" or
// "Name :"), as Postfix's is_header: printable non-space characters other than
// ':', then optional blanks, then ':'.
func headerName(line []byte) (string, bool) {
	i := 0
	for i < len(line) && line[i] > ' ' && line[i] < 0x7f && line[i] != ':' {
		i++
	}
	name := i
	for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
		i++
	}
	if name == 0 || i >= len(line) || line[i] != ':' {
		return "", false
	}
	return string(line[:name]), true
}

// endField sends the field just read to the live milters.
func (f *feeder) endField() {
	if f.cur < 0 {
		return
	}
	fl := &f.msg.fields[f.cur]
	f.cur = -1
	if fl.hidden || f.done {
		return
	}
	raw := f.msg.fieldBytes(fl, headerSizeLimit)
	f.each(f.conns[:f.live], stHeader, func(c *mconn) (*gomilter.Action, error) {
		name, value := splitField(raw, c.leadSpace())
		return c.cs.HeaderField(name, value, nil)
	})
}

// startBody ends the header section at off.
func (f *feeder) startBody(off int64) {
	f.inBody, f.msg.bodyOff, f.sent = true, off, off
	f.each(f.conns[:f.live], stEOH, func(c *mconn) (*gomilter.Action, error) { return c.cs.HeaderEnd() })
}

// sendBody sends the body received so far to the live milters in full chunks,
// and the rest too when final.
func (f *feeder) sendBody(final bool) {
	for !f.done && (f.off-f.sent >= chunkSize || final && f.off > f.sent) {
		if f.chunk == nil {
			f.chunk = chunkPool.Get().(*[]byte)
		}
		n, err := f.msg.src.ReadAt((*f.chunk)[:min(chunkSize, f.off-f.sent)], f.sent)
		if n == 0 && err != nil {
			f.stop(outcome{reply: replyTempFail}) // the source failed: the message cannot pass
			return
		}
		f.sent += int64(n)
		f.sendChunk((*f.chunk)[:n], 0, f.live)
	}
}

// sendChunk sends one body chunk to conns[from:to].
func (f *feeder) sendChunk(chunk []byte, from, to int) {
	for i := from; i < to; i++ {
		f.body[i] = true
	}
	f.each(f.conns[from:to], stBody, func(c *mconn) (*gomilter.Action, error) { return c.cs.BodyChunk(chunk) })
}

// each reports a content event to the milters given that still take the
// message; the first refusal or discard ends the message's way to the milters.
func (f *feeder) each(conns []*mconn, st stage, fn func(c *mconn) (*gomilter.Action, error)) {
	for _, c := range conns {
		if f.done {
			return
		}
		if c.state != mOpen {
			continue
		}
		act := f.ss.call(c, st, func() (*gomilter.Action, error) { return fn(c) })
		switch {
		case act == nil && c.reply != nil: // failed, DefaultAction refuses
			f.stop(outcome{reply: c.reply})
		case act != nil:
			if o, stop := f.ss.apply(c, st, act); stop {
				f.stop(o)
			}
		}
	}
}

// stop ends the message's way to the milters with a verdict.
func (f *feeder) stop(o outcome) {
	if !f.done {
		f.done, f.verdict = true, o
	}
}

// endHeaders ends a message that ended inside its header section.
func (f *feeder) endHeaders() {
	if f.inBody || f.done {
		return
	}
	if len(f.line) > 0 { // a last line without a line end
		f.endLine()
	}
	if !f.inBody && !f.done {
		f.endField()
		f.startBody(f.off)
	}
}

// splitField splits a field's bytes into its name and its value as a milter gets
// it (Postfix's milter8_header): the value after the ':', one leading space
// removed unless the milter wants it, the lines of a folded value separated by a
// bare "\n", the last line end removed.
func splitField(raw []byte, leadSpace bool) (string, string) {
	i := bytes.IndexByte(raw, ':')
	if i < 0 {
		return string(bytes.TrimRight(raw, "\r\n")), ""
	}
	name := bytes.TrimRight(raw[:i], " \t")
	value := raw[i+1:]
	if !leadSpace && len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	value = bytes.TrimSuffix(value, []byte("\n"))
	value = bytes.TrimSuffix(value, []byte("\r"))
	if bytes.Contains(value, []byte("\r\n")) {
		value = bytes.ReplaceAll(value, []byte("\r\n"), []byte("\n"))
	}
	return string(name), string(value)
}
