package mailauth

import (
	"context"
	"io"
	"net"
	"strings"

	"github.com/midismtp/smtpd"
)

// This file ties the package to smtpd: the Connection of a session, the streaming
// Reader for a MessageStreamer, and the replies and rewriting a receiver applies.

// ConnectionOf takes the Connection from a session: RemoteIP (the real client,
// after a trusted PROXY header or XCLIENT), Helo and Envelope.From.
func ConnectionOf(s *smtpd.Session) Connection {
	ip, _, _ := strings.Cut(s.RemoteIP, "%") // an IPv6 zone
	return Connection{IP: net.ParseIP(ip), Helo: s.Helo, MailFrom: s.Envelope.From}
}

// Reader reads a message for a MessageStreamer while a Check sees every byte of it:
// what it returns is the message without forged Authentication-Results fields
// (StripForged), and when it returns io.EOF the Verdict is ready, before
// OnMessageStream returns and so before the SMTP reply is decided.
type Reader struct {
	out     io.Reader
	check   *Check
	verdict *Verdict
}

// NewReader starts checking the message read from r (the reader OnMessageStream
// got). Read it to io.EOF, then take Verdict.
func (v *Verifier) NewReader(ctx context.Context, c Connection, r io.Reader) *Reader {
	check := v.Begin(ctx, c)
	return &Reader{out: NewStripReader(io.TeeReader(r, check), check.id), check: check}
}

// Read reads the message. At io.EOF the verdict is made. Any other error (the
// message too big, the client gone) also ends the Check, whose verdict then
// covers only the bytes that came.
func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.out.Read(p)
	if err != nil && r.verdict == nil {
		r.verdict = r.check.Close()
	}
	return n, err
}

// Verdict returns the verdict once Read has returned an error (io.EOF for a whole
// message), nil before.
func (r *Reader) Verdict() *Verdict { return r.verdict }

// Reject returns the reply refusing the message when DMARC asks for it (RFC 7489
// 6.6.4 and 7.3): an *smtpd.SMTPError "550 5.7.1" when DMARC failed and the applied
// disposition is reject, nil otherwise. Using it is the program's choice; an SPF
// fail alone refuses nothing (RFC 7489 10.1).
func (v *Verdict) Reject() error {
	if v == nil || v.DMARC.Result != Fail || v.DMARC.Applied != DispositionReject {
		return nil
	}
	return &smtpd.SMTPError{Code: 550, EnhancedCode: "5.7.1",
		Message: "Rejected by the DMARC policy of " + v.DMARC.FromDomain}
}

// Quarantine reports whether DMARC failed with the applied disposition quarantine.
func (v *Verdict) Quarantine() bool {
	return v != nil && v.DMARC.Result == Fail && v.DMARC.Applied == DispositionQuarantine
}

// Rewrite returns the message as handed on: our Authentication-Results field first,
// then msg without the fields that claim our authserv-id.
func (v *Verdict) Rewrite(msg []byte) []byte {
	f := v.Field()
	stripped := StripForged(msg, v.AuthServID)
	out := make([]byte, 0, len(f)+len(stripped))
	return append(append(out, f...), stripped...)
}
