package smtpd

// This file is LMTP's delivery (RFC 2033 4.2): after the message, one reply per
// accepted recipient, in RCPT order — never more, never fewer.

// replyPerRecipient answers each recipient of a delivered message (LMTP).
func (c *conn) replyPerRecipient() {
	rh, _ := c.h.(RecipientHandler)
	delivered := 0
	closing := false
	for _, rcpt := range c.s.Envelope.To {
		var err error
		if rh != nil {
			err = rh.OnMessageRecipient(c.s, rcpt)
		}
		if ok := successReply(err); err == nil || ok != nil {
			delivered++
			if ok != nil {
				c.send(ok)
			} else {
				c.writeReply(250, c.enhancedCode(replyDelivered), "OK <"+rcpt+"> delivered")
			}
			continue
		}
		closing = c.refuse(err, "rcpt", excerpt(rcpt)) || closing
	}
	if delivered > 0 {
		c.accepted(c.s.Message.Bytesize, delivered)
	}
	c.closeAfterReplies(closing)
}

// replyEachRecipient answers every recipient with err: the message failed as a
// whole (LMTP).
func (c *conn) replyEachRecipient(err error) {
	closing := false
	for _, rcpt := range c.s.Envelope.To {
		closing = c.refuse(err, "rcpt", excerpt(rcpt)) || closing
	}
	c.closeAfterReplies(closing)
}

// closeAfterReplies ends the session once every recipient has its reply, when one
// of them was a 421.
func (c *conn) closeAfterReplies(closing bool) {
	if closing && c.enter(connClosing) {
		c.flush()
	}
}
