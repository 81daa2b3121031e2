package mailauth

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/midismtp/smtpd/internal/testenv"
)

// sampleVerdict has every method, one of each kind of value.
func sampleVerdict() *Verdict {
	return &Verdict{
		AuthServID: "mx.rcpt.test",
		SPF:        SPFResult{Result: Pass, Identity: "mailfrom", Domain: "example.test"},
		DKIM: []DKIMResult{
			{Result: Pass, Domain: "example.test", Selector: "sel", Algorithm: "rsa-sha256", Signature: "abcdefgh"},
			{Result: Policy, Domain: "example.test", Selector: "old", Algorithm: "rsa-sha1", Reason: "rsa-sha1 refused (RFC 8301)", Identifier: "user@example.test"},
		},
		DMARC: DMARCResult{Result: Pass, FromDomain: "example.test", OrgDomain: "example.test", Policy: DispositionReject, Applied: DispositionNone},
		ARC:   ARCResult{Result: None},
		IPRev: IPRevResult{Result: Pass, IP: "192.0.2.1", Name: "mx.example.test"},
	}
}

func TestFieldGolden(t *testing.T) {
	want := "Authentication-Results: mx.rcpt.test;\r\n" +
		"\tspf=pass smtp.mailfrom=example.test;\r\n" +
		"\tdkim=pass header.d=example.test header.s=sel header.a=rsa-sha256\r\n" +
		"\theader.b=abcdefgh;\r\n" +
		"\tdkim=policy reason=\"rsa-sha1 refused (RFC 8301)\" header.d=example.test\r\n" +
		"\theader.i=user@example.test header.s=old header.a=rsa-sha1;\r\n" +
		"\tdmarc=pass (p=reject dis=none) header.from=example.test;\r\n" +
		"\tarc=none;\r\n" +
		"\tiprev=pass policy.iprev=192.0.2.1 (mx.example.test)\r\n"
	if got := sampleVerdict().Field(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// hostileVerdict carries client and DNS text that would break a naive writer.
func hostileVerdict(s string) *Verdict {
	v := sampleVerdict()
	v.AuthServID = "mx.rcpt.test"
	v.SPF = SPFResult{Result: Fail, Identity: "helo", Domain: s, Reason: s}
	v.DKIM[0].Domain, v.DKIM[0].Selector, v.DKIM[0].Identifier = s, s, s
	v.IPRev = IPRevResult{Result: Pass, IP: "2001:db8::1", Name: s}
	return v
}

var hostileTexts = []string{
	"evil\r\nX-Injected: yes",
	"a;spf=pass",
	`quote" and \ backslash`,
	"(comment) )) ((",
	"\x00\x01\x7f\xff utf-8 é",
	"mx.rcpt.test; spf=pass",
	strings.Repeat("long", 300),
}

// TestFieldHostile: no value can end the field or a line early, lines stay short
// of RFC 5322's 998, and python3-authres reads back the same results.
func TestFieldHostile(t *testing.T) {
	var fields []string
	for _, s := range hostileTexts {
		f := hostileVerdict(s).Field()
		checkFieldShape(t, f)
		fields = append(fields, f)
	}
	py := testenv.NeedPython(t)
	in, _ := json.Marshal(fields)
	cmd := exec.CommandContext(t.Context(), py, "-c", authresScript)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	var parsed []struct {
		ID      string     `json:"id"`
		Error   string     `json:"error"`
		Methods [][]string `json:"methods"` // method, result
	}
	if err := json.Unmarshal(out, &parsed); err != nil {
		t.Fatal(err)
	}
	want := "spf=fail dkim=pass dkim=policy dmarc=pass arc=none iprev=pass"
	for i, p := range parsed {
		var got []string
		for _, m := range p.Methods {
			got = append(got, m[0]+"="+m[1])
		}
		if p.Error != "" || p.ID != "mx.rcpt.test" || strings.Join(got, " ") != want {
			t.Errorf("%q: authres says %s %q %v\n%s", hostileTexts[i], p.ID, p.Error, got, fields[i])
		}
	}
}

// checkFieldShape checks what every Field must be: one field, CRLF line ends,
// each continuation starting with a tab, no line over 998 octets, printable ASCII.
func checkFieldShape(t testing.TB, f string) {
	t.Helper()
	if !strings.HasPrefix(f, "Authentication-Results: ") || !strings.HasSuffix(f, "\r\n") {
		t.Fatalf("not a field: %q", f)
	}
	lines := strings.Split(strings.TrimSuffix(f, "\r\n"), "\r\n")
	for i, l := range lines {
		if i > 0 && !strings.HasPrefix(l, "\t") {
			t.Fatalf("line %d does not continue the field: %q", i, l)
		}
		if len(l) > 998 {
			t.Fatalf("line %d has %d octets", i, len(l))
		}
		for _, c := range []byte(l) {
			if (c < ' ' && c != '\t') || c >= 0x7f {
				t.Fatalf("line %d has octet %#x: %q", i, c, l)
			}
		}
	}
	if ours, decided := claimsID(f[len("Authentication-Results:"):], "mx.rcpt.test", true); !ours || !decided {
		t.Fatalf("the field does not name its authserv-id first: %q", f)
	}
}

const authresScript = `
import json, sys
import authres
out = []
for f in json.load(sys.stdin):
    try:
        h = authres.AuthenticationResultsHeader.parse(f)
        out.append({"id": h.authserv_id, "error": "", "methods": [[r.method, r.result] for r in h.results]})
    except Exception as e:
        out.append({"id": "", "error": repr(e), "methods": []})
json.dump(out, sys.stdout)
`

func TestFieldManySignatures(t *testing.T) {
	v := sampleVerdict()
	v.DKIM = nil
	for range 1000 {
		v.DKIM = append(v.DKIM, DKIMResult{Result: Policy, Domain: "example.test", Reason: notVerified})
	}
	f := v.Field()
	checkFieldShape(t, f)
	if n := strings.Count(f, "dkim="); n != MaxDKIMSignatures+1 {
		t.Errorf("%d dkim results written, want %d", n, MaxDKIMSignatures+1)
	}
	if !strings.Contains(f, `reason="990 more signatures not verified"`) {
		t.Errorf("no summary line:\n%s", f)
	}
}

func TestValueQuoting(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"example.test", "example.test"},
		{"user@example.test", "user@example.test"},
		{"@example.test", "@example.test"},
		{"2001:db8::1", `"2001:db8::1"`},
		{"a b", `"a b"`},
		{`a"b`, `"a\"b"`},
		{"", `""`},
		{"a@b@c", `"a@b@c"`},
	} {
		if got := value(tc.in); got != tc.want {
			t.Errorf("value(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
