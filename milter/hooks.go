package milter

import (
	"errors"
	"strings"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
)

// This file is the wrapper's hooks up to DATA: h runs first (its refusals are the
// server's own, as Postfix's restrictions come before its milters), then the
// milters; a milter's refusal answers the command.

// errNoSession answers what must not pass when a session has no milter state
// (its OnConnect did not run through the wrapper).
var errNoSession = replyTempFail

// OnConnect runs h's OnConnect, then connects to the milters and reports the
// connection. As Postfix: a 5xx answer (a milter's, or DefaultAction reject for a
// milter that is down) refuses the connection with 554, a 421 with 421; another
// 4xx answer lets the session start and answers MAIL FROM (and AUTH) later.
func (w *wrapper) OnConnect(s *smtpd.Session) error {
	if err := w.h.OnConnect(s); err != nil {
		return err
	}
	ss := &msession{w: w, log: w.logger(s)}
	w.sessions.Store(s, ss)
	ss.mu.Lock()
	o := ss.start(s)
	ss.mu.Unlock()
	return connectRefusal(o.reply, w.cfg.Hostname)
}

// connectRefusal is the banner that refuses a connection after the connect
// event's reply r, or nil when the session starts (Postfix's smtpd_proto).
func connectRefusal(r *smtpd.SMTPError, host string) error {
	switch {
	case r == nil:
		return nil
	case r.Code == 421:
		return &smtpd.SMTPError{Code: 421, EnhancedCode: "4.7.1", Message: host + " Service unavailable - try again later"}
	case r.Code >= 500:
		return &smtpd.SMTPError{Code: 554, EnhancedCode: "5.7.1", Message: host + " ESMTP not accepting connections"}
	}
	return nil
}

// OnDisconnect ends the milters' session (ABORT if a transaction is open, then
// QUIT), then runs h's.
func (w *wrapper) OnDisconnect(s *smtpd.Session) {
	if v, ok := w.sessions.LoadAndDelete(s); ok {
		ss := v.(*msession)
		ss.mu.Lock()
		ss.endTxn()
		ss.stop()
		ss.mu.Unlock()
	}
	quarantines.Delete(s)
	w.h.OnDisconnect(s)
}

// OnHelo runs h's, then reports HELO/EHLO (with the TLS macros). As Postfix, a
// milter's refusal does not refuse HELO (but for 421): it answers MAIL FROM.
// After XCLIENT the milters are connected anew for the client it names.
func (w *wrapper) OnHelo(s *smtpd.Session, helo string) error {
	if err := w.h.OnHelo(s, helo); err != nil {
		return err
	}
	return w.locked(s, nil, func(ss *msession) error {
		ss.endTxn()
		if ss.client != clientKey(s) { // XCLIENT: a new client, as Postfix a new milter session
			ss.stop()
			if o := ss.start(s); o.reply != nil && o.reply.Code == 421 {
				return o.reply
			}
		}
		ss.mac.helo(s)
		o := ss.each(stHelo, func(c *mconn) (*gomilter.Action, error) { return c.cs.Helo(helo) })
		if o.reply != nil && o.reply.Code == 421 {
			return o.reply
		}
		return nil
	})
}

// OnAuth answers AUTH with a milter's persisting refusal (Postfix's
// milter_other_event), else runs h's.
func (w *wrapper) OnAuth(s *smtpd.Session, authorizationID, authenticationID, password string) (string, error) {
	if err := w.locked(s, nil, func(ss *msession) error { return replyErr(ss.persisting()) }); err != nil {
		return "", err
	}
	return w.h.OnAuth(s, authorizationID, authenticationID, password)
}

// persisting is the first refusal that persists for the connection, if any.
func (ss *msession) persisting() *smtpd.SMTPError {
	for _, c := range ss.conns {
		if _, r := c.takes(stMail); r != nil {
			return r
		}
	}
	return nil
}

// refused reports whether a hook's error refuses (an SMTPError with a success
// code accepts with its own reply).
func refused(err error) bool {
	var se *smtpd.SMTPError
	return err != nil && !(errors.As(err, &se) && se != nil && se.Code >= 200 && se.Code < 400)
}

// esmtpArgs are a command's ESMTP parameters as go-milter sends them: one C
// string each, as Postfix does (go-milter writes a single string; the NUL
// bytes between them make them several).
func esmtpArgs(params []string) string {
	ok := params[:0:0]
	for _, p := range params {
		if !strings.ContainsRune(p, 0) {
			ok = append(ok, p)
		}
	}
	return strings.Join(ok, "\x00")
}

// OnMailFrom runs h's, then reports MAIL FROM with its ESMTP parameters.
func (w *wrapper) OnMailFrom(s *smtpd.Session, from string) (string, error) {
	ret, err := w.h.OnMailFrom(s, from)
	if refused(err) {
		return ret, err
	}
	if merr := w.locked(s, errNoSession, func(ss *msession) error { return ss.mail(s, from) }); merr != nil {
		return "", merr
	}
	return ret, err
}

// mail reports MAIL FROM.
func (ss *msession) mail(s *smtpd.Session, from string) error {
	ss.endTxn() // the last transaction, answered since
	ss.discarded = false
	quarantines.Delete(s)
	ss.txn.active = true
	ss.mac.mail(s, from)
	args := esmtpArgs(s.CommandParams())
	o := ss.each(stMail, func(c *mconn) (*gomilter.Action, error) { return c.cs.Mail(from, args) })
	if o.reply != nil {
		ss.endTxn() // Postfix's mail_reset: ABORT
		return o.reply
	}
	ss.txn.discard = o.discard
	return nil
}

// OnRcptTo runs h's, then reports RCPT TO with its ESMTP parameters. A recipient
// h refused goes to the milters that asked for refused recipients
// (SMFIP_RCPT_REJ), whose answer changes nothing. After a discard the milters
// hear nothing more of the transaction.
func (w *wrapper) OnRcptTo(s *smtpd.Session, to string) (string, error) {
	ret, err := w.h.OnRcptTo(s, to)
	if merr := w.locked(s, errNoSession, func(ss *msession) error { return ss.rcpt(s, to, err) }); merr != nil {
		return "", merr
	}
	return ret, err
}

// rcpt reports RCPT TO, or a recipient h refused (with herr).
func (ss *msession) rcpt(s *smtpd.Session, to string, herr error) error {
	args := esmtpArgs(s.CommandParams())
	if refused(herr) {
		ss.rejectedRcpt(to, args, herr)
		return nil
	}
	if ss.txn.discard {
		return nil
	}
	ss.mac.rcpt(to)
	o := ss.each(stRcpt, func(c *mconn) (*gomilter.Action, error) { return c.cs.Rcpt(to, args) })
	if o.reply != nil {
		return o.reply
	}
	ss.txn.discard = o.discard
	ss.mac.queued(s)
	return nil
}

// rejectedRcpt reports a recipient h refused to the milters that want those.
func (ss *msession) rejectedRcpt(to, args string, err error) {
	var se *smtpd.SMTPError
	if !errors.As(err, &se) || ss.txn.discard {
		se = smtpd.SMTPError451
	}
	for _, c := range ss.conns {
		if c.state != mOpen || !c.inTxn || !c.cs.ProtocolOption(gomilter.OptRcptRej) {
			continue
		}
		ss.mac.rejectedRcpt(se)
		ss.call(c, stRcpt, func() (*gomilter.Action, error) { return c.cs.Rcpt(to, args) })
	}
	ss.mac.rcpt("")
}

// OnDataCommand runs h's (when it has one), then reports DATA (or the first
// BDAT). A milter's refusal answers DATA, and any later DATA of the transaction.
func (w *wrapper) OnDataCommand(s *smtpd.Session) error {
	if dh, ok := w.h.(smtpd.DataCommandHandler); ok {
		if err := dh.OnDataCommand(s); err != nil {
			return err
		}
	}
	return w.locked(s, errNoSession, func(ss *msession) error {
		switch {
		case ss.txn.dataReply != nil:
			return ss.txn.dataReply
		case ss.txn.discard:
			return nil
		}
		o := ss.each(stData, func(c *mconn) (*gomilter.Action, error) { return c.cs.DataStart() })
		if o.reply != nil {
			ss.txn.dataReply = o.reply
			return o.reply
		}
		ss.txn.discard = o.discard
		return nil
	})
}

// OnReset sends ABORT to the milters (RSET, a new HELO, STARTTLS, XCLIENT, an
// abandoned BDAT transfer, the connection ending mid-transaction), then runs h's
// when it has one.
func (w *wrapper) OnReset(s *smtpd.Session) {
	w.locked(s, nil, func(ss *msession) error { ss.endTxn(); return nil })
	quarantines.Delete(s)
	if rh, ok := w.h.(smtpd.ResetHandler); ok {
		rh.OnReset(s)
	}
}

// OnUnknown runs h's; a command h does not know either goes to the milters, and
// as Postfix only a milter's 4xx answer replaces the server's own refusal.
func (w *wrapper) OnUnknown(s *smtpd.Session, line string) error {
	err := w.h.OnUnknown(s, line)
	if !refused(err) {
		return err
	}
	return w.locked(s, err, func(ss *msession) error {
		o := ss.each(stUnknown, func(c *mconn) (*gomilter.Action, error) { return c.cs.Unknown(line, nil) })
		if o.reply != nil && o.reply.Code/100 == 4 {
			return o.reply
		}
		return err
	})
}
