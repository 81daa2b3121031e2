package smtpd

import (
	"bytes"
	"strconv"
)

// This file is CHUNKING (RFC 3030): BDAT <n> [LAST]. Exactly n octets follow the
// command; they are message data and nothing else — never parsed as commands — in
// every case: CHUNKING off, the BDAT refused, a failed transfer. Only a size that
// does not parse cannot be resynchronised: that closes the connection.

// isBdat reports whether a command line is a BDAT command: its octets follow it at
// once, so the pipelining and line-end checks of other commands do not apply
// before them.
func isBdat(line []byte) bool {
	return len(line) >= 4 && equalFoldASCII(line[:4], "BDAT") && (len(line) == 4 || line[4] == ' ')
}

// cmdBdat receives one chunk. Its octets are read whatever the outcome. A refused
// chunk, or one that breaks a rule (size, budget, a hook error, CRLFStrict), is
// answered at once and ends the transaction; later chunks get 503.
func (s *Session) cmdBdat(args string) error {
	size, last, ok := parseBdat(args)
	if !ok {
		s.log().Info("BDAT size does not parse; closing", "args", excerpt(args))
		s.closeWith(errBdatSyntax)
		return nil
	}
	refuse := func(err error) error {
		if !s.readOctets(size, nil) {
			return nil
		}
		return err
	}
	switch {
	case s.lineRefused != nil:
		return refuse(s.lineRefused) // the command line itself was refused (CRLFStrict)
	case !s.cfg.chunking:
		return refuse(errNoChunking)
	case s.cfg.tlsMode == TLSRequired && !s.IsEncrypted():
		return refuse(errTLSRequired)
	case s.state != stateRcpt:
		return refuse(SMTPError503)
	case s.needsAuth():
		return refuse(SMTPError530)
	case s.overMaxMessage(s.bdat, size):
		// The data so far went (a stream hook learned why, and was waited for); the
		// envelope is still needed below.
		s.srv.stats.MessagesRefused.Add(1)
		s.bdat = nil
		defer s.resetTransaction()
		if last && s.cfg.lmtp {
			// LMTP (RFC 2033 4.3): BDAT LAST is answered once per accepted recipient,
			// also when the message fails as a whole.
			if s.readOctets(size, nil) {
				s.replyEachRecipient(SMTPError552)
			}
			return nil
		}
		return refuse(SMTPError552)
	}
	if s.bdat == nil {
		if err := s.dataCommand(); err != nil {
			return refuse(err)
		}
		s.bdat = s.startTransfer()
	}
	t := s.bdat
	if !s.readOctets(size, t) {
		return nil
	}
	if t.failed != nil && s.fatalErr(t.failed) {
		return t.failed
	}
	if !last {
		// A chunk is answered on its own: 250, or at once the rule it broke —
		// CRLFStrict included, at the chunk where the bare CR or LF showed — with one
		// reply, in LMTP too (RFC 2033 4.3: only BDAT LAST gets one per recipient).
		failed := t.failed
		if failed == nil {
			failed = s.strictRefusal(t)
		}
		if failed == nil {
			s.writeReply(250, s.enhancedCode(replyOK), strconv.FormatInt(size, 10)+" octets received")
			return nil
		}
		s.srv.stats.MessagesRefused.Add(1)
		s.resetTransaction()
		return failed
	}
	s.bdat = nil
	if d, ok := t.chunkEnd(); ok { // a CR at the very end ends no line
		if err := s.feed(t, d); err != nil {
			return err
		}
	}
	err := s.finish(t)
	s.resetTransaction()
	return err
}

// readOctets reads exactly n octets of BDAT data, in pieces split after each LF and
// bounded by the read buffer, and feeds them to t (nil: discards them). False when
// the connection failed (the session then ends).
func (s *Session) readOctets(n int64, t *transfer) bool {
	br := s.r.buf()
	for n > 0 {
		if br.Buffered() == 0 {
			if s.flush() != nil {
				s.quit = true
				return false
			}
			s.setReadDeadline()
			if _, err := br.Peek(1); err != nil {
				s.readFailed(err)
				s.quit = true
				return false
			}
		}
		buf, _ := br.Peek(int(min(n, int64(br.Buffered()))))
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[:i+1]
		}
		if t != nil {
			s.dataBytes += len(buf)
			if err := s.feed(t, t.chunkPiece(buf, s.cfg.crlfMode)); err != nil {
				t.failed = err
				t = nil // a 421: the rest is still read, so that the reply is in sync
			}
		}
		br.Discard(len(buf))
		n -= int64(len(buf))
	}
	return true
}

// chunkPiece prepares a piece of BDAT data (a line, or a part of one cut by the
// chunk or the buffer; an LF only at its end, never empty) for storing under mode,
// keeping what a line split across pieces needs: its length so far and whether the
// data so far ends with CR. Such a CR is held back, not stored with its piece: only
// the next byte tells whether it is bare or the CR of a CRLF, and a CRLF cut between
// pieces must reach the hooks as one line end — OnDataHeaders appends before the
// empty line, not between its CR and LF. chunkEnd gives a CR still held at the end.
// BINARYMIME data is stored as sent.
func (t *transfer) chunkPiece(p []byte, mode CRLFMode) dataLine {
	d := dataLine{text: p}
	if t.binary {
		return d
	}
	prevCR := t.lastCR
	complete := p[len(p)-1] == '\n'
	body := p
	if complete {
		body = p[:len(p)-1]
	}
	t.lastCR = !complete && len(body) > 0 && body[len(body)-1] == '\r'
	if t.lastCR {
		body = body[:len(body)-1] // held back for the next piece
	}
	// The CR held before this piece was bare unless this piece is its LF.
	heldBare := prevCR && !(complete && len(body) == 0)
	crBefore := complete && (len(body) > 0 && body[len(body)-1] == '\r' || len(body) == 0 && prevCR)
	text := body
	if crBefore && len(body) > 0 {
		text = body[:len(body)-1]
	}
	// Any CR left in text is bare: the one before the LF was cut off above.
	d.bare = heldBare || bytes.IndexByte(text, '\r') >= 0
	if heldBare {
		text = append([]byte{'\r'}, text...) // rare: a bare CR at a piece boundary
	}
	d.text = text
	if !complete {
		t.lineLen += len(text)
		return d
	}
	d.complete, d.isEmpty = true, t.lineLen+len(text) == 0
	t.lineLen = 0
	switch {
	case crBefore:
		d.end = crlf
	default:
		d.bare = true
		d.end = p[len(p)-1:]
		if mode == CRLFEnsure {
			d.end = crlf
		}
	}
	return d
}

// chunkEnd returns, at the end of the data, the CR chunkPiece still holds: it ends
// no line, so it is bare, and stored as sent.
func (t *transfer) chunkEnd() (dataLine, bool) {
	if !t.lastCR {
		return dataLine{}, false
	}
	t.lastCR = false
	return dataLine{text: []byte{'\r'}, bare: true}, true
}
