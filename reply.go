package smtpd

import (
	"bufio"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file is the reply writer: every reply the server sends passes writeReply,
// which queues it; flush sends the queue under the write lock with a deadline. The
// session's last reply (221, or a closing 421) and Close's 421 (conn.abort) agree
// through the connection's state on who sends the last one.

// send queues r, with its RFC 3463 code when EnhancedStatusCodes is on.
func (c *conn) send(r *SMTPError) {
	c.writeReply(r.Code, c.enhancedCode(r), r.Message)
}

// sendText queues a reply that never carries an enhanced code: the banner, the
// HELO/EHLO reply, 334 and 354 (RFC 2034).
func (c *conn) sendText(code int, text string) {
	c.writeReply(code, "", text)
}

// enhancedCode is the RFC 3463 code sent with r: none while EnhancedStatusCodes is
// off; else its own, or its class default when it has none (or an invalid one).
func (c *conn) enhancedCode(r *SMTPError) string {
	switch {
	case !c.cfg.enhancedCodes || !c.greeted.Load():
		return "" // RFC 2034: only with the extension on, and never in the greeting (a refusal at connect included)
	case validEnhanced(r.Code, r.EnhancedCode):
		return r.EnhancedCode
	}
	return strconv.Itoa(r.Code/100) + ".0.0"
}

// replyError answers err: an *SMTPError in its chain with its code and text, any
// other error with 451. It counts the error and logs it. A 421 (or closeAfter) ends
// the session, and so does one error past MaxErrors (answered 421 instead).
func (c *conn) replyError(err error, closeAfter bool) {
	se, ok := asSMTPError(err)
	c.s.Exceptions++
	c.errors++
	if !closeAfter && se.Code != 421 && c.overErrorLimit() {
		c.srv.stats.limit(&c.srv.stats.MaxErrors)
		c.log().Warn("too many errors; closing", "errors", c.errors, "err", err)
		se, err = errTooManyErrors, errTooManyErrors
	}
	closing := se.Code == 421 || closeAfter
	switch {
	case !ok:
		c.log().Error("hook failed; replied 451", "err", err)
	case closing:
		c.log().Info("closing with error reply", "reply", se.Code, "err", err)
	default:
		c.log().Info("error reply", "reply", se.Code, "err", err)
	}
	if !closing {
		c.send(se)
		return
	}
	c.closeWith(se)
}

// refuse sends an error reply that does not count against MaxErrors — LMTP's
// reply to one recipient (RFC 2033 4.2 owes each its own) and a recipient past
// MaxRecipients (tooManyRecipients) — counted in Exceptions and logged, with attrs.
// It reports whether the reply is a 421, which ends the session once sent.
func (c *conn) refuse(err error, attrs ...any) bool {
	se, ok := asSMTPError(err)
	c.s.Exceptions++
	if ok {
		c.log().Info("error reply", append(attrs, "reply", se.Code, "err", err)...)
	} else {
		c.log().Error("hook failed; replied 451", append(attrs, "err", err)...)
	}
	c.send(se)
	return se.Code == 421
}

// closeWith sends r as the session's last reply and ends the session; when Close
// took the connection over, its 421 was the last reply and r is not sent.
func (c *conn) closeWith(r *SMTPError) {
	if !c.enter(connClosing) || !c.canReply() {
		return
	}
	c.send(r)
	c.flush()
}

// canReply reports whether a reply can be sent now: not on an implicit-TLS port
// (or from a TLS listener) before the handshake, where plaintext would be garbage
// to the client. Close calls it under wmu, which guards EncryptedAt's write.
func (c *conn) canReply() bool {
	return !c.implicitTLS && !c.tlsAccepted || c.s.IsEncrypted()
}

// writeReply queues a reply: the one choke point. An invalid enhanced code is
// dropped; a text with line breaks becomes a multi-line reply; CR never reaches the
// client. A reply that does not fit in the rest of the buffer flushes it first, so
// the buffer never writes on its own (without the lock and the deadline of flush).
func (c *conn) writeReply(code int, enhanced, text string) {
	if enhanced != "" && !validEnhanced(code, enhanced) {
		enhanced = ""
	}
	c.srv.stats.reply(code)
	w := c.writer()
	need := len(text) + len(enhanced) + 7
	if need > w.Size() || strings.IndexByte(text, '\n') >= 0 || strings.IndexByte(text, '\r') >= 0 {
		c.writeLong(formatReply(code, enhanced, text))
		return
	}
	if need > w.Available() {
		c.flush()
	}
	writeCode(w, code)
	w.WriteByte(' ')
	if enhanced != "" {
		w.WriteString(enhanced)
		w.WriteByte(' ')
	}
	w.WriteString(text)
	w.WriteString("\r\n")
	if c.debug {
		c.traceSent(formatReply(code, enhanced, text))
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
func (c *conn) writeLong(r string) {
	c.traceSent(r)
	w := c.writer()
	if len(r) > w.Available() {
		c.flush()
	}
	if len(r) <= w.Available() {
		w.WriteString(r)
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.aborted() {
		c.prepareWrite()
		c.w.WriteString(r) // bufio writes a string this long straight through
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
func (c *conn) writer() *bufio.Writer {
	if c.w == nil {
		c.w = writeBuffers.Get().(*bufio.Writer)
		c.w.Reset(c.nc)
	}
	return c.w
}

// releaseWriter gives an empty reply buffer back to the pool while the session
// waits for the client.
func (c *conn) releaseWriter() {
	if c.w != nil && c.w.Buffered() == 0 {
		c.w.Reset(nil)
		writeBuffers.Put(c.w)
		c.w = nil
	}
}

// flush sends the queued replies, with IOCmdTimeout as write deadline.
func (c *conn) flush() error {
	if c.w == nil || c.w.Buffered() == 0 {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

// flushLocked is flush for a caller that holds wmu. After Close took the
// connection over, the queued replies are dropped: its 421 went in their place.
func (c *conn) flushLocked() error {
	if c.aborted() {
		c.w.Reset(c.nc)
		return net.ErrClosed
	}
	c.prepareWrite()
	err := c.w.Flush()
	if err != nil {
		c.enter(connClosing)
		c.log().Debug("write failed", "err", err)
	}
	return err
}

// prepareWrite sets the write deadline for a write under wmu.
func (c *conn) prepareWrite() {
	if c.cfg.timeout > 0 {
		c.raw.SetWriteDeadline(time.Now().Add(c.cfg.timeout))
	}
}

// aborted reports whether Close took the connection over.
func (c *conn) aborted() bool { return connState(c.state.Load()) == connAborted }
