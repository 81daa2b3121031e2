package milter

import (
	"errors"
	"io"
	"sync"

	"github.com/midismtp/smtpd"
)

// This file is the message on the streaming path (h is a MessageStreamer): the
// milters get it as it arrives; it is spooled meanwhile (memory, then an unlinked
// temporary file), since milters answer at its end and may change it; h's
// OnMessageStream then reads it, as changed, from the spool.

var readBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// errSpool answers a message the spool could not keep.
var errSpool = &smtpd.SMTPError{Code: 451, EnhancedCode: "4.3.0", Message: "Local error in processing, try again later"}

// OnDataStart runs h's; on the streaming path the content starts with the stream.
func (w *streamWrapper) OnDataStart(s *smtpd.Session) error {
	if err := w.h.OnDataStart(s); err != nil {
		return err
	}
	return w.locked(s, nil, func(ss *msession) error { ss.discarded = false; return nil })
}

// OnMessageStream gives the milters the message as it arrives while it is
// spooled; if they pass it, h's OnMessageStream reads it as they changed it, with
// their envelope changes and Quarantined telling a quarantine. A discarded
// message gets 250 without h.
func (w *streamWrapper) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	ms := w.h.(smtpd.MessageStreamer)
	ss := w.get(s)
	if ss == nil {
		return errNoSession
	}
	sp := &spool{dir: w.cfg.TempDir}
	defer sp.Close()
	ss.mu.Lock()
	f, discard := ss.startStream(sp), ss.txn.discard
	ss.mu.Unlock()
	if f == nil && !discard { // no milter takes the content
		return w.deliverStream(s, ss, ms, r, result{})
	}
	if f != nil {
		if err := ss.spoolStream(f, sp, r); errors.Is(err, errDiscarded) {
			return nil
		} else if err != nil {
			return err
		}
	}
	ss.mu.Lock()
	if f != nil && ss.txn.content != f {
		ss.mu.Unlock()
		return errNoSession // the transaction was reset meanwhile
	}
	res, deliver := ss.endMessage(func() error { return nil })
	ss.mu.Unlock()
	if !deliver {
		return replyErr(res.reply) // nil for a discard: 250
	}
	return w.deliverStream(s, ss, ms, res.msg.reader(), res)
}

// startStream starts the content of a streamed message (nil when no milter takes
// it, or it is discarded).
func (ss *msession) startStream(sp *spool) *feeder {
	if ss.txn.discard || ss.txn.dataReply != nil {
		return nil
	}
	f := newFeeder(ss, sp, 0)
	if len(f.conns) == 0 {
		return nil
	}
	ss.txn.content = f
	return f
}

// spoolStream reads the message into the spool and gives it to the live
// milters as it arrives. It returns the answer to the message when the message
// ends here: a milter's refusal, the stream's failure, a spool that fails.
func (ss *msession) spoolStream(f *feeder, sp *spool, r io.Reader) error {
	bp := readBuffers.Get().(*[]byte)
	defer readBuffers.Put(bp)
	for {
		n, err := r.Read(*bp)
		if n > 0 {
			if rerr := ss.spoolChunk(f, sp, (*bp)[:n]); rerr != nil {
				return rerr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil { // the client left, or the message broke a limit: the server's reply wins
			ss.mu.Lock()
			if ss.txn.content == f {
				ss.endTxn()
			}
			ss.mu.Unlock()
			return err
		}
	}
}

// spoolChunk keeps and feeds one piece of the stream.
func (ss *msession) spoolChunk(f *feeder, sp *spool, p []byte) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.txn.content != f {
		return errNoSession // reset meanwhile
	}
	if _, err := sp.Write(p); err != nil {
		ss.log.Error("milter: cannot spool the message", "err", err)
		ss.endTxn()
		return errSpool
	}
	f.feed(p)
	switch {
	case !f.done:
		return nil
	case f.verdict.reply != nil:
		ss.endTxn()
		return f.verdict.reply
	}
	// discarded: the rest is read and dropped by the server, the answer is 250
	ss.discarded = true
	ss.endTxn()
	return errDiscarded
}

// errDiscarded ends a stream whose message a milter discarded.
var errDiscarded = errors.New("discarded")

// deliverStream hands the message to h's OnMessageStream.
func (w *streamWrapper) deliverStream(s *smtpd.Session, ss *msession, ms smtpd.MessageStreamer, r io.Reader, res result) error {
	restore := ss.delivering(s, res)
	err := ms.OnMessageStream(s, r)
	restore()
	ss.mu.Lock()
	ss.endTxn()
	ss.mu.Unlock()
	return err
}
