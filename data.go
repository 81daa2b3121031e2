package smtpd

import (
	"fmt"
	"runtime"
	"time"
)

// This file receives message data: DATA's dot-terminated lines here, BDAT's
// counted chunks in bdat.go, both through one transfer whose rules — the data hooks,
// MaxMessageSize, MaxBufferedData, CRLFStrict, the reply at the end — are written
// once, in feed, storeLine and finish.

// transfer is one message being received.
type transfer struct {
	started bool  // OnDataStart ran
	bare    bool  // a bare CR or LF was seen (refused at the end under CRLFStrict)
	failed  error // the first rule broken or hook error: the rest is discarded, this answers the end
	binary  bool  // BODY=BINARYMIME: stored as sent, no line-end rules
	lineLen int   // BDAT: bytes of the current, unfinished line
	lastCR  bool  // BDAT: the data so far ends with CR
	stream  *messageStream
}

// startTransfer begins a message: a fresh Message, the data-rate clock started.
func (s *Session) startTransfer() *transfer {
	now := time.Now()
	s.Message = Message{ID: s.Message.ID, CRLF: "\r\n", ReceivedAt: now.UTC()}
	s.dataStart, s.dataBytes = now, 0
	s.xfer = transfer{binary: s.Envelope.EncodingBody == "binarymime"}
	return &s.xfer
}

// receiveData reads the message after 354 up to <CRLF>.<CRLF>, runs the data hooks
// and answers the final dot. The transaction is reset afterwards, whatever the outcome.
//
// A hook error, a message over MaxMessageSize or MaxBufferedData, or (CRLFStrict) a
// bare line end does not stop the reading: the rest of the message is read and
// discarded, and the error answers the final dot; OnMessage is not called. Only a
// 421 is sent at once.
func (s *Session) receiveData() error {
	defer s.resetTransaction()
	t := s.startTransfer()
	afterCRLF := true // the DATA command line counts as ended by CRLF
	for {
		line, err := s.readLine(s.cfg.bufferMax, false)
		if err != nil {
			t.abandonStream()
			s.readFailed(err)
			s.quit = true
			return nil
		}
		if dotLine(line, afterCRLF) {
			break
		}
		s.dataBytes += len(line)
		afterCRLF = lineEndsCRLF(line)
		if err := s.feed(t, parseDataLine(line, s.cfg.crlfMode)); err != nil {
			t.abandonStream()
			return err
		}
	}
	return s.finish(t)
}

// feed passes one piece of message data (a line, or for BDAT a part of one) through
// the rules and stores it. It returns only an error that must be answered at once
// (a 421); other errors are kept in t.failed for the end.
func (s *Session) feed(t *transfer, d dataLine) error {
	t.bare = t.bare || d.bare
	if t.failed != nil {
		return nil
	}
	if !t.started {
		if t.failed = s.startData(t); t.failed != nil {
			return s.fatal(t.failed)
		}
	}
	if t.failed = s.headersEnd(t, d); t.failed != nil {
		return s.fatal(t.failed)
	}
	switch {
	case s.overMaxMessage(t, int64(len(d.text)+len(d.end))):
		s.log().Info("message over MaxMessageSize; discarding the rest", "limit", s.cfg.maxMessage)
		t.failed = SMTPError552
	case t.stream != nil:
		t.stream.write(d.text, d.end) // MaxBufferedData does not apply: nothing is buffered
	default:
		t.failed = s.storeLine(d)
	}
	return s.fatal(t.failed)
}

// headersEnd runs OnDataHeaders at the empty line that ends the header section,
// before that line is stored (buffered path only).
func (s *Session) headersEnd(t *transfer, d dataLine) error {
	if t.stream != nil || !d.isEmpty || s.Message.Headers {
		return nil
	}
	s.Message.Headers = true
	return s.h.OnDataHeaders(s)
}

// received is the size of the message so far: the bytes gathered in Message.Data,
// or those streamed to a MessageStreamer (t may be nil: nothing streamed).
func (s *Session) received(t *transfer) int64 {
	if t != nil && t.stream != nil {
		return int64(t.stream.size)
	}
	return int64(len(s.Message.Data))
}

// overMaxMessage reports whether n more bytes take the message past
// MaxMessageSize. If they do, the limit is counted and the message dropped: the
// data gathered so far is released, and a stream hook's reader fails with an error
// wrapping SMTPError552.
func (s *Session) overMaxMessage(t *transfer, n int64) bool {
	max := s.cfg.maxMessage
	if max <= 0 || s.received(t)+n <= int64(max) {
		return false
	}
	s.srv.stats.limit(&s.srv.stats.MaxMessageSize)
	if t != nil && t.stream != nil {
		t.stream.close(fmt.Errorf("message over %d bytes: %w", max, SMTPError552))
	}
	s.releaseBuffered()
	return true
}

// startData runs OnDataStart at the first piece of data (or the end of an empty
// message) and opens the stream for a MessageStreamer.
func (s *Session) startData(t *transfer) error {
	t.started = true
	if err := s.h.OnDataStart(s); err != nil {
		return err
	}
	if ms, ok := s.h.(MessageStreamer); ok {
		t.stream = s.openStream(ms)
	}
	return nil
}

// finish answers the end of the message: the error kept, the CRLFStrict refusal, or
// the outcome of OnMessage.
func (s *Session) finish(t *transfer) error {
	s.dataStart = time.Time{}
	if !t.started && t.failed == nil {
		t.failed = s.startData(t) // an empty message: the end is its first line
	}
	failed := t.failed
	if failed == nil {
		failed = s.strictRefusal(t)
	}
	if failed == nil {
		failed = s.deliver(t)
	}
	t.abandonStream() // a stream still open after a refusal: closed, its hook waited for
	if failed != nil {
		s.srv.stats.MessagesRefused.Add(1)
		if s.cfg.lmtp && !s.fatalErr(failed) {
			s.replyEachRecipient(failed) // LMTP: one reply per recipient, the same for each
			return nil
		}
	}
	return failed
}

// strictRefusal is the CRLFStrict refusal owed to a message with a bare CR or LF
// (nil when none is owed): logged, and a stream hook's reader fails with it.
// BINARYMIME data has no line rules.
func (s *Session) strictRefusal(t *transfer) error {
	if !t.bare || s.cfg.crlfMode != CRLFStrict || t.binary {
		return nil
	}
	s.log().Info("message with bare CR or LF refused (CRLFStrict)")
	if t.stream != nil {
		t.stream.close(fmt.Errorf("bare CR or LF in the message: %w", errCRLF))
	}
	return errCRLF
}

// lineEndsCRLF reports whether the raw line ends with "\r\n".
func lineEndsCRLF(line []byte) bool {
	n := len(line)
	return n >= 2 && line[n-2] == '\r' && line[n-1] == '\n'
}

// storeLine appends the piece (feed checked MaxMessageSize) within MaxBufferedData,
// and runs the receiving hook after a complete line.
func (s *Session) storeLine(d dataLine) error {
	need := len(s.Message.Data) + len(d.text) + len(d.end) // within MaxMessageSize: feed checked
	if need > cap(s.Message.Data) {
		grown := s.grownCap(need)
		old := cap(s.Message.Data)
		// While the data is copied both buffers exist: both count against the budget.
		if !s.reserveBuffered(grown + old) {
			s.srv.stats.limit(&s.srv.stats.MaxBufferedData)
			s.log().Warn("MaxBufferedData reached; discarding the message", "limit", s.cfg.maxBuffered)
			s.releaseBuffered()
			return errBufferedData
		}
		s.Message.Data = append(make([]byte, 0, grown), s.Message.Data...)
		s.srv.buffered.release(int64(old))
		s.reserved -= old
		if old >= collectAfterGrowth {
			runtime.GC() // the old buffer is garbage now: reuse its memory for the next growth
		}
	}
	s.Message.Data = append(append(s.Message.Data, d.text...), d.end...)
	if s.cfg.crlfMode == CRLFLeave && len(d.end) > 0 {
		s.Message.CRLF = lineEndString(d.end)
	}
	if !d.complete {
		return nil
	}
	return s.h.OnDataReceiving(s)
}

// collectAfterGrowth is the size from which a message buffer that was replaced by
// a bigger one is collected at once, so that a large message without SIZE= does
// not leave a trail of its earlier buffers (each a quarter smaller) in memory.
const collectAfterGrowth = 8 << 20

// grownCap is the capacity Message.Data grows to, to hold need bytes. It doubles
// while under 1 MiB (append alone grows by about a quarter from small sizes on,
// copying a big message many times), then grows by a quarter, so a large message
// holds at most a quarter more than its size. Past 1 MiB of real data, a size the
// client declared (MAIL FROM SIZE=) is believed, within MaxMessageSize: the buffer
// takes that size at once (and a little for line ends) and is never copied again.
// The buffer never grows past MaxMessageSize, the most it can ever have to hold.
func (s *Session) grownCap(need int) int {
	c := cap(s.Message.Data)
	grow := c
	if grow >= 1<<20 {
		grow /= 4
	}
	next := max(c+grow, need, 4096)
	if declared := s.Envelope.Size; need > 1<<20 && declared >= need {
		next = max(declared+declared/32+4096, need)
	}
	if m := s.cfg.maxMessage; m > 0 {
		next = min(next, m) // need <= m: feed refused the line otherwise
	}
	return next
}

// lineEndString returns end as one of the constant strings, without allocating.
func lineEndString(end []byte) string {
	switch len(end) {
	case 2:
		return "\r\n"
	case 1:
		return "\n"
	}
	return ""
}

// fatal returns err when it must be answered at once (a 421 closes the
// connection), else nil.
func (s *Session) fatal(err error) error {
	if s.fatalErr(err) {
		return err
	}
	return nil
}

func (s *Session) fatalErr(err error) bool {
	if err == nil {
		return false
	}
	se, _ := asSMTPError(err)
	return se.Code == 421
}

// deliver hands the complete message to its hook — OnMessage, or the end of the
// stream for OnMessageStream — and answers it (LMTP: one reply per recipient).
func (s *Session) deliver(t *transfer) error {
	if s.aborted.Load() {
		return SMTPError421 // Close has answered the client: nothing delivered now
	}
	var err error
	if t.stream != nil {
		err = t.stream.close(nil)
		s.Message.DeliveredAt, s.Message.Bytesize = time.Now().UTC(), t.stream.size
	} else {
		s.Message.DeliveredAt, s.Message.Bytesize = time.Now().UTC(), len(s.Message.Data)
		err = s.h.OnMessage(s)
	}
	if s.cfg.lmtp && (err == nil || successReply(err) != nil) {
		s.replyPerRecipient()
		return nil
	}
	if err := s.succeed(err, replyDelivered); err != nil {
		return err
	}
	s.accepted(s.Message.Bytesize, len(s.Envelope.To))
	return nil
}
