package milter

import (
	"slices"
	"strconv"
	"strings"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
)

// applyEnvelope applies the milters' envelope changes (change sender, add and
// delete recipients, with their ESMTP arguments) to e, in the order they came,
// and returns the function that puts e back as the client sent it: the server
// answers (and, in LMTP, counts its per-recipient replies by) the client's own
// RCPT commands.
func applyEnvelope(e *smtpd.Envelope, mods []gomilter.ModifyAction) (restore func()) {
	saved := *e
	e.To, e.ToParams = slices.Clone(e.To), slices.Clone(e.ToParams)
	for len(e.ToParams) < len(e.To) {
		e.ToParams = append(e.ToParams, nil)
	}
	// The server keeps DSN parameters per recipient when DSN is on.
	withDSN := len(e.To) > 0 && len(e.DSNRecipients) == len(e.To)
	e.DSNRecipients = slices.Clone(e.DSNRecipients)
	for _, m := range mods {
		switch m.Type {
		case gomilter.ActionChangeFrom:
			changeFrom(e, gomilter.RemoveAngle(m.From), m.FromArgs)
		case gomilter.ActionAddRcpt:
			addRcpt(e, gomilter.RemoveAngle(m.Rcpt), m.RcptArgs, withDSN)
		case gomilter.ActionDelRcpt:
			delRcpt(e, gomilter.RemoveAngle(m.Rcpt), withDSN)
		}
	}
	return func() { *e = saved }
}

// changeFrom sets the sender (SMFIR_CHGFROM). Its ESMTP arguments, when given,
// replace FromParams; as in Postfix, RET= and ENVID= among them also set DSNRet
// and DSNEnvID.
func changeFrom(e *smtpd.Envelope, from, args string) {
	e.From = from
	params := strings.Fields(args)
	if len(params) == 0 {
		return
	}
	e.FromParams = params
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToUpper(k) {
		case "RET":
			if v = strings.ToUpper(v); v == "FULL" || v == "HDRS" {
				e.DSNRet = v
			}
		case "ENVID":
			if d, ok := xtextDecode(v); ok {
				e.DSNEnvID = d
			}
		}
	}
}

// addRcpt adds a recipient (SMFIR_ADDRCPT, SMFIR_ADDRCPT_PAR) with its ESMTP
// arguments; one already there with the same arguments is not added twice (as
// Postfix's duplicate filter). When the envelope keeps DSN parameters per
// recipient, NOTIFY= and ORCPT= are read into them.
func addRcpt(e *smtpd.Envelope, rcpt, args string, withDSN bool) {
	params := strings.Fields(args)
	for i, to := range e.To {
		if to == rcpt && slices.Equal(e.ToParams[i], params) {
			return
		}
	}
	e.To = append(e.To, rcpt)
	e.ToParams = append(e.ToParams, params)
	if withDSN {
		e.DSNRecipients = append(e.DSNRecipients, dsnOf(params))
	}
}

// dsnOf reads RFC 3461's NOTIFY= and ORCPT= from ESMTP parameters.
func dsnOf(params []string) smtpd.RecipientDSN {
	var d smtpd.RecipientDSN
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToUpper(k) {
		case "NOTIFY":
			d.Notify = strings.Split(strings.ToUpper(v), ",")
		case "ORCPT":
			if o, ok := xtextDecode(v); ok {
				d.ORcpt = o
			}
		}
	}
	return d
}

// delRcpt removes every recipient that is rcpt (SMFIR_DELRCPT), with its
// parameters.
func delRcpt(e *smtpd.Envelope, rcpt string, withDSN bool) {
	for i := len(e.To) - 1; i >= 0; i-- {
		if e.To[i] != rcpt {
			continue
		}
		e.To = slices.Delete(e.To, i, i+1)
		e.ToParams = slices.Delete(e.ToParams, i, i+1)
		if withDSN {
			e.DSNRecipients = slices.Delete(e.DSNRecipients, i, i+1)
		}
	}
}

// xtextDecode decodes RFC 3461 xtext ("+XX" is the byte XX).
func xtextDecode(s string) (string, bool) {
	if !strings.Contains(s, "+") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '+' {
			b.WriteByte(s[i])
			continue
		}
		if i+3 > len(s) {
			return "", false
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), true
}
