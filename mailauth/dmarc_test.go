package mailauth

import (
	"strings"
	"testing"

	"github.com/midismtp/smtpd/internal/testenv"
)

func TestParseDMARC(t *testing.T) {
	for _, tc := range []struct {
		rec  string
		ok   bool
		want dmarcRecord
	}{
		{"v=DMARC1; p=reject", true, dmarcRecord{p: DispositionReject, pct: 100}},
		{"v=DMARC1;p=Quarantine;sp=none;adkim=s;aspf=S;pct=20", true,
			dmarcRecord{p: DispositionQuarantine, sp: DispositionNone, strictDKIM: true, strictSPF: true, pct: 20}},
		{"v=DMARC1; p=reject; pct=150; ri=-1; fo=x; rf=zz; adkim=q", true, dmarcRecord{p: DispositionReject, pct: 100}},
		{"v=DMARC1; p=reject; p=none", true, dmarcRecord{p: DispositionReject, pct: 100}},
		{"v=DMARC1; p=bogus; rua=mailto:d@example.test", true, dmarcRecord{p: DispositionNone, pct: 100, invalidPolicy: true}},
		{"v=DMARC1; p=reject; sp=bogus; rua=mailto:d@example.test", true, dmarcRecord{p: DispositionNone, pct: 100, invalidPolicy: true}},
		{"v=DMARC1; p=bogus", false, dmarcRecord{}},
		{"v=DMARC1; rua=nonsense", false, dmarcRecord{}},
		{"v=DMARC1", false, dmarcRecord{}},
	} {
		got, ok := parseDMARC(tc.rec)
		if ok != tc.ok || ok && *got != tc.want {
			t.Errorf("%q: %+v %v, want %+v %v", tc.rec, got, ok, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		txt string
		is  bool
	}{{"v=DMARC1; p=none", true}, {" v = DMARC1 ;p=none", true}, {"v=DMARC1", true}, {"v=dmarc1; p=none", false}, {"v=spf1 -all", false}, {"p=none; v=DMARC1", false}} {
		if isDMARCRecord(tc.txt) != tc.is {
			t.Errorf("isDMARCRecord(%q) = %v", tc.txt, !tc.is)
		}
	}
}

func TestFromDomain(t *testing.T) {
	for _, tc := range []struct {
		header, want, err string
	}{
		{"From: Alice <alice@Example.TEST>\r\n", "example.test", ""},
		{"From: alice@example.test (Alice)\r\n", "example.test", ""},
		{"From: =?utf-8?q?Al=C3=AFce?= <a@example.test>\r\n", "example.test", ""},
		{"From: \"A, B\" <a@b.example.test>\r\n", "b.example.test", ""},
		{"From: a@bücher.example\r\n", "xn--bcher-kva.example", ""},
		{"From: a@example.test,\r\n b@example.org\r\n", "", "2 addresses"},
		{"From: a@example.test\r\nFrom: b@example.test\r\n", "", "more than one"},
		{"To: a@example.test\r\n", "", "no From"},
		{"From: undisclosed-recipients:;\r\n", "", ""},
		{"From: <>\r\n", "", "unreadable"},
		{"From: a@[192.0.2.1]\r\n", "", "no domain"},
	} {
		got, err := fromDomain(parseHeader([]byte(tc.header)))
		if got != tc.want || (err == nil) != (tc.err == "" && tc.want != "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %q, %v; want %q, %q", tc.header, got, err, tc.want, tc.err)
		}
	}
}

func TestAligned(t *testing.T) {
	for _, tc := range []struct {
		domain, from string
		strict, want bool
	}{
		{"example.test", "example.test", true, true},
		{"mail.example.test", "example.test", false, true},
		{"mail.example.test", "example.test", true, false},
		{"Example.Test.", "example.test", true, true},
		{"example.co.uk", "other.co.uk", false, false},
		{"a.example.co.uk", "b.example.co.uk", false, true},
		{"", "example.test", false, false},
	} {
		if got := aligned(tc.domain, tc.from, tc.strict); got != tc.want {
			t.Errorf("aligned(%q, %q, strict=%v) = %v", tc.domain, tc.from, tc.strict, got)
		}
	}
}

func TestEvalDMARC(t *testing.T) {
	rec := func(edit func(*dmarcRecord)) *dmarcRecord {
		r := &dmarcRecord{p: DispositionReject, pct: 100, domain: "example.test"}
		edit(r)
		return r
	}
	spfPass := SPFResult{Result: Pass, Domain: "bounce.example.test"}
	spfFail := SPFResult{Result: Fail, Domain: "example.test"}
	dkimPass := []DKIMResult{{Result: Fail, Domain: "example.test"}, {Result: Pass, Domain: "sign.example.test"}}
	for _, tc := range []struct {
		name    string
		rec     *dmarcRecord
		from    string
		spf     SPFResult
		dkim    []DKIMResult
		draw    float64
		result  Result
		policy  Disposition
		applied Disposition
	}{
		{"SPF relaxed pass", rec(func(*dmarcRecord) {}), "example.test", spfPass, nil, 0, Pass, DispositionReject, DispositionNone},
		{"SPF strict no", rec(func(r *dmarcRecord) { r.strictSPF = true }), "example.test", spfPass, nil, 0, Fail, DispositionReject, DispositionReject},
		{"DKIM relaxed pass", rec(func(*dmarcRecord) {}), "example.test", spfFail, dkimPass, 0, Pass, DispositionReject, DispositionNone},
		{"DKIM strict no", rec(func(r *dmarcRecord) { r.strictDKIM = true }), "example.test", spfFail, dkimPass, 0, Fail, DispositionReject, DispositionReject},
		{"sp at org", rec(func(r *dmarcRecord) { r.sp, r.atOrg = DispositionQuarantine, true }), "sub.example.test", spfFail, nil, 0, Fail, DispositionQuarantine, DispositionQuarantine},
		{"sp not for the org itself", rec(func(r *dmarcRecord) { r.sp, r.atOrg = DispositionNone, true }), "example.test", spfFail, nil, 0, Fail, DispositionReject, DispositionReject},
		{"pct in", rec(func(r *dmarcRecord) { r.pct = 30 }), "example.test", spfFail, nil, 0.29, Fail, DispositionReject, DispositionReject},
		{"pct out", rec(func(r *dmarcRecord) { r.pct = 30 }), "example.test", spfFail, nil, 0.30, Fail, DispositionReject, DispositionQuarantine},
		{"pct=0 quarantine", rec(func(r *dmarcRecord) { r.p, r.pct = DispositionQuarantine, 0 }), "example.test", spfFail, nil, 0, Fail, DispositionQuarantine, DispositionNone},
		{"aligned temperror", rec(func(*dmarcRecord) {}), "example.test", SPFResult{Result: TempError, Domain: "example.test"}, nil, 0, TempError, DispositionReject, DispositionNone},
		{"unaligned temperror", rec(func(*dmarcRecord) {}), "example.test", SPFResult{Result: TempError, Domain: "other.test"}, nil, 0, Fail, DispositionReject, DispositionReject},
	} {
		got := evalDMARC(DMARCResult{FromDomain: tc.from}, tc.rec, tc.spf, tc.dkim, func() float64 { return tc.draw })
		if got.Result != tc.result || got.Policy != tc.policy || got.Applied != tc.applied {
			t.Errorf("%s: %+v; want %s %s %s", tc.name, got, tc.result, tc.policy, tc.applied)
		}
	}
}

// TestDMARCDiscovery looks policies up in nsd: at the From domain, at the
// organizational domain with sp=, none, and several records.
func TestDMARCDiscovery(t *testing.T) {
	testenv.Need(t, "nsd")
	org := testenv.Zone{Origin: "org.test."}
	org.TXT("_dmarc", "v=DMARC1; p=quarantine; sp=reject; pct=50").
		TXT("_dmarc.own", "v=DMARC1; p=none").
		TXT("_dmarc.two", "v=DMARC1; p=none").TXT("_dmarc.two", "v=DMARC1; p=reject").
		TXT("_dmarc.other", "not dmarc").Add("mail", "A", "192.0.2.1")
	n := testenv.StartNSD(t, org, testenv.Zone{Origin: "test."})
	r := NewResolver(n.Addr)
	for _, tc := range []struct {
		from   string
		result Result
		p      Disposition
		atOrg  bool
	}{
		{"org.test", "", DispositionQuarantine, false},
		{"a.b.org.test", "", DispositionQuarantine, true},
		{"own.org.test", "", DispositionNone, false},
		{"two.org.test", None, "", false},
		{"other.org.test", "", DispositionQuarantine, true},
		{"nx.test", None, "", false},
	} {
		l := lookupDMARC(t.Context(), r, tc.from, orgDomain(tc.from))
		if l.result != tc.result || tc.p != "" && (l.rec == nil || l.rec.p != tc.p || l.rec.atOrg != tc.atOrg) {
			t.Errorf("%s: %+v %+v", tc.from, l, l.rec)
		}
	}
	// A DNS error is temperror, not "no policy".
	hole := testenv.StartBlackhole(t)
	ctx, cancel := contextWithTimeout(t, 300)
	defer cancel()
	if l := lookupDMARC(ctx, NewResolver(hole), "org.test", "org.test"); l.result != TempError {
		t.Errorf("blackhole: %+v", l)
	}
}
