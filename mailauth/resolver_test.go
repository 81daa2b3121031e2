package mailauth

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd/internal/testenv"
)

func dnsErr(t *testing.T, err error) *net.DNSError {
	t.Helper()
	var de *net.DNSError
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T) is not a *net.DNSError", err, err)
	}
	if _, bare := err.(*net.DNSError); !bare {
		t.Fatalf("error %v is wrapped: the SPF library asserts the bare type", err)
	}
	return de
}

// TestDNSClientRecords asks a real nsd for each record type the checks use.
func TestDNSClientRecords(t *testing.T) {
	testenv.Need(t, "nsd")
	long := strings.Repeat("k", 600) // more than one 255-octet string
	z := testenv.Zone{Origin: "res.test."}
	z.TXT("@", "v=spf1 -all").TXT("long", long).
		Add("@", "A", "192.0.2.1").Add("@", "AAAA", "2001:db8::1").
		Add("@", "MX", "20 mx2.res.test.").Add("@", "MX", "10 mx1.res.test.").
		Add("alias", "CNAME", "res.test.").Add("v4only", "A", "192.0.2.9")
	ptr := testenv.Zone{Origin: "2.0.192.in-addr.arpa."}
	ptr.Add("1", "PTR", "res.test.")
	ptr6 := testenv.Zone{Origin: "8.b.d.0.1.0.0.2.ip6.arpa."}
	ptr6.Add("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0", "PTR", "v6.res.test.")
	n := testenv.StartNSD(t, z, ptr, ptr6)
	r := NewResolver(n.Addr)
	ctx := t.Context()

	if txt, err := r.LookupTXT(ctx, "res.test"); err != nil || !slices.Equal(txt, []string{"v=spf1 -all"}) {
		t.Errorf("TXT res.test: %q, %v", txt, err)
	}
	if txt, err := r.LookupTXT(ctx, "long.res.test."); err != nil || len(txt) != 1 || txt[0] != long {
		t.Errorf("TXT long: %d records, %v", len(txt), err)
	}
	if txt, err := r.LookupTXT(ctx, "alias.res.test"); err != nil || len(txt) != 1 {
		t.Errorf("TXT through a CNAME: %q, %v", txt, err)
	}
	addrs, err := r.LookupIPAddr(ctx, "res.test")
	if err != nil || len(addrs) != 2 {
		t.Errorf("A/AAAA: %v, %v", addrs, err)
	}
	if addrs, err := r.LookupIPAddr(ctx, "v4only.res.test"); err != nil || len(addrs) != 1 || !addrs[0].IP.Equal(net.ParseIP("192.0.2.9")) {
		t.Errorf("A only (AAAA no data): %v, %v", addrs, err)
	}
	mxs, err := r.LookupMX(ctx, "res.test")
	if err != nil || len(mxs) != 2 || mxs[0].Host != "mx1.res.test." || mxs[0].Pref != 10 {
		t.Errorf("MX: %v, %v", mxs, err)
	}
	if names, err := r.LookupAddr(ctx, "192.0.2.1"); err != nil || !slices.Equal(names, []string{"res.test."}) {
		t.Errorf("PTR v4: %q, %v", names, err)
	}
	if names, err := r.LookupAddr(ctx, "2001:db8::1"); err != nil || !slices.Equal(names, []string{"v6.res.test."}) {
		t.Errorf("PTR v6: %q, %v", names, err)
	}
	for _, name := range []string{"nx.res.test", "v4only.res.test"} { // NXDOMAIN, then no data
		_, err := r.LookupTXT(ctx, name)
		if de := dnsErr(t, err); !de.IsNotFound || de.IsTemporary || de.IsTimeout {
			t.Errorf("TXT %s: %+v, want IsNotFound", name, de)
		}
	}
	// A name outside every zone is REFUSED by nsd: a temporary error.
	_, err = r.LookupTXT(ctx, "elsewhere.example")
	if de := dnsErr(t, err); !de.IsTemporary || de.IsNotFound {
		t.Errorf("REFUSED: %+v, want IsTemporary", de)
	}
}

// TestDNSClientFailures covers what nsd cannot be made to do: timeouts, SERVFAIL,
// truncation, spoofed answers, CNAME loops, names that cannot be asked.
func TestDNSClientFailures(t *testing.T) {
	z := startZoneServer(t)
	z.txt("ok.test", "hello")
	z.setTimeout("slow.test")
	z.setServfail("broken.test")
	z.cname("loop.test", "loop.test")
	ctx := t.Context()
	c := &DNSClient{Server: z.Addr, Timeout: 200 * time.Millisecond, Attempts: 2}

	start := time.Now()
	_, err := c.LookupTXT(ctx, "slow.test")
	if de := dnsErr(t, err); !de.IsTimeout || !de.Temporary() {
		t.Errorf("timeout: %+v", de)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("two 200 ms attempts took %v", d)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = (&DNSClient{Server: z.Addr}).LookupTXT(short, "slow.test")
	if de := dnsErr(t, err); !de.IsTimeout {
		t.Errorf("context deadline: %+v", de)
	}
	_, err = c.LookupTXT(ctx, "broken.test")
	if de := dnsErr(t, err); !de.IsTemporary || de.IsNotFound || !strings.Contains(de.Err, "SERVFAIL") {
		t.Errorf("SERVFAIL: %+v", de)
	}
	_, err = c.LookupTXT(ctx, "loop.test")
	if de := dnsErr(t, err); de.IsTemporary || de.IsNotFound {
		t.Errorf("CNAME loop: %+v, want a permanent error", de)
	}
	for _, bad := range []string{"", "a..b", strings.Repeat("x", 64) + ".test", strings.Repeat("x.", 130)} {
		_, err = c.LookupTXT(ctx, bad)
		if de := dnsErr(t, err); !de.IsNotFound {
			t.Errorf("name %q: %+v, want not found", bad, de)
		}
	}

	z.mu.Lock()
	z.truncate, z.spoof = true, true
	z.mu.Unlock()
	if txt, err := c.LookupTXT(ctx, "ok.test"); err != nil || !slices.Equal(txt, []string{"hello"}) {
		t.Errorf("truncated UDP answer after a spoofed one: %q, %v", txt, err)
	}
}

// TestDNSClientNoServer: a port where nothing listens is a temporary error, fast.
func TestDNSClientNoServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	_, err = (&DNSClient{Server: addr, Timeout: 300 * time.Millisecond}).LookupTXT(t.Context(), "x.test")
	if de := dnsErr(t, err); !de.Temporary() {
		t.Errorf("closed port: %+v", de)
	}
}

// TestVerifierTimeout: a DNS server that never answers gives temperror for every
// check, within the Verifier's Timeout.
func TestVerifierTimeout(t *testing.T) {
	hole := testenv.StartBlackhole(t)
	v := &Verifier{Resolver: NewResolver(hole), AuthServID: fixtureID, Timeout: 500 * time.Millisecond}
	msg := "DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=sel; h=from; bh=AAAA; b=AAAA\r\n" +
		"From: a@example.test\r\n\r\nbody\r\n"
	start := time.Now()
	vd := v.Verify(t.Context(), conn(), []byte(msg))
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Verify took %v with a 500 ms Timeout", d)
	}
	for what, r := range map[string]Result{"spf": vd.SPF.Result, "dkim": vd.DKIM[0].Result, "dmarc": vd.DMARC.Result, "iprev": vd.IPRev.Result} {
		if r != TempError {
			t.Errorf("%s = %s, want temperror\n%s", what, r, vd.Field())
		}
	}
}
