package smtpd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
)

// This file is the streaming path: a Handler that implements MessageStreamer gets
// the message as an io.Reader while it arrives, and nothing is gathered in
// Message.Data. The rules are the buffered path's (feed and finish in data.go); only
// where the bytes go differs.

// MessageStreamer is an optional interface of a Handler, as http.Flusher is of an
// http.ResponseWriter. A Handler that implements it gets each message (DATA or
// BDAT) as a reader of the dot-unstuffed, CRLF-mode-processed bytes, and nothing is
// gathered in Message.Data, so memory per session stays bounded by the buffers
// whatever the message size.
//
// OnDataStart runs first, as for the buffered path; OnDataReceiving and
// OnDataHeaders do not run; OnMessage is not called. The reader ends (io.EOF) at the
// real end of data — <CRLF>.<CRLF> or the LAST chunk, the smuggling rules unchanged —
// or fails with an error wrapping SMTPError552 past MaxMessageSize, with one wrapping
// the CRLFStrict reply when the message had a bare line end, or with
// io.ErrUnexpectedEOF when the client left. What the hook leaves unread is read and
// discarded; its return value answers the final dot as OnMessage's would (nil: 250),
// unless the data broke a rule, whose reply wins. Message.Bytesize is the number of
// bytes streamed. OnMessageStream runs on a goroutine of its own while the session
// reads the data; it must not touch the Session's Message, and it returns before
// any other hook of the session runs.
type MessageStreamer interface {
	OnMessageStream(s *Session, r io.Reader) error
}

// streamBufferSize is how much message data is handed to the stream hook at once:
// one goroutine hand-off per 8 KiB, not one per line (more only adds memory per
// session: the hand-off costs little next to the copying).
const streamBufferSize = 8 << 10

var streamWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, streamBufferSize) }}

// errStreamClosed is what the session's writes see once the hook stopped reading.
var errStreamClosed = errors.New("smtpd: OnMessageStream returned")

// messageStream is one message being streamed to the hook.
type messageStream struct {
	pw     *io.PipeWriter
	w      *bufio.Writer
	done   chan error // the hook's result
	broken bool       // the hook stopped reading: the rest is discarded
	size   int        // bytes given to the stream
	closed bool
}

// openStream starts the stream hook on its own goroutine.
func (s *Session) openStream(ms MessageStreamer) *messageStream {
	s.log() // made here: the hook's goroutine may log through it
	pr, pw := io.Pipe()
	st := &messageStream{pw: pw, done: make(chan error, 1)}
	st.w = streamWriters.Get().(*bufio.Writer)
	st.w.Reset(pw)
	go func() {
		var err error
		defer func() {
			if v := recover(); v != nil {
				s.log().Error("panic in OnMessageStream; connection closed", "panic", v, "stack", string(debug.Stack()))
				err = fmt.Errorf("panic in OnMessageStream: %v: %w", v, SMTPError421)
			}
			pr.CloseWithError(errStreamClosed)
			st.done <- err
		}()
		err = ms.OnMessageStream(s, pr)
	}()
	return st
}

// write gives the hook one piece of data; after the hook stopped reading it drops it.
func (st *messageStream) write(text, end []byte) {
	st.size += len(text) + len(end)
	if st.broken {
		return
	}
	if _, err := st.w.Write(text); err == nil {
		_, err = st.w.Write(end)
		st.broken = err != nil
	} else {
		st.broken = true
	}
}

// close ends the stream — with io.EOF when err is nil, else with err — and returns
// the hook's result once it has returned.
func (st *messageStream) close(err error) error {
	if st.closed {
		return nil
	}
	st.closed = true
	if err == nil && !st.broken {
		if ferr := st.w.Flush(); ferr != nil {
			st.broken = true
		}
	}
	st.pw.CloseWithError(err)
	res := <-st.done
	st.w.Reset(nil)
	streamWriters.Put(st.w)
	return res
}

// abandonStream ends a stream whose transfer was cut short (the client left, the
// transaction was reset) and waits for the hook.
func (t *transfer) abandonStream() {
	if t != nil && t.stream != nil {
		t.stream.close(io.ErrUnexpectedEOF)
	}
}
