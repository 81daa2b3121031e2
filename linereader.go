package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// This file is the line reader: LF-ended lines from the connection, never more
// than IOBufferMaxSize bytes of one line held, and while the session is idle no
// buffer but a small one.

// Limits of the lines that are parsed, line end not counted (RFC 5321 4.5.3.1.4
// allows 512 octets for a command line, RFC 4954 4 12288 for an AUTH command or
// response); longer ones are read to their end in bounded memory and refused with
// 500, never parsed or stored.
const (
	maxCommandLine  = 2048
	maxAuthResponse = 12288
)

// readBufferSize is the size of the per-connection read buffer. Lines longer than it
// are gathered in lineReader.long, up to the IOBufferMaxSize limit.
const readBufferSize = 4096

var (
	errLineLimit   = errors.New("smtpd: line longer than IOBufferMaxSize")
	errBareLineEnd = errors.New("smtpd: bare CR or LF in a line")
	errSoftLimit   = errors.New("smtpd: line over the limit for its kind, dropped")
)

// lineReader reads LF-ended lines from a bufio.Reader, never holding more than max
// bytes of one line. It does the SMTP part of line reading and nothing else. While
// the session is idle its read buffer goes back to a pool (release), so an idle
// connection costs only its small peek buffer.
type lineReader struct {
	br   *bufio.Reader // nil while idle
	src  primedReader  // the connection, with the bytes of an idle wait first
	size int           // br's size
	max  int
	long []byte // gathers a line that does not fit in br's buffer
	peek [64]byte
}

// primedReader is a reader whose first reads return pending.
type primedReader struct {
	r       io.Reader
	pending []byte
}

func (p *primedReader) Read(b []byte) (int, error) {
	if len(p.pending) > 0 {
		n := copy(b, p.pending)
		p.pending = p.pending[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// readBuffers pools the read buffers of idle sessions (the common size only).
var readBuffers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}

func newLineReader(r io.Reader, max int) *lineReader {
	size := readBufferSize
	if max < size {
		size = max
	}
	if size < 16 {
		size = 16 // bufio's minimum
	}
	lr := &lineReader{size: size, max: max}
	lr.src.r = r
	return lr
}

// buf returns the read buffer, taking one when the reader was idle.
func (lr *lineReader) buf() *bufio.Reader {
	if lr.br == nil {
		if lr.size == readBufferSize {
			lr.br = readBuffers.Get().(*bufio.Reader)
			lr.br.Reset(&lr.src)
		} else {
			lr.br = bufio.NewReaderSize(&lr.src, lr.size)
		}
	}
	return lr.br
}

// reset makes r the source (after a TLS handshake); nothing may be buffered.
func (lr *lineReader) reset(r io.Reader) {
	lr.src = primedReader{r: r}
	if lr.br != nil {
		lr.br.Reset(&lr.src)
	}
}

// fill blocks until the client sends something (or the read deadline passes),
// reading it into the read buffer. It is called only when no line is buffered.
func (lr *lineReader) fill() error {
	if len(lr.src.pending) > 0 {
		return nil
	}
	_, err := lr.buf().Peek(1)
	return err
}

// release gives the buffers back while the session is idle: the read buffer, if
// empty, to the pool, and the long-line buffer to the garbage collector.
func (lr *lineReader) release() {
	lr.long = nil
	if lr.br != nil && lr.br.Buffered() == 0 && lr.size == readBufferSize {
		lr.br.Reset(nil)
		readBuffers.Put(lr.br)
		lr.br = nil
	}
}

// holdsBuffer reports whether the reader holds a read buffer now.
func (lr *lineReader) holdsBuffer() bool { return lr.br != nil }

// peekWait is an idle session's wait: it holds no read buffer, so the first bytes
// land in the small peek buffer.
func (lr *lineReader) peekWait() error {
	if len(lr.src.pending) > 0 {
		return nil // bytes of an earlier wait, not consumed yet
	}
	if lr.br != nil {
		return lr.fill() // the buffer was not empty: nothing to wait for in a small read
	}
	n, err := lr.src.r.Read(lr.peek[:])
	lr.src.pending = lr.peek[:n]
	if n > 0 {
		return nil
	}
	return err
}

// hasLine reports whether a complete line is already buffered, so that reading it
// needs no system call.
func (lr *lineReader) hasLine() bool {
	if lr.br == nil || lr.br.Buffered() == 0 {
		return bytes.IndexByte(lr.src.pending, '\n') >= 0
	}
	b, _ := lr.br.Peek(lr.br.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// buffered reports whether any byte the client sent is read but not yet consumed.
func (lr *lineReader) buffered() bool {
	return len(lr.src.pending) > 0 || lr.br != nil && lr.br.Buffered() > 0
}

// maxKeptLine is the largest gathering buffer a lineReader keeps between lines; a
// bigger one (after a long message line) is given back to the garbage collector.
const maxKeptLine = 64 << 10

// readLine returns the next line including its LF. The slice is valid until the next
// call. A line longer than max is errLineLimit, and the connection cannot go on. A
// line longer than soft (but not than max) is read to its end and dropped without
// being stored: errSoftLimit, and the next line can be read. Input that ends without
// LF is io.ErrUnexpectedEOF (or io.EOF when nothing of the line came).
func (lr *lineReader) readLine(soft int) ([]byte, error) {
	soft = min(soft, lr.max) // IOBufferMaxSize bounds every line, soft or not
	if cap(lr.long) > maxKeptLine {
		lr.long = nil
	}
	br := lr.buf()
	line, err := br.ReadSlice('\n')
	if err == nil {
		switch {
		case len(line) > lr.max:
			return nil, errLineLimit
		case len(line) > soft:
			return nil, errSoftLimit
		}
		return line, nil
	}
	if err != bufio.ErrBufferFull {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if len(line) > soft {
		return nil, lr.skipLine(len(line))
	}
	return lr.readLong(br, line, soft)
}

// readLong gathers a line longer than the read buffer, of which first was read,
// in lr.long.
func (lr *lineReader) readLong(br *bufio.Reader, first []byte, soft int) ([]byte, error) {
	lr.long = append(lr.long[:0], first...)
	for {
		line, err := br.ReadSlice('\n')
		if len(lr.long)+len(line) > soft {
			n := len(lr.long) + len(line)
			lr.long = nil // give the memory back
			if err == nil {
				return nil, lr.tooLong(n)
			}
			return nil, lr.skipLine(n)
		}
		lr.long = append(lr.long, line...)
		switch err {
		case nil:
			return lr.long, nil
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// skipLine reads and drops the rest of a line of which n bytes have been read, in
// bounded memory; it returns errSoftLimit, or errLineLimit past max.
func (lr *lineReader) skipLine(n int) error {
	for {
		if n > lr.max {
			return errLineLimit
		}
		line, err := lr.buf().ReadSlice('\n')
		n += len(line)
		switch err {
		case nil:
			return lr.tooLong(n)
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			return io.ErrUnexpectedEOF
		default:
			return err
		}
	}
}

// tooLong classifies a complete line of n bytes over the soft limit.
func (lr *lineReader) tooLong(n int) error {
	if n > lr.max {
		return errLineLimit
	}
	return errSoftLimit
}

// discardBuffered drops every byte already read from the connection but not yet
// consumed and returns how many there were.
func (lr *lineReader) discardBuffered() int {
	n := len(lr.src.pending)
	lr.src.pending = nil
	if lr.br != nil {
		n += lr.br.Buffered()
		lr.br.Discard(lr.br.Buffered())
	}
	return n
}
