package mailauth

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/midismtp/smtpd/internal/testenv"
)

// canonicalBodies are bodies whose canonical forms differ in the corners: trailing
// empty lines, whitespace-only lines, no final line end, bare LF, lone CR.
var canonicalBodies = []string{
	"",
	"\r\n",
	"\r\n\r\n\r\n",
	"a",
	"a\r\n",
	"a\r\n\r\n\r\n",
	" \t a  b \t\r\n",
	"line\r\n \t \r\n\r\n",
	"x \r\n\r\ny\t\r\n \r\n",
	"bare\nlf\n\n",
	"lone\rcr\r\n",
	"ends with cr\r",
	"tab\tin\t\tline\r\n  \r\nend",
	"\r\n\r\ntext after empty lines\r\n",
	strings.Repeat("long line ", 500) + "\r\n",
}

// canonicalFields are header fields, as received, with folding and odd spacing.
var canonicalFields = []string{
	"Subject: hello\r\n",
	"SUBJECT:  hello   world  \r\n",
	"Subject:\thello\r\n\t world\r\n",
	"X-Empty:\r\n",
	"X-Spaces:    \r\n",
	"To: a@example.test,\r\n  b@example.test ,\r\n\tc@example.test\r\n",
	"DKIM-Signature: v=1; a=rsa-sha256; b=abc\r\n def; bh=xyz\r\n",
}

// TestCanonicalizationAgainstDkimpy holds our canonicalization to dkimpy's own
// (dkim.canonicalization), for bodies written whole and in one-byte pieces.
func TestCanonicalizationAgainstDkimpy(t *testing.T) {
	py := testenv.NeedPython(t)
	in, _ := json.Marshal(map[string]any{"bodies": canonicalBodies, "fields": canonicalFields})
	cmd := exec.CommandContext(t.Context(), py, "-c", dkimpyCanonScript)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var want struct {
		Bodies [][2]string `json:"bodies"` // simple, relaxed
		Fields [][2]string `json:"fields"`
	}
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	for i, body := range canonicalBodies {
		for j, relaxed := range []bool{false, true} {
			whole := canonBody([]byte(body), relaxed, 1<<20)
			bytewise := canonBody([]byte(body), relaxed, 1)
			if whole != want.Bodies[i][j] || bytewise != whole {
				t.Errorf("body %q relaxed=%v: ours %q (bytewise %q), dkimpy %q", body, relaxed, whole, bytewise, want.Bodies[i][j])
			}
		}
	}
	for i, raw := range canonicalFields {
		f := parseHeader([]byte(raw))[0]
		for j, relaxed := range []bool{false, true} {
			if got := canonHeader(f, relaxed); got != want.Fields[i][j] {
				t.Errorf("field %q relaxed=%v: ours %q, dkimpy %q", raw, relaxed, got, want.Fields[i][j])
			}
		}
	}
}

// canonBody canonicalizes body written in pieces of n bytes.
func canonBody(body []byte, relaxed bool, n int) string {
	var out bytes.Buffer
	c := newBodyCanon(&out, relaxed, -1)
	for len(body) > 0 {
		k := min(n, len(body))
		c.Write(body[:k])
		body = body[k:]
	}
	c.Close()
	return out.String()
}

// dkimpyCanonScript canonicalizes with dkimpy: bodies as dkimpy's rfc822_parse
// leaves them (line ends made CRLF), fields split at the first colon.
const dkimpyCanonScript = `
import json, re, sys
from dkim.canonicalization import Simple, Relaxed
req = json.load(sys.stdin)
out = {"bodies": [], "fields": []}
for b in req["bodies"]:
    body = b"\r\n".join(re.split(b"\r?\n", b.encode("latin-1")))
    out["bodies"].append([Simple.canonicalize_body(body).decode("latin-1"), Relaxed.canonicalize_body(body).decode("latin-1")])
for f in req["fields"]:
    name, value = f.encode().split(b":", 1)
    s = Simple.canonicalize_headers([(name, value)])[0]
    r = Relaxed.canonicalize_headers([(name, value)])[0]
    out["fields"].append([(s[0] + b":" + s[1]).decode(), (r[0] + b":" + r[1]).decode()])
json.dump(out, sys.stdout)
`

func TestBodyCanonLimit(t *testing.T) {
	for _, tc := range []struct {
		body    string
		relaxed bool
		limit   int64
		want    string
	}{
		{"hello world\r\n", false, 5, "hello"},
		{"hello world\r\n", false, 0, ""},
		{"a  b\r\n\r\n", true, 3, "a b"},
		{"a\r\n", false, 100, "a\r\n"},
	} {
		var out bytes.Buffer
		c := newBodyCanon(&out, tc.relaxed, tc.limit)
		c.Write([]byte(tc.body))
		c.Close()
		if out.String() != tc.want {
			t.Errorf("%q l=%d: %q, want %q", tc.body, tc.limit, out.String(), tc.want)
		}
	}
}

func TestRemoveB(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"X: a=1; b=abc; bh=x\r\n", "X: a=1; b=; bh=x\r\n"},
		{"X: a=1; bh=x; b=abc\r\n def\r\n", "X: a=1; bh=x; b=\r\n"},
		{"X: b = abc ;c=1\r\n", "X: b =;c=1\r\n"},
		{"X: bh=1\r\n", "X: bh=1\r\n"},
		{"no colon", "no colon"},
	} {
		if got := removeB(tc.in); got != tc.want {
			t.Errorf("removeB(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// BenchmarkBodyCanon is our relaxed body canonicalization with SHA-256 over 1 MiB,
// to set beside go-msgauth's (BenchmarkVerify).
func BenchmarkBodyCanon(b *testing.B) {
	body := []byte(strings.Repeat("The quick brown fox jumps over the lazy dog, again and again.  \r\n", 16<<10))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		h := sha256.New()
		c := newBodyCanon(h, true, -1)
		c.Write(body)
		c.Close()
		h.Sum(nil)
	}
}
