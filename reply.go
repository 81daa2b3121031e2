package smtpd

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file is the reply writer: every reply the server sends passes writeReply,
// which queues it; flush sends the queue under the write lock with a deadline; a
// closing reply (221 or 421) and Close's abort agree on who sends the last one.

// Who sends a session's last reply: exactly one of the session goroutine (its 221 or
// closing 421) and Close (its 421) does.
const (
	byeNone int32 = iota
	byeSession
	byeAbort
)

// send queues r, with its RFC 3463 code when EnhancedStatusCodes is on.
func (s *Session) send(r *SMTPError) {
	s.writeReply(r.Code, s.enhancedCode(r), r.Message)
}

// sendText queues a reply that never carries an enhanced code: the banner, the
// HELO/EHLO reply, 334 and 354 (RFC 2034).
func (s *Session) sendText(code int, text string) {
	s.writeReply(code, "", text)
}

// enhancedCode is the RFC 3463 code sent with r: its own, else with
// EnhancedStatusCodes the code of its meaning or its class default.
func (s *Session) enhancedCode(r *SMTPError) string {
	if !s.cfg.enhancedCodes || r.EnhancedCode != "" && validEnhanced(r.Code, r.EnhancedCode) {
		return r.EnhancedCode // off: a hook's own, which writeReply drops when invalid
	}
	if e, ok := enhancedCodes[r]; ok {
		return e
	}
	return strconv.Itoa(r.Code/100) + ".0.0"
}

// replyError answers err: an *SMTPError in its chain with its code and text, any
// other error with 451. It counts the error and logs it. A 421 (or closeAfter) ends
// the session, and so does one error past MaxErrors (answered 421 instead).
func (s *Session) replyError(err error, closeAfter bool) {
	se, ok := asSMTPError(err)
	s.Exceptions++
	s.errors++
	if !closeAfter && se.Code != 421 && s.overErrorLimit() {
		s.srv.stats.limit(&s.srv.stats.MaxErrors)
		s.log().Warn("too many errors; closing", "errors", s.errors, "err", err)
		se, err = errTooManyErrors, errTooManyErrors
	}
	closing := se.Code == 421 || closeAfter
	switch {
	case !ok:
		s.log().Error("hook failed; replied 451", "err", err)
	case closing:
		s.log().Info("closing with error reply", "reply", se.Code, "err", err)
	default:
		s.log().Info("error reply", "reply", se.Code, "err", err)
	}
	if !closing {
		s.send(se)
		return
	}
	s.closeWith(se)
}

// closeWith sends r as the session's last reply and ends the session.
func (s *Session) closeWith(r *SMTPError) {
	s.quit = true
	if !s.canReply() {
		return
	}
	s.final = true
	s.send(r)
	s.flush()
}

// canReply reports whether a reply can be sent now: not during a TLS handshake,
// nor on an implicit-TLS port before it, where plaintext would be garbage to the
// client. Close calls it under wmu, which guards both fields' writes.
func (s *Session) canReply() bool {
	return !s.tlsBusy && (!s.implicitTLS || s.IsEncrypted())
}

// writeReply queues a reply: the one choke point. An invalid enhanced code is
// dropped; a text with line breaks becomes a multi-line reply; CR never reaches the
// client. A reply that does not fit in the rest of the buffer flushes it first, so
// the buffer never writes on its own (without the lock and the deadline of flush).
func (s *Session) writeReply(code int, enhanced, text string) {
	if enhanced != "" && !validEnhanced(code, enhanced) {
		enhanced = ""
	}
	s.srv.stats.reply(code)
	w := s.writer()
	need := len(text) + len(enhanced) + 7
	if need > w.Size() || strings.IndexByte(text, '\n') >= 0 || strings.IndexByte(text, '\r') >= 0 {
		s.writeLong(formatReply(code, enhanced, text))
		return
	}
	if need > w.Available() {
		s.flush()
	}
	writeCode(w, code)
	w.WriteByte(' ')
	if enhanced != "" {
		w.WriteString(enhanced)
		w.WriteByte(' ')
	}
	w.WriteString(text)
	w.WriteString("\r\n")
	if s.debug {
		s.traceSent(formatReply(code, enhanced, text))
	}
}

// writeCode writes a three-digit reply code without allocating.
func writeCode(w *bufio.Writer, code int) {
	if code < 100 || code > 999 {
		w.WriteString(strconv.Itoa(code))
		return
	}
	w.WriteByte(byte('0' + code/100))
	w.WriteByte(byte('0' + code/10%10))
	w.WriteByte(byte('0' + code%10))
}

// writeLong queues a formatted reply; one larger than the buffer is sent at once.
func (s *Session) writeLong(r string) {
	s.traceSent(r)
	w := s.writer()
	if len(r) > w.Available() {
		s.flush()
	}
	if len(r) <= w.Available() {
		w.WriteString(r)
		return
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.prepareWrite()
	if s.mayWrite() {
		s.w.WriteString(r) // bufio writes a string this long straight through
	}
}

// formatReply renders a reply; a text with line breaks becomes a multi-line reply.
func formatReply(code int, enhanced, text string) string {
	var b strings.Builder
	lines := strings.Split(strings.ReplaceAll(text, "\r", ""), "\n")
	for i, l := range lines {
		b.WriteString(strconv.Itoa(code))
		if i < len(lines)-1 {
			b.WriteByte('-')
		} else {
			b.WriteByte(' ')
		}
		if enhanced != "" {
			b.WriteString(enhanced)
			b.WriteByte(' ')
		}
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	return b.String()
}

// oneLine removes CR and LF, and surrounding spaces, from a hook-set response text.
func oneLine(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r", "", "\n", "").Replace(s)
	}
	return strings.TrimSpace(s)
}

// replyBufferSize is the size of the reply buffer: every usual reply, and a
// pipelined batch of them, fits.
const replyBufferSize = 1024

// writeBuffers pools the reply buffers of idle sessions.
var writeBuffers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, replyBufferSize) }}

// writer returns the reply buffer, taking one from the pool when the session was
// idle.
func (s *Session) writer() *bufio.Writer {
	if s.w == nil {
		s.w = writeBuffers.Get().(*bufio.Writer)
		s.w.Reset(s.conn)
	}
	return s.w
}

// releaseWriter gives an empty reply buffer back to the pool while the session
// waits for the client.
func (s *Session) releaseWriter() {
	if s.w != nil && s.w.Buffered() == 0 {
		s.w.Reset(nil)
		writeBuffers.Put(s.w)
		s.w = nil
	}
}

// flush sends the queued replies, with IOCmdTimeout as write deadline.
func (s *Session) flush() error {
	if s.w == nil || s.w.Buffered() == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.flushLocked()
}

// flushLocked is flush for a caller that holds wmu.
func (s *Session) flushLocked() error {
	s.prepareWrite()
	if !s.mayWrite() {
		s.w.Reset(s.conn) // Close has sent its 421 in place of these replies
		return net.ErrClosed
	}
	err := s.w.Flush()
	if err != nil {
		s.quit = true
		s.log().Debug("write failed", "err", err)
	}
	return err
}

// prepareWrite sets the write deadline for a write under wmu.
func (s *Session) prepareWrite() {
	if s.cfg.timeout > 0 {
		s.raw.SetWriteDeadline(time.Now().Add(s.cfg.timeout))
	}
	if s.aborted.Load() { // keep abort's short deadline (it may have been set before ours)
		s.raw.SetWriteDeadline(time.Now().Add(time.Second))
	}
}

// mayWrite reports, under wmu, whether the queued replies may go out: always, unless
// they end the session and Close already sent its 421 instead.
func (s *Session) mayWrite() bool {
	if !s.final {
		return s.bye.Load() != byeAbort && !s.aborted.Load()
	}
	return s.bye.CompareAndSwap(byeNone, byeSession) || s.bye.Load() == byeSession
}

// abort sends reply and closes the connection from outside the session goroutine.
// Exactly one closing reply reaches the client: the session's own or this one.
func (s *Session) abort(reply *SMTPError) {
	if !s.aborted.CompareAndSwap(false, true) {
		return
	}
	defer s.cancel() // only once the 421 is out: a hook woken by it can reply nothing
	// A short deadline first, so that a flush to a client that does not read gives
	// the lock up soon (flush re-checks aborted after setting its own deadline).
	s.raw.SetWriteDeadline(time.Now().Add(time.Second))
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.bye.CompareAndSwap(byeNone, byeAbort) && s.canReply() {
		io.WriteString(s.conn, formatReply(reply.Code, s.enhancedCode(reply), reply.Message))
	}
	unpark(s, errAborted) // a parked session ends on its own goroutine; before the close, so its descriptor leaves the poller first
	s.raw.Close()         // before unlocking: no reply may follow the 421
}
