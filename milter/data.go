package milter

import (
	"io"

	"github.com/midismtp/smtpd"
)

// This file is the message on the buffered path: the server gathers it in
// Message.Data (within its MaxBufferedData accounting); the milters get its
// header fields and body chunks from there as lines arrive (OnDataReceiving), and
// their verdict and changes at the end (OnMessage).

// dataSource reads the session's Message.Data as it is at each read: the server
// may move it to a bigger buffer between two lines.
type dataSource struct{ s *smtpd.Session }

// ReadAt reads Message.Data from off.
func (d dataSource) ReadAt(p []byte, off int64) (int, error) {
	data := d.s.Message.Data
	if off >= int64(len(data)) {
		return 0, io.EOF
	}
	n := copy(p, data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// OnDataStart runs h's (which may add its own header fields, a Received: for
// one: as Postfix's own, the milters do not see them), then starts the content.
func (w *wrapper) OnDataStart(s *smtpd.Session) error {
	if err := w.h.OnDataStart(s); err != nil {
		return err
	}
	return w.locked(s, errNoSession, func(ss *msession) error {
		ss.discarded = false
		if ss.txn.discard || ss.txn.dataReply != nil {
			return nil
		}
		f := newFeeder(ss, dataSource{s}, int64(len(s.Message.Data)))
		if len(f.conns) > 0 {
			ss.txn.content = f
			f.feed(s.Message.Data)
		}
		return nil
	})
}

// OnDataReceiving runs h's, then gives the milters the lines received since the
// last call. A milter's refusal answers the message at once (the server reads and
// drops the rest).
func (w *wrapper) OnDataReceiving(s *smtpd.Session) error {
	if err := w.h.OnDataReceiving(s); err != nil {
		return err
	}
	return w.locked(s, errNoSession, func(ss *msession) error { return ss.feedData(s) })
}

// feedData gives the content milters what Message.Data holds past what they had.
func (ss *msession) feedData(s *smtpd.Session) error {
	f := ss.txn.content
	if f == nil {
		return nil
	}
	data := s.Message.Data
	if int64(len(data)) < f.off { // the server dropped the message (a limit): it refuses it itself
		f.stop(outcome{reply: replyTempFail})
		return nil
	}
	f.feed(data[f.off:])
	if f.done && f.verdict.reply != nil {
		return f.verdict.reply
	}
	return nil
}

// OnDataHeaders runs h's: the milters get the header fields from the lines
// (with any h adds here).
func (w *wrapper) OnDataHeaders(s *smtpd.Session) error { return w.h.OnDataHeaders(s) }

// OnMessage ends the message for the milters; if they pass it, h's OnMessage
// gets it as they changed it: Message.Data (Bytesize with it) and Envelope,
// Quarantined telling a quarantine. A discarded message gets 250 without h.
func (w *wrapper) OnMessage(s *smtpd.Session) error {
	ss := w.get(s)
	if ss == nil {
		return errNoSession
	}
	ss.mu.Lock()
	res, deliver := ss.endMessage(func() error { return ss.feedData(s) })
	if deliver && res.msg != nil && res.msg.changed() {
		rebuild(s, res.msg)
	}
	ss.mu.Unlock()
	if !deliver {
		return replyErr(res.reply) // nil for a discard: 250
	}
	restore := ss.delivering(s, res)
	err := w.h.OnMessage(s)
	restore()
	ss.mu.Lock()
	ss.endTxn()
	ss.mu.Unlock()
	return err
}

// endMessage ends the message for the milters (feed gives them its last bytes).
// It reports whether h gets the message; when it does not, the transaction is
// ended and res.reply is the answer (nil: discarded, 250).
func (ss *msession) endMessage(feed func() error) (result, bool) {
	f := ss.txn.content
	var res result
	switch {
	case ss.txn.discard:
		res.discard = true
	case f != nil:
		if err := feed(); err != nil {
			res.reply = asReply(err)
			break
		}
		res = f.finish()
	default:
		return res, true // no milter takes the content
	}
	if res.reply != nil || res.discard {
		ss.discarded = res.discard && res.reply == nil
		if ss.discarded {
			ss.log.Info("milter discarded the message")
		}
		ss.endTxn()
		return res, false
	}
	return res, true
}

// asReply is the SMTPError a feed returned.
func asReply(err error) *smtpd.SMTPError {
	if se, ok := err.(*smtpd.SMTPError); ok {
		return se
	}
	return replyTempFail
}

// delivering sets what h sees while it takes the message — the milters'
// envelope changes, their quarantine — and returns what puts it back.
func (ss *msession) delivering(s *smtpd.Session, res result) (restore func()) {
	if res.quarantined {
		quarantines.Store(s, res.quarantine)
		ss.log.Info("milter quarantined the message", "reason", res.quarantine)
	}
	if len(res.env) == 0 {
		return func() {}
	}
	return applyEnvelope(&s.Envelope, res.env)
}

// rebuild puts the changed message in Message.Data: in its own buffer when it
// fits (that buffer is within the server's MaxBufferedData accounting), else in
// a new one.
func rebuild(s *smtpd.Session, m *message) {
	hdr := m.header()
	data := s.Message.Data
	var body []byte
	if m.replaced {
		body = m.body
	} else {
		body = data[m.bodyOff:m.size]
	}
	total := len(hdr) + len(body)
	if total > cap(data) {
		data = make([]byte, 0, total)
	}
	data = data[:total]
	copy(data[len(hdr):], body) // copy moves overlapping bytes correctly
	copy(data, hdr)
	s.Message.Data, s.Message.Bytesize = data, total
}
