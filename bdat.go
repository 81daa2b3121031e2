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
func (c *conn) cmdBdat(args string) error {
	size, last, ok := parseBdat(args)
	if !ok {
		c.log().Info("BDAT size does not parse; closing", "args", excerpt(args))
		c.closeWith(errBdatSyntax)
		return nil
	}
	refuse := func(err error) error {
		if !c.readOctets(size, nil) {
			return nil
		}
		return err
	}
	switch {
	case c.lineRefused != nil:
		return refuse(c.lineRefused) // the command line itself was refused (CRLFStrict)
	case !c.cfg.chunking:
		return refuse(SMTPError502)
	case c.cfg.tlsMode == TLSRequired && !c.s.IsEncrypted():
		return refuse(errTLSRequired)
	case c.phase != phaseRcpt:
		return refuse(SMTPError503)
	case c.needsAuth():
		return refuse(SMTPError530)
	case c.overMaxMessage(c.bdat, size):
		// The data so far went (a stream hook learned why, and was waited for); the
		// envelope is still needed below.
		c.srv.stats.MessagesRefused.Add(1)
		c.bdat = nil
		defer c.resetTransaction()
		if last && c.cfg.lmtp {
			// LMTP (RFC 2033 4.3): BDAT LAST is answered once per accepted recipient,
			// also when the message fails as a whole.
			if c.readOctets(size, nil) {
				c.replyEachRecipient(SMTPError552)
			}
			return nil
		}
		return refuse(SMTPError552)
	}
	if c.bdat == nil {
		if err := c.dataCommand(); err != nil {
			return refuse(err)
		}
		c.bdat = c.startTransfer()
	}
	t := c.bdat
	if !c.readOctets(size, t) {
		return nil
	}
	if t.failed != nil && c.fatalErr(t.failed) {
		return t.failed
	}
	if !last {
		// A chunk is answered on its own: 250, or at once the rule it broke —
		// CRLFStrict included, at the chunk where the bare CR or LF showed — with one
		// reply, in LMTP too (RFC 2033 4.3: only BDAT LAST gets one per recipient).
		failed := t.failed
		if failed == nil {
			failed = c.strictRefusal(t)
		}
		if failed == nil {
			c.writeReply(250, c.enhancedCode(replyOK), strconv.FormatInt(size, 10)+" octets received")
			return nil
		}
		c.srv.stats.MessagesRefused.Add(1)
		c.resetTransaction()
		return failed
	}
	c.bdat = nil
	if d, ok := t.chunkEnd(); ok { // a CR at the very end ends no line
		if err := c.feed(t, d); err != nil {
			return err
		}
	}
	err := c.finish(t)
	c.resetTransaction()
	return err
}

// readOctets reads exactly n octets of BDAT data, in pieces split after each LF and
// bounded by the read buffer, and feeds them to t (nil: discards them). False when
// the connection failed (the session then ends).
func (c *conn) readOctets(n int64, t *transfer) bool {
	br := c.r.buf()
	for n > 0 {
		if br.Buffered() == 0 {
			if c.flush() != nil {
				c.enter(connClosing)
				return false
			}
			if _, err := c.armRead(false, 0); err != nil {
				c.readFailed(err)
				return false
			}
			if _, err := br.Peek(1); err != nil {
				c.readFailed(err)
				return false
			}
		}
		buf, _ := br.Peek(int(min(n, int64(br.Buffered()))))
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[:i+1]
		}
		if t != nil {
			c.dataBytes += len(buf)
			if err := c.feed(t, t.chunkPiece(buf, c.cfg.crlfMode)); err != nil {
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
