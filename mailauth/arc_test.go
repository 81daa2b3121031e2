package mailauth

import (
	"fmt"
	"strings"
	"testing"
)

// offlineVerifier asks a DNS server on loopback that knows no name: every lookup is
// NXDOMAIN, nothing leaves the machine.
func offlineVerifier(t testing.TB) *Verifier {
	t.Helper()
	z := startZoneServer(t)
	return &Verifier{Resolver: NewResolver(z.Addr), AuthServID: fixtureID}
}

func arcFields(i int, cv string) string {
	return fmt.Sprintf("ARC-Seal: i=%d; cv=%s; a=rsa-sha256; d=fwd.test; s=s; b=AAAA\r\n"+
		"ARC-Message-Signature: i=%d; a=rsa-sha256; c=relaxed/relaxed; d=fwd.test; s=s; h=from; bh=AAAA; b=AAAA\r\n"+
		"ARC-Authentication-Results: i=%d; fwd.test; spf=pass\r\n", i, cv, i, i)
}

// TestARCStructure: chains that fail before any signature is checked, and their
// reasons. (Signed chains are in TestVerifyAgainstSigners.)
func TestARCStructure(t *testing.T) {
	v := offlineVerifier(t)
	for _, tc := range []struct {
		name, header string
		want         Result
		inst         int
		why          string
	}{
		{"no ARC", "", None, 0, ""},
		{"i=2 without i=1", arcFields(2, "pass"), Fail, 2, "incomplete"},
		{"i=1 says pass", arcFields(1, "pass"), Fail, 1, "cv=pass"},
		{"i=2 says none", arcFields(1, "none") + arcFields(2, "none"), Fail, 2, "cv=none"},
		{"newest says fail", arcFields(1, "none") + arcFields(2, "fail"), Fail, 2, "cv=fail"},
		{"two seals of i=1", arcFields(1, "none") + "ARC-Seal: i=1; cv=none; a=rsa-sha256; d=x.test; s=s; b=AA\r\n", Fail, 1, "two"},
		{"i=51", arcFields(51, "pass"), Fail, 1, "instance"},
		{"i=0", arcFields(0, "none"), Fail, 1, "instance"},
		{"i=abc", strings.ReplaceAll(arcFields(1, "none"), "i=1", "i=abc"), Fail, 1, "instance"},
		{"malformed seal", "ARC-Seal: i=1; cv=none; garbage\r\n" + arcFields(1, "none")[strings.Index(arcFields(1, "none"), "ARC-Message"):], Fail, 1, "tag"},
		{"missing AAR", strings.Join(strings.SplitAfter(arcFields(1, "none"), "\r\n")[:2], ""), Fail, 1, "incomplete"},
		{"no key published", arcFields(1, "none"), Fail, 1, "i=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.header + "From: a@example.test\r\n\r\nbody\r\n"
			got := v.Verify(t.Context(), conn(), []byte(msg)).ARC
			if got.Result != tc.want || got.Instances != tc.inst || !strings.Contains(got.Reason, tc.why) {
				t.Errorf("got %+v, want %s i=%d reason with %q", got, tc.want, tc.inst, tc.why)
			}
		})
	}
}

// TestARCFiftyHops: the most instances RFC 8617 allows are read and checked
// (each seal's key is looked up), and verification stays bounded.
func TestARCFiftyHops(t *testing.T) {
	var b strings.Builder
	b.WriteString(arcFields(1, "none"))
	for i := 2; i <= MaxARCInstances; i++ {
		b.WriteString(arcFields(i, "pass"))
	}
	v := offlineVerifier(t)
	got := v.Verify(t.Context(), conn(), []byte(b.String()+"From: a@example.test\r\n\r\nx\r\n")).ARC
	if got.Result != Fail || got.Instances != MaxARCInstances {
		t.Errorf("got %+v", got)
	}
}
