package smtpd

import "github.com/midismtp/smtpd/internal/address"

// This file is RCPT TO (RFC 5321 4.1.1.3) and its DSN parameters, NOTIFY and
// ORCPT (RFC 3461).

// cmdRcpt: RFC 5321 4.1.1.3, "This command is used to identify an individual
// recipient of the mail data; multiple recipients are specified by multiple uses
// of this command."
func (c *conn) cmdRcpt(args string) error {
	// The sequence (RFC 5321 4.1.4: after MAIL) and AuthRequired come first.
	if err := c.transactionAllowed(c.phase == phaseMail || c.phase == phaseRcpt); err != nil {
		return err
	}
	// Parse: the forward-path and its parameters.
	path, err := parsePathArg(args, "TO:", false)
	if err != nil {
		return err
	}
	dsn, err := c.rcptParams(path.Params)
	// Check.
	switch {
	case err != nil:
		return err
	case !path.IsASCII() && c.s.Envelope.EncodingUTF8 == "":
		return SMTPError553 // RFC 6531 3.4: a UTF-8 address needs SMTPUTF8
	case c.cfg.maxRecipients > 0 && len(c.s.Envelope.To) >= c.cfg.maxRecipients:
		return c.tooManyRecipients() // RFC 5321 4.5.3.1.10: 452, the client sends the rest later
	}
	// Hook.
	c.params = rawParams(path.Params)
	to, err := c.h.OnRcptTo(c.s, path.Mailbox)
	params := c.params
	c.params = nil
	if successReply(err) == nil && err != nil {
		return err
	}
	// Reply.
	env := &c.s.Envelope
	env.To = append(env.To, orString(to, path.Mailbox))
	env.ToParams = append(env.ToParams, params)
	if c.cfg.dsn {
		env.DSNRecipients = append(env.DSNRecipients, dsn)
	}
	c.phase = phaseRcpt
	return c.succeed(err, replyRcptOK)
}

// tooManyRecipients refuses a recipient past MaxRecipients with 452. As Postfix's
// smtpd_recipient_overshoot_limit, the refusals count as errors (MaxErrors) only
// past a second MaxRecipients of them in the transaction: a client that sends many
// recipients at once is told to send the rest later, not cut off.
func (c *conn) tooManyRecipients() error {
	c.srv.stats.limit(&c.srv.stats.MaxRecipients)
	c.overshoot++
	if c.overshoot > c.cfg.maxRecipients {
		return errTooManyRecipients
	}
	c.refuse(errTooManyRecipients)
	return nil
}

// rcptParams reads the RCPT TO parameters: NOTIFY= and ORCPT= with DSN, at most
// once each; anything else is 555.
func (c *conn) rcptParams(params []address.Param) (RecipientDSN, error) {
	var d RecipientDSN
	for _, prm := range params {
		key := upperASCII(prm.Key)
		ok := false
		switch {
		case !c.cfg.dsn || key != "NOTIFY" && key != "ORCPT":
			return d, SMTPError555
		case key == "NOTIFY" && d.Notify == nil:
			d.Notify, ok = parseNotify(prm.Value)
		case key == "ORCPT" && d.ORcpt == "":
			d.ORcpt, ok = parseORcpt(prm.Value)
		}
		if !ok {
			return d, SMTPError501
		}
	}
	return d, nil
}
