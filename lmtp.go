package smtpd

// This file is LMTP's delivery (RFC 2033 4.2): after the message, one reply per
// accepted recipient, in RCPT order — never more, never fewer.

// RecipientHandler is an optional interface of a Handler, as http.Flusher is of an
// http.ResponseWriter: in LMTP mode, after OnMessage returned nil, the server calls
// OnMessageRecipient once per accepted recipient, in RCPT order, and answers that
// recipient with its result (nil: "250 OK <rcpt>"; an SMTPError: its reply; any other
// error: 451). A 421 among them is sent in its place and closes the connection once
// every recipient has its reply. Without it every recipient gets 250.
type RecipientHandler interface {
	OnMessageRecipient(s *Session, rcpt string) error
}

// replyPerRecipient answers each recipient of a delivered message (LMTP).
func (s *Session) replyPerRecipient() {
	rh, _ := s.h.(RecipientHandler)
	delivered := 0
	closing := false
	for _, rcpt := range s.Envelope.To {
		var err error
		if rh != nil {
			err = rh.OnMessageRecipient(s, rcpt)
		}
		if ok := successReply(err); err == nil || ok != nil {
			delivered++
			if ok != nil {
				s.send(ok)
			} else {
				s.writeReply(250, s.enhancedCode(replyDelivered), "OK <"+rcpt+"> delivered")
			}
			continue
		}
		closing = s.sendRecipientError(rcpt, err) || closing
	}
	if delivered > 0 {
		s.accepted(s.Message.Bytesize, delivered)
	}
	s.closeAfterReplies(closing)
}

// replyEachRecipient answers every recipient with err: the message failed as a
// whole (LMTP).
func (s *Session) replyEachRecipient(err error) {
	closing := false
	for _, rcpt := range s.Envelope.To {
		closing = s.sendRecipientError(rcpt, err) || closing
	}
	s.closeAfterReplies(closing)
}

// closeAfterReplies ends the session once every recipient has its reply, when one
// of them was a 421.
func (s *Session) closeAfterReplies(closing bool) {
	if closing {
		s.quit, s.final = true, true
		s.flush()
	}
}

// sendRecipientError sends one recipient's error reply, counted and logged, without
// the MaxErrors check (LMTP owes every recipient its reply); it reports a 421.
func (s *Session) sendRecipientError(rcpt string, err error) bool {
	se, ok := asSMTPError(err)
	s.Exceptions++
	if ok {
		s.log().Info("recipient refused", "rcpt", excerpt(rcpt), "reply", se.Code, "err", err)
	} else {
		s.log().Error("hook failed for a recipient; replied 451", "rcpt", excerpt(rcpt), "err", err)
	}
	s.send(se)
	return se.Code == 421
}
