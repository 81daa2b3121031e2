package mailauth

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd/internal/testenv"
)

// verifyCase is one message built by dkimpy (or OpenDKIM) and the verdict the
// RFCs give it.
type verifyCase struct {
	name  string
	steps []testenv.Step
	msg   string     // the message before the steps; "": plainMessage
	conn  Connection // zero: conn()
	dkim  string     // the DKIM results, comma-separated in header order
	dmarc Result
	arc   Result
	why   string // a word the first DKIM reason must hold
}

func verifyCases(k *testenv.Keyring) []verifyCase {
	rsa := func(sel string) testenv.Step { return testenv.DKIM(k.RSA2048, sel, "example.test") }
	step := func(s testenv.Step, edit func(*testenv.Step)) testenv.Step { edit(&s); return s }
	past := time.Now().Add(-48 * time.Hour).Unix()
	return []verifyCase{
		{name: "rsa2048 relaxed/simple", steps: []testenv.Step{rsa("rsa2048")}, dkim: "pass", dmarc: Pass, arc: None},
		{name: "rsa1024 simple/simple", steps: []testenv.Step{step(testenv.DKIM(k.RSA1024, "rsa1024", "example.test"), func(s *testenv.Step) { s.Canon = "simple/simple" })}, dkim: "pass", dmarc: Pass, arc: None},
		{name: "relaxed/relaxed", steps: []testenv.Step{step(rsa("rsa2048"), func(s *testenv.Step) { s.Canon = "relaxed/relaxed" })}, dkim: "pass", dmarc: Pass, arc: None},
		{name: "ed25519", steps: []testenv.Step{testenv.DKIM(k.Ed25519, "ed25519", "example.test")}, dkim: "pass", dmarc: Pass, arc: None},
		{name: "dkimsign command", steps: []testenv.Step{{Op: "dkim", Via: "dkimsign", Key: k.RSA2048.File, Selector: "rsa2048", Domain: "example.test", Canon: "simple/simple"}}, dkim: "pass", dmarc: Pass, arc: None},
		{name: "body tampered", steps: []testenv.Step{rsa("rsa2048"), {Op: "append", Text: "P.S. send money\r\n"}}, dkim: "fail", dmarc: Pass, arc: None, why: "body hash"},
		{name: "subject tampered", steps: []testenv.Step{rsa("rsa2048"), {Op: "replace", Old: "Subject: a test", New: "Subject: a tast"}}, dkim: "fail", dmarc: Pass, arc: None, why: "signature"},
		{name: "rsa-sha1 (RFC 8301)", steps: []testenv.Step{step(rsa("rsa2048"), func(s *testenv.Step) { s.Alg = "rsa-sha1" })}, dkim: "policy", dmarc: Pass, arc: None, why: "rsa-sha1"},
		{name: "rsa512 (RFC 8301)", steps: []testenv.Step{testenv.DKIM(k.RSA512, "rsa512", "example.test")}, dkim: "policy", dmarc: Pass, arc: None, why: "512 bits"},
		{name: "l= body length", steps: []testenv.Step{step(rsa("rsa2048"), func(s *testenv.Step) { s.Length = -1 })}, dkim: "policy", dmarc: Pass, arc: None, why: "l="},
		{name: "expired", steps: []testenv.Step{step(rsa("rsa2048"), func(s *testenv.Step) { s.Time, s.Expire = past-3600, past })}, dkim: "permerror", dmarc: Pass, arc: None, why: "expired"},
		{name: "revoked key", steps: []testenv.Step{step(rsa("revoked"), func(s *testenv.Step) {})}, dkim: "permerror", dmarc: Pass, arc: None, why: "revoked"},
		{name: "missing key", steps: []testenv.Step{rsa("nokey")}, dkim: "permerror", dmarc: Pass, arc: None, why: "key"},
		{name: "two key records", steps: []testenv.Step{rsa("two")}, dkim: "permerror", dmarc: Pass, arc: None, why: "multiple"},
		{name: "two signatures, one broken", steps: []testenv.Step{rsa("rsa2048"), {Op: "replace", Old: "Hello", New: "Jello"}, testenv.DKIM(k.Ed25519, "ed25519", "example.test")}, dkim: "pass,fail", dmarc: Pass, arc: None},
		{name: "foreign signature only, SPF fails", conn: Connection{IP: net.ParseIP("127.0.0.3"), Helo: "mx.fwd.test", MailFrom: "alice@example.test"},
			steps: []testenv.Step{testenv.DKIM(k.RSA2048, "rsa2048", "fwd.test")}, dkim: "pass", dmarc: Fail, arc: None},
		{name: "ARC one hop", conn: Connection{IP: net.ParseIP("127.0.0.3"), Helo: "mx.fwd.test", MailFrom: "list@fwd.test"},
			steps: []testenv.Step{rsa("rsa2048"), testenv.ARC(k.RSA2048, "rsa2048", "fwd.test", "hop1.fwd.test")}, dkim: "pass", dmarc: Pass, arc: Pass},
		{name: "ARC three hops, arcsign last", conn: Connection{IP: net.ParseIP("127.0.0.3"), Helo: "mx.fwd.test", MailFrom: "list@fwd.test"},
			steps: []testenv.Step{rsa("rsa2048"),
				testenv.ARC(k.RSA2048, "rsa2048", "fwd.test", "hop1.fwd.test"),
				testenv.ARC(k.RSA1024, "rsa1024", "fwd.test", "hop2.fwd.test"),
				{Op: "arc", Via: "arcsign", Key: k.RSA1024.File, Selector: "rsa1024", Domain: "fwd.test", SrvID: "hop3.fwd.test"}},
			dkim: "pass", dmarc: Pass, arc: Pass},
		{name: "ARC body changed after the seal", conn: Connection{IP: net.ParseIP("127.0.0.3"), Helo: "mx.fwd.test", MailFrom: "list@fwd.test"},
			steps: []testenv.Step{rsa("rsa2048"), testenv.ARC(k.RSA2048, "rsa2048", "fwd.test", "hop1.fwd.test"), {Op: "append", Text: "footer\r\n"}},
			dkim:  "fail", dmarc: Fail, arc: Fail},
		{name: "ARC list rewrote the subject, then sealed", conn: Connection{IP: net.ParseIP("127.0.0.3"), Helo: "mx.fwd.test", MailFrom: "list@fwd.test"},
			steps: []testenv.Step{rsa("rsa2048"), {Op: "replace", Old: "Subject: a test", New: "Subject: [list] a test"},
				testenv.ARC(k.RSA2048, "rsa2048", "fwd.test", "hop1.fwd.test")},
			dkim: "fail", dmarc: Fail, arc: Pass},
		{name: "ARC second hop after a rewrite", conn: Connection{IP: net.ParseIP("127.0.0.3"), Helo: "mx.fwd.test", MailFrom: "list@fwd.test"},
			steps: []testenv.Step{rsa("rsa2048"), testenv.ARC(k.RSA2048, "rsa2048", "fwd.test", "hop1.fwd.test"),
				{Op: "replace", Old: "Subject: a test", New: "Subject: [list] a test"},
				testenv.ARC(k.RSA2048, "rsa2048", "fwd.test", "hop2.fwd.test")},
			dkim: "fail", dmarc: Fail, arc: Fail},
		{name: "ARC results re-spaced (relaxed seal)", conn: Connection{IP: net.ParseIP("127.0.0.3"), Helo: "mx.fwd.test", MailFrom: "list@fwd.test"},
			steps: []testenv.Step{rsa("rsa2048"), testenv.ARC(k.RSA2048, "rsa2048", "fwd.test", "hop1.fwd.test"),
				{Op: "replace", Old: "ARC-Authentication-Results: i=1; hop1", New: "ARC-Authentication-Results: i=1;  hop1"}},
			dkim: "pass", dmarc: Pass, arc: Pass},
		{name: "ARC results forged", conn: Connection{IP: net.ParseIP("127.0.0.3"), Helo: "mx.fwd.test", MailFrom: "list@fwd.test"},
			steps: []testenv.Step{rsa("rsa2048"), testenv.ARC(k.RSA2048, "rsa2048", "fwd.test", "hop1.fwd.test"),
				{Op: "replace", Old: "hop1.fwd.test; dkim=pass", New: "hop1.fwd.test; dkim=fail"}},
			dkim: "pass", dmarc: Pass, arc: Fail},
	}
}

func TestVerifyAgainstSigners(t *testing.T) {
	f := newFixture(t)
	cases := verifyCases(f.keys)
	var jobs []testenv.SignJob
	for _, c := range cases {
		j := testenv.SignJob{ID: c.name, Steps: c.steps}
		if c.msg != "" {
			j.Message = []byte(c.msg)
		}
		jobs = append(jobs, j)
	}
	msgs := f.sign(t, jobs...)
	v := f.verifier()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cn := c.conn
			if cn.IP == nil {
				cn = conn()
			}
			msg := msgs[c.name]
			vd := v.Verify(t.Context(), cn, msg)
			if got := dkimWordList(vd.DKIM); got != c.dkim {
				t.Errorf("dkim %s, want %s: %+v", got, c.dkim, vd.DKIM)
			}
			if c.why != "" && len(vd.DKIM) > 0 && !strings.Contains(vd.DKIM[0].Reason, c.why) {
				t.Errorf("dkim reason %q, want it to say %q", vd.DKIM[0].Reason, c.why)
			}
			if vd.DMARC.Result != c.dmarc {
				t.Errorf("dmarc %s (%s), want %s", vd.DMARC.Result, vd.DMARC.Reason, c.dmarc)
			}
			if vd.ARC.Result != c.arc {
				t.Errorf("arc %s (%s), want %s", vd.ARC.Result, vd.ARC.Reason, c.arc)
			}
			if t.Failed() {
				t.Logf("message:\n%s\nfield:\n%s", msg, vd.Field())
			}
		})
	}
}
