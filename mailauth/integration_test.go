package mailauth

import (
	"bytes"
	"errors"
	"io"
	"net/textproto"
	"strings"
	"sync"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/internal/testenv"
	"github.com/midismtp/smtpd/smtptest"
)

// These tests run the package inside a real smtpd server on loopback, with the
// fixture's nsd answering every lookup: the buffered path (OnMessage), the
// streaming path (MessageStreamer) and a client address given by XCLIENT.

// bufferedAuth checks each message in OnMessage, refuses a DMARC reject, and
// records the message as handed on.
type bufferedAuth struct {
	smtptest.Recorder
	v *Verifier
}

func (h *bufferedAuth) OnMessage(s *smtpd.Session) error {
	verdict := h.v.Verify(s.Context(), ConnectionOf(s), s.Message.Data)
	if err := verdict.Reject(); err != nil {
		return err
	}
	s.Message.Data = verdict.Rewrite(s.Message.Data)
	return h.Recorder.OnMessage(s)
}

// streamingAuth reads each message through a Reader while it arrives.
type streamingAuth struct {
	smtpd.BaseHandler
	v        *Verifier
	mu       sync.Mutex
	stored   [][]byte
	verdicts []*Verdict
}

func (h *streamingAuth) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	ar := h.v.NewReader(s.Context(), ConnectionOf(s), r)
	var body bytes.Buffer // a program writes a file here
	if _, err := io.Copy(&body, ar); err != nil {
		return err
	}
	verdict := ar.Verdict()
	h.mu.Lock()
	h.verdicts = append(h.verdicts, verdict)
	h.mu.Unlock()
	if err := verdict.Reject(); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stored = append(h.stored, append([]byte(verdict.Field()), body.Bytes()...))
	return nil
}

// forgedAR is an Authentication-Results field claiming our authserv-id, prepended
// by the sender; otherAR is another server's and must stay.
const (
	forgedAR = "Authentication-Results: mx.rcpt.test; spf=pass; dkim=pass; dmarc=pass\r\n"
	otherAR  = "Authentication-Results: mx.elsewhere.test; spf=pass\r\n"
)

// integrationMessages signs the messages the integration tests send: a good one
// with forged and foreign results on top, and one whose From domain (p=reject)
// did not sign it.
func integrationMessages(t *testing.T, f *fixture) (good, spoofed []byte) {
	t.Helper()
	msgs := f.sign(t,
		testenv.SignJob{ID: "good", Steps: []testenv.Step{testenv.DKIM(f.keys.RSA2048, "rsa2048", "example.test"),
			{Op: "prepend", Text: forgedAR + otherAR}}},
		testenv.SignJob{ID: "spoofed", Steps: []testenv.Step{testenv.DKIM(f.keys.RSA2048, "rsa2048", "fwd.test")}})
	return msgs["good"], msgs["spoofed"]
}

// checkHandedOn checks a stored message: our field first, the forged field gone,
// the other server's field and the signed message kept.
func checkHandedOn(t *testing.T, got, sent []byte) {
	t.Helper()
	s := string(got)
	if !strings.HasPrefix(s, "Authentication-Results: mx.rcpt.test;\r\n\tspf=pass smtp.mailfrom=example.test;\r\n\tdkim=pass") {
		t.Errorf("stored message does not start with our verdict:\n%s", s)
	}
	if strings.Contains(s, forgedAR) || !strings.Contains(s, otherAR) {
		t.Errorf("forged field kept or foreign one removed:\n%s", s)
	}
	if !strings.HasSuffix(s, string(sent[len(forgedAR)+len(otherAR):])) {
		t.Errorf("the message after the fields changed:\n%s", s)
	}
}

// smtpCode is the reply code of a net/smtp error (0 for success).
func smtpCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestSMTPBuffered(t *testing.T) {
	f := newFixture(t)
	good, spoofed := integrationMessages(t, f)
	h := &bufferedAuth{v: f.verifier()}
	ts := smtptest.NewServer(t, h)
	if err := ts.SendMail(nil, fixtureFrom, []string{"bob@rcpt.test"}, string(good)); err != nil {
		t.Fatalf("good message: %v", err)
	}
	if err := ts.SendMail(nil, "mallory@fwd.test", []string{"bob@rcpt.test"}, string(spoofed)); smtpCode(err) != 550 {
		t.Errorf("spoofed From under p=reject: %v, want 550", err)
	}
	msgs := h.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages recorded", len(msgs))
	}
	checkHandedOn(t, msgs[0].Data, good)
}

func TestSMTPStreaming(t *testing.T) {
	f := newFixture(t)
	good, spoofed := integrationMessages(t, f)
	h := &streamingAuth{v: f.verifier()}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.EnhancedStatusCodes = true })
	if err := ts.SendMail(nil, fixtureFrom, []string{"bob@rcpt.test"}, string(good)); err != nil {
		t.Fatalf("good message: %v", err)
	}
	err := ts.SendMail(nil, "mallory@fwd.test", []string{"bob@rcpt.test"}, string(spoofed))
	if smtpCode(err) != 550 || !strings.Contains(err.Error(), "5.7.1") {
		t.Errorf("spoofed From under p=reject: %v, want 550 5.7.1", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.stored) != 1 || len(h.verdicts) != 2 {
		t.Fatalf("%d stored, %d verdicts", len(h.stored), len(h.verdicts))
	}
	checkHandedOn(t, h.stored[0], good)
	if d := h.verdicts[1].DMARC; d.Result != Fail || d.Applied != DispositionReject {
		t.Errorf("spoofed: %+v", d)
	}
}

// TestSMTPXCLIENT: the Connection is the client XCLIENT names, not the proxy's
// address: SPF and iprev check 127.0.0.3.
func TestSMTPXCLIENT(t *testing.T) {
	f := newFixture(t)
	good, _ := integrationMessages(t, f)
	h := &streamingAuth{v: f.verifier()}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.XClientTrustedNetworks = "127.0.0.0/8" })
	c := ts.DialGreeted(t)
	c.Cmd("EHLO proxy.test", 250)
	c.Cmd("XCLIENT ADDR=127.0.0.3 HELO=mx.fwd.test", 220)
	c.Cmd("EHLO mx.fwd.test", 250)
	c.Cmd("MAIL FROM:<alice@example.test>", 250)
	c.Cmd("RCPT TO:<bob@rcpt.test>", 250)
	c.Cmd("DATA", 354)
	c.Send(string(good) + ".\r\n")
	c.Expect(250) // DKIM passes, so DMARC passes although SPF fails
	c.Cmd("QUIT", 221)
	h.mu.Lock()
	defer h.mu.Unlock()
	vd := h.verdicts[0]
	if vd.IPRev.IP != "127.0.0.3" || vd.IPRev.Result != Fail || vd.SPF.Result != Fail || vd.DMARC.Result != Pass {
		t.Errorf("verdict for the XCLIENT address:\n%s", vd.Field())
	}
}
