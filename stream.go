package smtpd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
)

// This file is the streaming path: a Handler that implements MessageStreamer (see
// handler.go) gets the message as an io.Reader while it arrives, and nothing is
// gathered in Message.Data. The rules are the buffered path's (feed and finish in
// data.go); only where the bytes go differs.

// streamBufferSize is how much message data is handed to the stream hook at once:
// one goroutine hand-off per 8 KiB, not one per line (more only adds memory per
// session: the hand-off costs little next to the copying).
const streamBufferSize = 8 << 10

var streamWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, streamBufferSize) }}

var (
	// errStreamClosed is what the session's writes see once the hook stopped reading.
	errStreamClosed = errors.New("smtpd: OnMessageStream returned")
	// errStreamGoexit is the result of a stream hook that never returned: it called
	// runtime.Goexit. A 421: the message was not handled.
	errStreamGoexit = fmt.Errorf("OnMessageStream called runtime.Goexit: %w", SMTPError421)
)

// messageStream is one message being streamed to the hook.
type messageStream struct {
	pw     *io.PipeWriter
	w      *bufio.Writer
	done   chan error // the hook's result
	broken bool       // the hook stopped reading: the rest is discarded
	size   int        // bytes given to the stream
	closed bool
}

// openStream starts the stream hook on its own goroutine. However the hook ends —
// a return, a panic, runtime.Goexit (t.FailNow in a test's handler) — its result
// reaches the session; only a return can be a 250.
func (c *conn) openStream(ms MessageStreamer) *messageStream {
	c.log() // made here: the hook's goroutine may log through it
	pr, pw := io.Pipe()
	st := &messageStream{pw: pw, done: make(chan error, 1)}
	st.w = streamWriters.Get().(*bufio.Writer)
	st.w.Reset(pw)
	go func() {
		err := errStreamGoexit
		defer func() {
			if v := recover(); v != nil {
				c.log().Error("panic in OnMessageStream; connection closed", "panic", v, "stack", string(debug.Stack()))
				err = fmt.Errorf("panic in OnMessageStream: %v: %w", v, SMTPError421)
			} else if err == errStreamGoexit {
				c.log().Error("OnMessageStream called runtime.Goexit (t.FailNow?); connection closed")
			}
			pr.CloseWithError(errStreamClosed)
			st.done <- err
		}()
		err = ms.OnMessageStream(c.s, pr)
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
