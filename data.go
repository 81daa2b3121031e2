package smtpd

import (
	"fmt"
	"time"
)

// This file receives message data: DATA's dot-terminated lines here, BDAT's
// counted chunks in bdat.go, both through one transfer whose rules — the data hooks,
// MaxMessageSize, MaxBufferedData, CRLFStrict, the reply at the end — are written
// once, in feed, storeLine and finish.

// cmdData: RFC 5321 4.1.1.4. The 354 invites the mail data, which ends only with
// <CRLF>.<CRLF>; its reply is the reply to the whole transaction.
func (c *conn) cmdData(args string) error {
	if args != "" {
		return SMTPError501
	}
	if err := c.transactionAllowed(c.phase == phaseRcpt); err != nil {
		return err
	}
	if c.s.Envelope.EncodingBody == "binarymime" {
		return SMTPError503 // RFC 3030 3: BINARYMIME is sent with BDAT only
	}
	if err := c.dataCommand(); err != nil {
		return err
	}
	c.sendText(354, `Enter message, ending with "." on a line by itself`)
	return c.receiveData()
}

// dataCommand runs a DataCommandHandler's OnDataCommand: at DATA before the 354,
// at a transaction's first BDAT.
func (c *conn) dataCommand() error {
	if dh, ok := c.h.(DataCommandHandler); ok {
		return dh.OnDataCommand(c.s)
	}
	return nil
}

// transfer is one message being received.
type transfer struct {
	started bool  // OnDataStart ran
	bare    bool  // a bare CR or LF was seen (refused at the end under CRLFStrict)
	failed  error // the first rule broken or hook error: the rest is discarded, this answers the end
	binary  bool  // BODY=BINARYMIME: stored as sent, no line-end rules
	lineLen int   // BDAT: bytes of the current, unfinished line
	lastCR  bool  // BDAT: the data so far ends with CR
	stream  *messageStream
	header  headerWatch
}

// startTransfer begins a message: a fresh Message, the data-rate clock started.
func (c *conn) startTransfer() *transfer {
	now := time.Now()
	c.s.Message = Message{ID: c.s.Message.ID, CRLF: "\r\n", ReceivedAt: now.UTC()}
	c.dataStart, c.dataBytes = now, 0
	c.xfer = transfer{binary: c.s.Envelope.EncodingBody == "binarymime"}
	return &c.xfer
}

// receiveData reads the message after 354 up to <CRLF>.<CRLF>, runs the data hooks
// and answers the final dot. The transaction is reset afterwards, whatever the outcome.
//
// A hook error, a message over MaxMessageSize or MaxBufferedData, or (CRLFStrict) a
// bare line end does not stop the reading: the rest of the message is read and
// discarded, and the error answers the final dot; OnMessage is not called. Only a
// 421 is sent at once.
func (c *conn) receiveData() error {
	defer c.resetTransaction()
	t := c.startTransfer()
	afterCRLF := true // the DATA command line counts as ended by CRLF
	for {
		line, err := c.readLine(c.cfg.bufferMax)
		if err != nil {
			t.abandonStream()
			c.readFailed(err)
			return nil
		}
		if dotLine(line, afterCRLF) {
			break
		}
		c.dataBytes += len(line)
		afterCRLF = lineEndsCRLF(line)
		if err := c.feed(t, parseDataLine(line, c.cfg.crlfMode)); err != nil {
			t.abandonStream()
			return err
		}
	}
	return c.finish(t)
}

// feed passes one piece of message data (a line, or for BDAT a part of one) through
// the rules and stores it. It returns only an error that must be answered at once
// (a 421); other errors are kept in t.failed for the end.
func (c *conn) feed(t *transfer, d dataLine) error {
	t.bare = t.bare || d.bare
	if t.failed != nil {
		return nil
	}
	if !t.started {
		if t.failed = c.startData(t); t.failed != nil {
			return c.fatal(t.failed)
		}
	}
	if t.header.line(d) && t.stream == nil {
		c.s.Envelope.TLSRequiredNo = t.header.tlsRequiredNo
	}
	if t.failed = c.headersEnd(t, d); t.failed != nil {
		return c.fatal(t.failed)
	}
	switch {
	case c.overMaxMessage(t, int64(len(d.text)+len(d.end))):
		c.log().Info("message over MaxMessageSize; discarding the rest", "limit", c.cfg.maxMessage)
		t.failed = SMTPError552
	case t.stream != nil:
		t.stream.write(d.text, d.end) // MaxBufferedData does not apply: nothing is buffered
	default:
		t.failed = c.storeLine(d)
	}
	return c.fatal(t.failed)
}

// headersEnd runs OnDataHeaders at the empty line that ends the header section,
// before that line is stored (buffered path only).
func (c *conn) headersEnd(t *transfer, d dataLine) error {
	if t.stream != nil || !d.isEmpty || c.s.Message.Headers {
		return nil
	}
	c.s.Message.Headers = true
	return c.h.OnDataHeaders(c.s)
}

// received is the size of the message so far: the bytes gathered in Message.Data,
// or those streamed to a MessageStreamer (t may be nil: nothing streamed).
func (c *conn) received(t *transfer) int64 {
	if t != nil && t.stream != nil {
		return int64(t.stream.size)
	}
	return int64(len(c.s.Message.Data))
}

// overMaxMessage reports whether n more bytes take the message past
// MaxMessageSize. If they do, the limit is counted and the message dropped: the
// data gathered so far is released, and a stream hook's reader fails with an error
// wrapping SMTPError552.
func (c *conn) overMaxMessage(t *transfer, n int64) bool {
	max := c.cfg.maxMessage
	if max <= 0 || c.received(t)+n <= int64(max) {
		return false
	}
	c.srv.stats.limit(&c.srv.stats.MaxMessageSize)
	if t != nil && t.stream != nil {
		t.stream.close(fmt.Errorf("message over %d bytes: %w", max, SMTPError552))
	}
	c.releaseBuffered()
	return true
}

// startData runs OnDataStart at the first piece of data (or the end of an empty
// message) and opens the stream for a MessageStreamer.
func (c *conn) startData(t *transfer) error {
	t.started = true
	if err := c.h.OnDataStart(c.s); err != nil {
		return err
	}
	if ms, ok := c.h.(MessageStreamer); ok {
		t.stream = c.openStream(ms)
	}
	return nil
}

// finish answers the end of the message: the error kept, the CRLFStrict refusal, or
// the outcome of OnMessage.
func (c *conn) finish(t *transfer) error {
	c.dataStart = time.Time{}
	if !t.started && t.failed == nil {
		t.failed = c.startData(t) // an empty message: the end is its first line
	}
	if t.header.finish() && t.stream == nil { // a message that is a header section alone
		c.s.Envelope.TLSRequiredNo = t.header.tlsRequiredNo
	}
	failed := t.failed
	if failed == nil {
		failed = c.strictRefusal(t)
	}
	if failed == nil {
		failed = c.deliver(t)
	}
	t.abandonStream() // a stream still open after a refusal: closed, its hook waited for
	if failed != nil {
		c.srv.stats.MessagesRefused.Add(1)
		if c.cfg.lmtp && !c.fatalErr(failed) {
			c.replyEachRecipient(failed) // LMTP: one reply per recipient, the same for each
			return nil
		}
	}
	return failed
}

// strictRefusal is the CRLFStrict refusal owed to a message with a bare CR or LF
// (nil when none is owed): logged, and a stream hook's reader fails with it.
// BINARYMIME data has no line rules.
func (c *conn) strictRefusal(t *transfer) error {
	if !t.bare || c.cfg.crlfMode != CRLFStrict || t.binary {
		return nil
	}
	c.log().Info("message with bare CR or LF refused (CRLFStrict)")
	if t.stream != nil {
		t.stream.close(fmt.Errorf("bare CR or LF in the message: %w", errCRLF))
	}
	return errCRLF
}

// storeLine appends the piece (feed checked MaxMessageSize) within MaxBufferedData,
// and runs the receiving hook after a complete line.
func (c *conn) storeLine(d dataLine) error {
	need := len(c.s.Message.Data) + len(d.text) + len(d.end) // within MaxMessageSize: feed checked
	if need > cap(c.s.Message.Data) {
		grown := c.grownCap(need)
		old := cap(c.s.Message.Data)
		// While the data is copied both buffers exist: both count against the budget.
		if !c.reserveBuffered(grown + old) {
			c.srv.stats.limit(&c.srv.stats.MaxBufferedData)
			c.log().Warn("MaxBufferedData reached; discarding the message", "limit", c.cfg.maxBuffered)
			c.releaseBuffered()
			return errBufferedData
		}
		c.s.Message.Data = append(make([]byte, 0, grown), c.s.Message.Data...)
		c.srv.buffered.release(int64(old)) // the old buffer is garbage now; the collector takes it
		c.reserved -= old
	}
	c.s.Message.Data = append(append(c.s.Message.Data, d.text...), d.end...)
	if c.cfg.crlfMode == CRLFLeave && len(d.end) > 0 {
		c.s.Message.CRLF = lineEndString(d.end)
	}
	if !d.complete {
		return nil
	}
	return c.h.OnDataReceiving(c.s)
}

// grownCap is the capacity Message.Data grows to, to hold need bytes. It doubles
// while under 1 MiB (append alone grows by about a quarter from small sizes on,
// copying a big message many times), then grows by a quarter, so that the buffer —
// and what it takes of MaxBufferedData — follows the bytes received: at most twice
// them under 1 MiB, a quarter more above. A size the client declared (MAIL FROM
// SIZE=) is a claim: it may cap the growth (a buffer never grows past it while the
// data fits), it never sizes the buffer ahead of the data. Nor does it grow past
// MaxMessageSize, the most it can ever have to hold.
func (c *conn) grownCap(need int) int {
	cur := cap(c.s.Message.Data)
	grow := cur
	if grow >= 1<<20 {
		grow /= 4
	}
	next := max(cur+grow, need, 4096)
	if declared := c.s.Envelope.Size; declared >= need {
		next = min(next, declared)
	}
	if m := c.cfg.maxMessage; m > 0 {
		next = min(next, m) // need <= m: feed refused the line otherwise
	}
	return next
}

// fatal returns err when it must be answered at once (a 421 closes the
// connection), else nil.
func (c *conn) fatal(err error) error {
	if c.fatalErr(err) {
		return err
	}
	return nil
}

func (c *conn) fatalErr(err error) bool {
	if err == nil {
		return false
	}
	se, _ := asSMTPError(err)
	return se.Code == 421
}

// deliver hands the complete message to its hook — OnMessage, or the end of the
// stream for OnMessageStream — and answers it (LMTP: one reply per recipient).
func (c *conn) deliver(t *transfer) error {
	if c.aborted() {
		return SMTPError421 // Close has answered the client: nothing delivered now
	}
	var err error
	if t.stream != nil {
		err = t.stream.close(nil)
		c.s.Message.DeliveredAt, c.s.Message.Bytesize = time.Now().UTC(), t.stream.size
		c.s.Envelope.TLSRequiredNo = t.header.tlsRequiredNo // the hook has returned: no race
	} else {
		c.s.Message.DeliveredAt, c.s.Message.Bytesize = time.Now().UTC(), len(c.s.Message.Data)
		err = c.h.OnMessage(c.s)
	}
	if c.cfg.lmtp && (err == nil || successReply(err) != nil) {
		c.replyPerRecipient()
		return nil
	}
	if err := c.succeed(err, replyDelivered); err != nil {
		return err
	}
	c.accepted(c.s.Message.Bytesize, len(c.s.Envelope.To))
	return nil
}
