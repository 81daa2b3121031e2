package smtpd_test

import (
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
)

// TestTLSRequiredNoHeaderOnlyMessage: a message may be a header section alone,
// with no empty line and no body (RFC 5322 3.5: message = fields [CRLF body]);
// its header section then ends with the data. A "TLS-Required: No" field in it
// must set Envelope.TLSRequiredNo as it does in a message with a body — first
// field or last, by DATA and by BDAT.
func TestTLSRequiredNoHeaderOnlyMessage(t *testing.T) {
	for _, tc := range []struct{ name, msg string }{
		{"field first", "TLS-Required: No\r\nSubject: x\r\n"},
		{"field last", "Subject: x\r\nTLS-Required: No\r\n"},
	} {
		for _, bdat := range []bool{false, true} {
			rec := &smtptest.Recorder{}
			ts := smtptest.NewServer(t, rec, func(s *smtpd.Server) { s.Chunking = true })
			c := ts.DialGreeted(t)
			c.Cmd("EHLO client.example", 250)
			c.Cmd("MAIL FROM:<a@example.org>", 250)
			c.Cmd("RCPT TO:<b@example.org>", 250)
			if bdat {
				c.Send("BDAT " + itoa(len(tc.msg)) + " LAST\r\n" + tc.msg)
			} else {
				c.Cmd("DATA", 354)
				c.Send(tc.msg + ".\r\n")
			}
			c.Expect(250)
			if !rec.Messages()[0].TLSRequiredNo {
				t.Errorf("%s (BDAT %v): Envelope.TLSRequiredNo is false", tc.name, bdat)
			}
		}
	}
}
