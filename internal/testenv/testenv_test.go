package testenv

import (
	"context"
	"strings"
	"testing"
	"time"
)

const selfMessage = "From: Alice <alice@self.test>\r\n" +
	"To: bob@example.test\r\n" +
	"Subject: harness self-test\r\n" +
	"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\n" +
	"Message-ID: <self@self.test>\r\n" +
	"\r\n" +
	"Hello.\r\n"

// selfZones is one domain with every kind of record the oracles read, and the PTR zone.
func selfZones(keys *Keyring) []Zone {
	z := Zone{Origin: "self.test."}
	for _, k := range keys.All() {
		z.TXT(k.Name+"._domainkey", k.Record())
	}
	z.TXT("@", "v=spf1 ip4:127.0.0.2 -all").
		TXT("_dmarc", "v=DMARC1; p=reject").
		Add("mx", "A", "127.0.0.2")
	ptr := Zone{Origin: "0.0.127.in-addr.arpa."}
	ptr.Add("2", "PTR", "mx.self.test.")
	return []Zone{z, ptr, {Origin: "test."}}
}

// TestHarness signs with each signer we use and asks every oracle, on a private nsd: all
// pass (a harness that cannot say pass cannot be trusted to say fail); asked through a
// server that never answers, the oracles say temperror.
func TestHarness(t *testing.T) {
	keys := NewKeyring(t)
	n := StartNSD(t, selfZones(keys)...)
	txt, err := n.Resolver().LookupTXT(context.Background(), "_dmarc.self.test.")
	if err != nil || len(txt) != 1 || txt[0] != "v=DMARC1; p=reject" {
		t.Fatalf("nsd answers %q, %v", txt, err)
	}
	jobs := []SignJob{
		{ID: "api-rsa", Steps: []Step{DKIM(keys.RSA2048, "rsa2048", "self.test")}},
		{ID: "api-ed25519", Steps: []Step{DKIM(keys.Ed25519, "ed25519", "self.test")}},
		{ID: "dkimsign", Steps: []Step{{Op: "dkim", Via: "dkimsign", Key: keys.RSA1024.File, Selector: "rsa1024", Domain: "self.test", Canon: "simple/simple"}}},
		{ID: "opendkim", Steps: []Step{{Op: "dkim", Via: "opendkim", Key: keys.RSA2048.File, Selector: "rsa2048", Domain: "self.test"}}},
		{ID: "arc2", Steps: []Step{
			DKIM(keys.RSA2048, "rsa2048", "self.test"),
			ARC(keys.RSA2048, "rsa2048", "self.test", "hop1.self.test"),
			{Op: "arc", Via: "arcsign", Key: keys.RSA1024.File, Selector: "rsa1024", Domain: "self.test", SrvID: "hop2.self.test"},
		}},
	}
	for i := range jobs {
		jobs[i].Message = []byte(selfMessage)
	}
	msgs := Sign(t, n.Addr, jobs)
	var qs []Question
	for _, j := range jobs {
		qs = append(qs, Question{ID: j.ID, Message: msgs[j.ID], IP: "127.0.0.2", Helo: "mx.self.test", MailFrom: "alice@self.test", Rand: 0.5})
	}
	hole := StartBlackhole(t)
	var answers, timedOut map[string]Answer
	t.Run("ask", func(t *testing.T) {
		t.Run("nsd", func(t *testing.T) { t.Parallel(); answers = Ask(t, n.Addr, 2*time.Second, qs) })
		t.Run("blackhole", func(t *testing.T) { t.Parallel(); timedOut = Ask(t, hole, time.Second, qs[:1]) })
	})
	// oracles asking a server that never answers say temperror, in bounded time
	a := timedOut[qs[0].ID]
	got := []string{a.SPF.Result, a.DKIM[0].Result, a.DMARC.Result, a.IPRev.Result}
	if strings.Join(got, " ") != "temperror temperror temperror temperror" {
		t.Errorf("against the blackhole, spf dkim dmarc iprev = %v, want temperror each", got)
	}
	for _, j := range jobs {
		a := answers[j.ID]
		if len(a.DKIM) == 0 {
			t.Errorf("%s: no DKIM verdict; message:\n%s", j.ID, msgs[j.ID])
		}
		for _, d := range a.DKIM {
			if d.Result != "pass" {
				t.Errorf("%s: dkimpy says %s (%s) for d=%s s=%s", j.ID, d.Result, d.Reason, d.Domain, d.Selector)
			}
		}
		wantARC := "none"
		if j.ID == "arc2" {
			wantARC = "pass"
		}
		for _, c := range []struct{ what, got, want, why string }{
			{"spf", a.SPF.Result, "pass", a.SPF.Reason},
			{"dmarc", a.DMARC.Result, "pass", a.DMARC.Reason},
			{"dmarc policy", a.DMARC.Policy, "reject", a.DMARC.RecordDomain},
			{"iprev", a.IPRev.Result, "pass", a.IPRev.Reason},
			{"arc", a.ARC.Result, wantARC, a.ARC.Reason},
		} {
			if c.got != c.want {
				t.Errorf("%s: %s is %q (%s), want %q", j.ID, c.what, c.got, c.why, c.want)
			}
		}
	}
	if t.Failed() {
		t.Logf("arc2 message:\n%s", msgs["arc2"])
	}
}
