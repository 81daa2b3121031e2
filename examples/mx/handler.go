package main

import (
	"io"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/mailauth"
	"github.com/midismtp/smtpd/milter"
)

// mailbox is the innermost Handler: it stores each message the milters passed,
// our Authentication-Results field first, or refuses it when DMARC asks for it.
// It is a MessageStreamer, so milter.Wrap gives it the message as a stream too
// and no message is ever whole in memory.
type mailbox struct {
	smtpd.BaseHandler
	name    string // -authserv-id: the host name in the banner and the EHLO reply
	store   *store
	enforce bool // -dmarc-enforce
}

// OnConnect names the server as Postfix's banner does ("220 NAME ESMTP").
func (m *mailbox) OnConnect(s *smtpd.Session) error {
	s.LocalResponse = m.name + " ESMTP"
	s.HeloResponse = m.name
	return nil
}

var _ smtpd.MessageStreamer = (*mailbox)(nil)

// errNoVerdict answers a message whose verdict is missing (authStage did not see
// its end): never stored without one.
var errNoVerdict = &smtpd.SMTPError{Code: 451, EnhancedCode: "4.3.0", Message: "Local error in processing, try again later"}

// OnMessageStream stores the message r gives (as the milters left it). When the
// verdict is not ready yet, r is the live stream: it is spooled first (in memory
// up to 64 KiB, then in a hidden file of the folder), since the field that goes
// first depends on the whole message. Then DMARC decides: a failure under
// p=reject is refused 550 5.7.1 (-dmarc-enforce) or quarantined; p=quarantine
// and a milter's quarantine are quarantined.
func (m *mailbox) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	id := s.Message.ID
	if err := m.store.checkFree(id); err != nil {
		return err
	}
	var msg io.WriterTo = readerTo{r}
	if verdictOf(s) == nil {
		sp, err := m.store.spool(r)
		if err != nil {
			return err
		}
		defer sp.release()
		msg = sp
	}
	v := verdictOf(s)
	if v == nil {
		s.Logger().Error("mx: no verdict at the end of the message; refused for a retry", "id", id)
		return errNoVerdict
	}
	reasons, err := m.decide(s, v)
	if err != nil {
		s.Logger().Info("message refused by DMARC", "id", id, "from_domain", v.DMARC.FromDomain)
		return err
	}
	if err := m.store.save(id, s, v.Field(), msg, reasons); err != nil {
		return err
	}
	s.Logger().Info("message stored", "id", id, "spf", v.SPF.Result, "dmarc", v.DMARC.Result,
		"quarantine", len(reasons) > 0)
	return nil
}

// decide returns the reasons to quarantine the message, or the reply that
// refuses it.
func (m *mailbox) decide(s *smtpd.Session, v *mailauth.Verdict) ([]string, error) {
	var reasons []string
	if err := v.Reject(); err != nil {
		if m.enforce {
			return nil, err
		}
		reasons = append(reasons, "dmarc: p=reject of "+v.DMARC.FromDomain+", not enforced")
	}
	if v.Quarantine() {
		reasons = append(reasons, "dmarc: p=quarantine of "+v.DMARC.FromDomain)
	}
	if why, ok := milter.Quarantined(s); ok {
		reasons = append(reasons, "milter: "+why)
	}
	return reasons, nil
}

// readerTo writes what a reader gives.
type readerTo struct{ r io.Reader }

func (rt readerTo) WriteTo(w io.Writer) (int64, error) { return io.Copy(w, rt.r) }
