package smtpd

import (
	"time"
)

// receiveData reads the message after 354 up to <CRLF>.<CRLF>, runs the data hooks
// and answers the final dot. The transaction is reset afterwards, whatever the outcome.
//
// A hook error, a message over MaxMessageSize or (CRLFStrict) a bare line end does
// not stop the reading: the rest of the message is read and discarded, and the error
// answers the final dot; OnMessage is not called. Only a 421 is sent at once.
func (s *Session) receiveData() error {
	defer s.resetTransaction()
	s.dataStart, s.dataBytes = time.Now(), 0
	defer func() { s.dataStart = time.Time{} }()
	var (
		afterCRLF = true // the DATA command line counts as ended by CRLF
		started   bool
		bare      bool
		failed    error
	)
	for {
		line, err := s.readLine(s.cfg.bufferMax, false)
		if err != nil {
			s.readFailed(err)
			s.quit = true
			return nil
		}
		if dotLine(line, afterCRLF) {
			break
		}
		s.dataBytes += len(line)
		d := parseDataLine(line, s.cfg.crlfMode)
		afterCRLF = lineEndsCRLF(line)
		bare = bare || d.bare
		if failed != nil {
			continue
		}
		if !started {
			started = true
			failed = s.h.OnDataStart(s)
		}
		failed = s.storeLine(d, failed)
		if failed != nil && s.fatal(failed) {
			return failed
		}
	}
	if !started && failed == nil {
		failed = s.h.OnDataStart(s) // an empty message: the "." is its first line
	}
	switch {
	case bare && s.cfg.crlfMode == CRLFStrict:
		s.logger.Info("message with bare CR or LF refused (CRLFStrict)")
		failed = errCRLF
	case failed == nil:
		failed = s.deliver()
	}
	if failed != nil {
		s.srv.stats.MessagesRefused.Add(1)
	}
	return failed
}

// lineEndsCRLF reports whether the raw line ends with "\r\n".
func lineEndsCRLF(line []byte) bool {
	n := len(line)
	return n >= 2 && line[n-2] == '\r' && line[n-1] == '\n'
}

// storeLine runs the header hook, appends the line and runs the receiving hook.
func (s *Session) storeLine(d dataLine, failed error) error {
	if failed != nil {
		return failed
	}
	if d.isEmpty && !s.Message.Headers {
		s.Message.Headers = true
		if err := s.h.OnDataHeaders(s); err != nil {
			return err
		}
	}
	need := len(s.Message.Data) + len(d.text) + len(d.end)
	if max := s.cfg.maxMessage; max > 0 && need > max {
		s.srv.stats.limit(&s.srv.stats.MaxMessageSize)
		s.logger.Info("message over MaxMessageSize; discarding the rest", "limit", max)
		s.releaseBuffered()
		return SMTPError552
	}
	if need > cap(s.Message.Data) && !s.reserveBuffered(grownCap(cap(s.Message.Data), need)) {
		s.srv.stats.limit(&s.srv.stats.MaxBufferedData)
		s.logger.Warn("MaxBufferedData reached; discarding the message", "limit", s.cfg.maxBuffered)
		s.releaseBuffered()
		return errBufferedData
	}
	s.Message.Data = appendLine(s.Message.Data, d.text, d.end)
	if s.cfg.crlfMode == CRLFLeave {
		s.Message.CRLF = lineEndString(d.end)
	}
	return s.h.OnDataReceiving(s)
}

// appendLine appends text and end to data. Its capacity doubles while under 1 MiB
// (append alone grows by about a quarter from small sizes on, copying a big message
// many times), then grows by a quarter, so a large message holds at most a quarter
// more than its size.
func appendLine(data, text, end []byte) []byte {
	if need := len(data) + len(text) + len(end); need > cap(data) {
		grown := make([]byte, len(data), grownCap(cap(data), need))
		copy(grown, data)
		data = grown
	}
	data = append(data, text...)
	return append(data, end...)
}

// grownCap is the capacity appendLine grows a buffer of capacity c to, to hold need bytes.
func grownCap(c, need int) int {
	grow := c
	if grow >= 1<<20 {
		grow /= 4
	}
	return max(c+grow, need, 4096)
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

// fatal reports whether err must be answered at once (a 421 closes the connection).
func (s *Session) fatal(err error) bool {
	se, _ := asSMTPError(err)
	return se.Code == 421
}

// deliver hands the complete message to OnMessage and answers it.
func (s *Session) deliver() error {
	if s.aborted.Load() {
		return SMTPError421 // Close has answered the client: no OnMessage now
	}
	s.Message.DeliveredAt = time.Now().UTC()
	s.Message.Bytesize = len(s.Message.Data)
	if err := s.succeed(s.h.OnMessage(s), replyDelivered); err != nil {
		return err
	}
	s.accepted(s.Message.Bytesize)
	return nil
}
