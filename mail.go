package smtpd

import (
	"errors"
	"strconv"

	"github.com/midismtp/smtpd/internal/address"
)

// This file is MAIL FROM (RFC 5321 4.1.1.2) and its ESMTP parameters: SIZE (RFC
// 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531), RET and ENVID (RFC 3461),
// REQUIRETLS (RFC 8689).

// mailParams are the MAIL FROM parameters this server knows.
type mailParams struct {
	body, utf8 string
	size       int
	ret, envID string
	requireTLS bool
}

// cmdMail: RFC 5321 4.1.1.2, "This command tells the SMTP-server receiver that a
// new mail transaction is starting and to reset all its state tables and buffers".
func (c *conn) cmdMail(args string) error {
	// The sequence (RFC 5321 4.1.4: a greeting, no open transaction) and
	// AuthRequired come first.
	if err := c.transactionAllowed(c.phase == phaseReady); err != nil {
		return err
	}
	// Parse: the reverse-path (<> allowed) and its parameters.
	path, err := parsePathArg(args, "FROM:", true)
	if err != nil {
		return err
	}
	p, err := c.parseMailParams(path.Params)
	// Check.
	switch {
	case err != nil:
		return err
	case !path.IsASCII() && p.utf8 == "":
		return SMTPError553 // RFC 6531 3.4: a UTF-8 address needs SMTPUTF8
	case c.cfg.maxMessage > 0 && p.size > c.cfg.maxMessage:
		c.srv.stats.limit(&c.srv.stats.MaxMessageSize)
		return SMTPError552 // RFC 1870 6.1: over the limit, before any data
	}
	// Hook: the transaction, with its message ID, exists while OnMailFrom runs.
	c.s.Envelope = Envelope{EncodingBody: p.body, EncodingUTF8: p.utf8, Size: p.size, DSNRet: p.ret, DSNEnvID: p.envID,
		RequireTLS: p.requireTLS, FromParams: rawParams(path.Params)}
	c.transactions++
	c.s.Message.ID = c.s.ID + "-" + strconv.Itoa(c.transactions)
	c.params = c.s.Envelope.FromParams
	from, err := c.h.OnMailFrom(c.s, path.Mailbox)
	c.params = nil
	if successReply(err) == nil && err != nil {
		c.s.Envelope, c.s.Message.ID = Envelope{}, ""
		return err
	}
	// Reply.
	c.s.Envelope.From = orString(from, path.Mailbox)
	c.phase = phaseMail
	return c.succeed(err, replyMailOK)
}

// transactionAllowed checks what MAIL, RCPT and DATA have in common: the
// command sequence (inSequence) and AuthRequired.
func (c *conn) transactionAllowed(inSequence bool) error {
	switch {
	case !inSequence:
		return SMTPError503
	case c.needsAuth():
		return SMTPError530
	}
	return nil
}

// parsePathArg parses the argument of MAIL (prefix "FROM:") or RCPT ("TO:"): the
// path and its ESMTP parameters, their number capped before any is stored.
func parsePathArg(args, prefix string, nullOK bool) (address.Path, error) {
	arg, ok := cutPrefixFold(args, prefix)
	if !ok {
		return address.Path{}, SMTPError501
	}
	path, err := address.Parse(arg, nullOK)
	switch {
	case errors.Is(err, address.ErrTooManyParams):
		return path, errTooManyParams
	case err != nil:
		return path, &wrappedReply{reply: SMTPError501, err: err}
	}
	return path, nil
}

// parseMailParams reads the MAIL FROM parameters: SIZE always; BODY= and SMTPUTF8
// need Internationalization (501 otherwise, as MidiSmtpServer; BODY=BINARYMIME
// needs Chunking); RET= and ENVID= need DSN; REQUIRETLS needs RequireTLS and TLS;
// other parameters, and a repeated one, are 555 (RFC 5321 4.1.1.11) or 501.
func (c *conn) parseMailParams(params []address.Param) (mailParams, error) {
	var p mailParams
	seen := map[string]bool{}
	for _, prm := range params {
		key := upperASCII(prm.Key)
		if seen[key] {
			return p, SMTPError501
		}
		seen[key] = true
		if err := c.mailParam(&p, key, prm); err != nil {
			return p, err
		}
	}
	return p, nil
}

// mailParam reads one MAIL FROM parameter into p.
func (c *conn) mailParam(p *mailParams, key string, prm address.Param) error {
	ok := true
	switch {
	case key == "SIZE":
		p.size, ok = parseSize(prm.Value)
	case key == "BODY" && (c.cfg.i18n || c.cfg.chunking):
		p.body, ok = c.bodyParam(prm.Value)
	case key == "SMTPUTF8" && c.cfg.i18n:
		p.utf8, ok = "utf8", !prm.HasValue
	case key == "RET" && c.cfg.dsn:
		p.ret, ok = parseRet(prm.Value)
	case key == "ENVID" && c.cfg.dsn:
		p.envID, ok = parseEnvID(prm.Value)
	case key == "REQUIRETLS" && c.cfg.requireTLS:
		if !c.s.IsEncrypted() {
			return errRequireTLSPlain // RFC 8689 4.1: only over TLS
		}
		p.requireTLS, ok = true, !prm.HasValue
	case key == "BODY" || key == "SMTPUTF8":
		return SMTPError501 // MidiSmtpServer's reply when Internationalization is off
	default:
		return SMTPError555
	}
	if !ok {
		return SMTPError501
	}
	return nil
}

// bodyParam reads BODY=: 7BIT, 8BITMIME (Internationalization) or BINARYMIME (Chunking).
func (c *conn) bodyParam(v string) (string, bool) {
	switch keywordASCII(v, "7BIT", "8BITMIME", "BINARYMIME") {
	case "7BIT":
		return "7bit", true
	case "8BITMIME":
		return "8bitmime", c.cfg.i18n
	case "BINARYMIME":
		return "binarymime", c.cfg.chunking
	}
	return "", false
}

// rawParams renders ESMTP parameters as the client sent them: "KEY=value" or "KEY".
func rawParams(params []address.Param) []string {
	if len(params) == 0 {
		return nil
	}
	out := make([]string, len(params))
	for i, p := range params {
		out[i] = p.Key
		if p.HasValue {
			out[i] += "=" + p.Value
		}
	}
	return out
}
