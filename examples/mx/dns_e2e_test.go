package main

import (
	"strings"
	"testing"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd/internal/testenv"
)

// This file runs mx against a real DNS server, Debian's nsd on loopback
// (internal/testenv), serving the records of each case, with messages signed by
// dkimpy: the verdicts in the .json, and what mx does with them.

// dnsWorld is the zones of these tests and a DKIM key published in them.
type dnsWorld struct {
	nsd *testenv.NSD
	key *testenv.Key
}

// startDNS serves the tests' zones:
//   - example.test: SPF passes 192.0.2.7 only, DMARC p=reject, DKIM key s1;
//   - quarantine.test: SPF -all, DMARC p=quarantine;
//   - spffail.test: SPF -all, no DMARC;
//   - relay.test: relay.test is 192.0.2.7, and 192.0.2.7's PTR names it (iprev
//     passes for it); mail.relay.test is 127.0.0.1, whose PTR names it;
//   - client.test, dest.test: names the sessions use, with nothing to say.
func startDNS(t *testing.T) *dnsWorld {
	t.Helper()
	kr := testenv.NewKeyring(t)
	example := testenv.Zone{Origin: "example.test."}
	example.TXT("@", "v=spf1 ip4:192.0.2.7 -all").
		TXT("_dmarc", "v=DMARC1; p=reject").
		TXT("s1._domainkey", kr.RSA2048.Record())
	quarantine := testenv.Zone{Origin: "quarantine.test."}
	quarantine.TXT("@", "v=spf1 -all").TXT("_dmarc", "v=DMARC1; p=quarantine")
	spffail := testenv.Zone{Origin: "spffail.test."}
	spffail.TXT("@", "v=spf1 -all")
	relay := testenv.Zone{Origin: "relay.test."}
	relay.Add("@", "A", "192.0.2.7").Add("mail", "A", "127.0.0.1")
	rev192 := testenv.Zone{Origin: "2.0.192.in-addr.arpa."}
	rev192.Add("7", "PTR", "relay.test.")
	rev127 := testenv.Zone{Origin: "127.in-addr.arpa."}
	rev127.Add("1.0.0", "PTR", "mail.relay.test.")
	client := testenv.Zone{Origin: "client.test."}
	dest := testenv.Zone{Origin: "dest.test."}
	nsd := testenv.StartNSD(t, example, quarantine, spffail, relay, rev192, rev127, client, dest)
	return &dnsWorld{nsd: nsd, key: kr.RSA2048}
}

// sign returns msg with a DKIM-Signature of example.test (selector s1) made by
// dkimpy.
func (w *dnsWorld) sign(t *testing.T, msg string) string {
	t.Helper()
	out := testenv.Sign(t, w.nsd.Addr, []testenv.SignJob{{ID: "m", Message: []byte(msg),
		Steps: []testenv.Step{testenv.DKIM(w.key, "s1", "example.test")}}})
	return string(out["m"])
}

// fromMessage is a message whose From is in domain.
func fromMessage(domain string) string {
	return crlf("From: Alice <alice@" + domain + ">\nTo: bob@dest.test\nSubject: from " + domain +
		"\nDate: Mon, 7 Dec 2026 10:00:00 +0000\nMessage-ID: <1@" + domain + ">\n\nHello Bob.\n")
}

// TestDNSVerdicts: for each case, the reply, what is stored, and the verdict
// mx wrote in its field and in auth_results.
func TestDNSVerdicts(t *testing.T) {
	w := startDNS(t)
	signed := w.sign(t, fromMessage("example.test"))
	cases := []struct {
		name       string
		args       []string
		xclient    string // XCLIENT ADDR, "" for none
		proxy      string // the client a PROXY header names, "" for none
		from       string // MAIL FROM
		msg        string
		code       int
		want       []string // in auth_results
		quarantine string   // the reason's start; "" for none
	}{
		{name: "signed, SPF fails alone: stored", from: "alice@example.test", msg: signed, code: 250,
			want: []string{"spf=fail", "dkim=pass", "header.d=example.test", "header.s=s1", "dmarc=pass", "header.from=example.test", "iprev=pass", "policy.iprev=127.0.0.1"}},
		{name: "DMARC fail, p=reject: 550 5.7.1", from: "alice@example.test", msg: fromMessage("example.test"), code: 550},
		{name: "DMARC fail, p=reject, not enforced: quarantined", args: []string{"-dmarc-enforce=false"},
			from: "alice@example.test", msg: fromMessage("example.test"), code: 250,
			want: []string{"spf=fail", "dkim=none", "dmarc=fail"}, quarantine: "dmarc: p=reject of example.test"},
		{name: "DMARC fail, p=quarantine: quarantined", from: "alice@quarantine.test", msg: fromMessage("quarantine.test"), code: 250,
			want: []string{"spf=fail", "dmarc=fail", "header.from=quarantine.test"}, quarantine: "dmarc: p=quarantine of quarantine.test"},
		{name: "SPF fail, no DMARC: stored", from: "alice@spffail.test", msg: fromMessage("spffail.test"), code: 250,
			want: []string{"spf=fail", "smtp.mailfrom=spffail.test", "dmarc=none"}},
		{name: "XCLIENT: its address is checked", xclient: "192.0.2.7", from: "alice@example.test", msg: fromMessage("example.test"), code: 250,
			want: []string{"spf=pass", "smtp.mailfrom=example.test", "dmarc=pass", "iprev=pass", "policy.iprev=192.0.2.7"}},
		{name: "PROXY: its address is checked", proxy: "192.0.2.7", from: "alice@example.test", msg: fromMessage("example.test"), code: 250,
			want: []string{"spf=pass", "smtp.mailfrom=example.test", "dmarc=pass", "iprev=pass", "policy.iprev=192.0.2.7"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			trust := "-xclient-trusted"
			if c.proxy != "" {
				trust = "-proxy-trusted"
			}
			mx := startMX(t, append([]string{"-resolver", w.nsd.Addr, trust, "127.0.0.1"}, c.args...)...)
			conn := dialRaw(t, mx)
			if c.proxy != "" {
				conn.Send("PROXY TCP4 " + c.proxy + " 127.0.0.1 4000 25\r\n")
			}
			conn.Expect(220)
			conn.Cmd("EHLO client.test", 250)
			if c.xclient != "" {
				conn.Cmd("XCLIENT ADDR="+c.xclient, 220)
				conn.Cmd("EHLO client.test", 250)
			}
			code, text := send(t, conn, c.from, []string{"bob@dest.test"}, c.msg)
			if code != c.code {
				t.Fatalf("reply %d %s, want %d", code, text, c.code)
			}
			if code != 250 {
				if !strings.HasPrefix(text, "5.7.1") {
					t.Errorf("reply %d %s, want 5.7.1", code, text)
				}
				if ms := messages(t, mx.Out); len(ms) != 0 {
					t.Errorf("%d stored", len(ms))
				}
				return
			}
			m := only(t, mx.Out)
			field, _ := ourField(t, m.EML)
			t.Logf("%s", field)
			for _, want := range c.want {
				if !strings.Contains(m.Rec.AuthResults, want) {
					t.Errorf("auth_results lacks %q:\n%s", want, m.Rec.AuthResults)
				}
			}
			if m.Rec.Quarantine != (c.quarantine != "") || !strings.HasPrefix(m.Rec.QuarantineReason, c.quarantine) {
				t.Errorf("quarantine %v %q, want %q", m.Rec.Quarantine, m.Rec.QuarantineReason, c.quarantine)
			}
		})
	}
}

// TestDNSVerdictBeforeMilterChanges: a milter that replaces the body of a
// DKIM-signed message does not change our verdict (dkim=pass: it is made on the
// message as received), while the stored message has the milter's body.
func TestDNSVerdictBeforeMilterChanges(t *testing.T) {
	w := startDNS(t)
	tm := startTestMilter(t, 0, func(m gomilter.Modifier) (*gomilter.Response, error) {
		return gomilter.RespContinue, m.ReplaceBody(strings.NewReader("Replaced.\r\n"))
	})
	mx := startMX(t, "-resolver", w.nsd.Addr, "-milter", tm.Addr)
	if code, text := deliver(t, mx, w.sign(t, fromMessage("example.test"))); code != 250 {
		t.Fatalf("%d %s", code, text)
	}
	m := only(t, mx.Out)
	if !strings.Contains(m.Rec.AuthResults, "dkim=pass") || !strings.Contains(m.Rec.AuthResults, "header.d=example.test") {
		t.Errorf("auth_results: %s", m.Rec.AuthResults)
	}
	if string(bodyOf(m.EML)) != "Replaced.\r\n" {
		t.Errorf("stored body %q", bodyOf(m.EML))
	}
}
