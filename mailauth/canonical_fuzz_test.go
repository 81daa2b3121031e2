package mailauth

import (
	"strings"
	"testing"
)

// FuzzCanonical: body canonicalization is the same in any pieces; relaxed output
// has no WSP run or WSP at a line end; simple keeps content lines as they are; both
// end in CRLF unless empty (relaxed).
func FuzzCanonical(f *testing.F) {
	for _, s := range canonicalBodies {
		f.Add([]byte(s), uint8(2))
	}
	f.Fuzz(func(t *testing.T, body []byte, step uint8) {
		for _, relaxed := range []bool{false, true} {
			whole := canonBody(body, relaxed, len(body)+1)
			if got := canonBody(body, relaxed, int(step)+1); got != whole {
				t.Fatalf("relaxed=%v: pieces %q, whole %q", relaxed, got, whole)
			}
			if whole != "" && !strings.HasSuffix(whole, "\r\n") || !relaxed && whole == "" {
				t.Fatalf("relaxed=%v: %q", relaxed, whole)
			}
			if strings.HasSuffix(whole, "\r\n\r\n") {
				t.Fatalf("trailing empty line kept: %q", whole)
			}
			if relaxed && (strings.Contains(whole, "  ") || strings.Contains(whole, " \r\n") || strings.ContainsRune(whole, '\t')) {
				t.Fatalf("relaxed: %q", whole)
			}
		}
		f := field{name: "X", raw: "X:" + string(body) + "\r\n"}
		if h := canonHeader(f, true); strings.Contains(h, "  ") || strings.Count(h, "\r\n") != 1 && !strings.ContainsAny(string(body), "\r\n") {
			t.Fatalf("relaxed header %q", h)
		}
	})
}
