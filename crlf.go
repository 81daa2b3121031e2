package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

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
// the session is parked its read buffer goes back to a pool (see release), so an
// idle connection costs only a small peek buffer.
type lineReader struct {
	br   *bufio.Reader // nil while idle
	src  primedReader  // the connection, with the bytes read while idle first
	size int           // br's size
	max  int
	long []byte // gathers a line that does not fit in br's buffer
	peek [128]byte
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

// release gives an empty read buffer back to the pool: the session parks.
func (lr *lineReader) release() {
	if lr.br != nil && lr.br.Buffered() == 0 && lr.size == readBufferSize {
		lr.br.Reset(nil)
		readBuffers.Put(lr.br)
		lr.br = nil
	}
}

// peekWait is a parked session's wait: it holds no read buffer, so the first
// bytes land in the small peek buffer.
func (lr *lineReader) peekWait() error {
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
	lr.long = append(lr.long[:0], line...)
	for {
		line, err = br.ReadSlice('\n')
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
