package mailauth

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/midismtp/smtpd/internal/testenv"
)

// Bad input gets a verdict, never a panic, a hang or unbounded memory.

func TestHostileMessages(t *testing.T) {
	z := startZoneServer(t)
	z.txt("example.test", "v=spf1 include:loop.example.test -all")
	z.txt("loop.example.test", "v=spf1 include:example.test -all") // recursive includes
	z.txt("sel._domainkey.example.test", "v=DKIM1; p=%%%not base64")
	z.txt("_dmarc.example.test", "v=DMARC1; p=reject")
	v := &Verifier{Resolver: &DNSClient{Server: z.Addr, Timeout: time.Second}, AuthServID: fixtureID}
	sig := "DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=sel; h=from; bh=AAAA; b=AAAA\r\n"
	from := "From: a@example.test\r\n"
	huge := "X-Big: " + strings.Repeat("x", DefaultMaxHeaderBytes) + "\r\n"
	for _, tc := range []struct {
		name, msg string
		check     func(*Verdict) string
	}{
		{"empty message", "", dkimIs("", PermError)},
		{"no empty line", from + "Subject: x", dkimIs("", Pass)},
		{"truncated mid-header", sig[:40], dkimIs("permerror", PermError)},
		{"1000 signatures", strings.Repeat(sig, 1000) + from + "\r\nbody\r\n", func(vd *Verdict) string {
			if len(vd.DKIM) != 1000 || vd.DKIM[0].Result != PermError || vd.DKIM[999].Result != Policy || vd.DKIM[10].Result != Policy {
				return fmt.Sprintf("%d results, first %+v, 11th %+v", len(vd.DKIM), vd.DKIM[0], vd.DKIM[10])
			}
			return ""
		}},
		{"header over the limit", sig + from + huge + "\r\nbody\r\n", func(vd *Verdict) string {
			if vd.DKIM[0].Result != PermError || vd.DMARC.Result != PermError || !strings.Contains(vd.DMARC.Reason, "over") {
				return vd.Field()
			}
			return ""
		}},
		{"one huge line", from + "Subject: " + strings.Repeat("y", 1<<20), dkimIs("", PermError)},
		{"malformed tag list", strings.Replace(sig, "v=1;", "v=1; garbage;", 1) + from + "\r\n", dkimIs("permerror", Pass)},
		{"duplicate tag", strings.Replace(sig, "v=1;", "v=1; v=1;", 1) + from + "\r\n", dkimIs("permerror", Pass)},
		{"broken base64 b=", strings.Replace(sig, "b=AAAA", "b=!!!!", 1) + from + "\r\n", dkimIs("permerror", Pass)},
		{"broken base64 key", sig + from + "\r\nx\r\n", dkimIs("permerror", Pass)},
		{"control characters", "From: a@example.test\x00\x01\r\nSubject: \xff\xfe\r\n\r\n\x00body", dkimIs("", PermError)},
		{"bare LF message", "From: a@example.test\nDKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=sel; h=from; bh=AAAA; b=AAAA\n\nbody\n", dkimIs("permerror", Pass)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vd := v.Verify(t.Context(), conn(), []byte(tc.msg))
			if vd.SPF.Result != PermError {
				t.Errorf("spf %s (%s), want permerror for the include loop", vd.SPF.Result, vd.SPF.Reason)
			}
			if msg := tc.check(vd); msg != "" {
				t.Error(msg)
			}
			checkFieldShape(t, vd.Field())
		})
	}
}

// dkimIs checks the DKIM results (comma-separated; "" none) and the DMARC result.
// With SPF permerror, DMARC can only pass through DKIM.
func dkimIs(want string, dmarc Result) func(*Verdict) string {
	return func(vd *Verdict) string {
		if got := dkimWordList(vd.DKIM); got != want {
			return fmt.Sprintf("dkim %q, want %q: %+v", got, want, vd.DKIM)
		}
		if dmarc == Pass { // the From is fine: DMARC is evaluated, and fails
			dmarc = Fail
		}
		if vd.DMARC.Result != dmarc {
			return fmt.Sprintf("dmarc %s (%s), want %s", vd.DMARC.Result, vd.DMARC.Reason, dmarc)
		}
		return ""
	}
}

// TestStreamingPieces: a message written in pieces of every size gets the verdict
// it gets whole, for signed messages with DKIM and ARC.
func TestStreamingPieces(t *testing.T) {
	f := newFixture(t)
	msgs := f.sign(t, testenv.SignJob{ID: "arc", Steps: []testenv.Step{
		testenv.DKIM(f.keys.RSA2048, "rsa2048", "example.test"),
		testenv.DKIM(f.keys.Ed25519, "ed25519", "example.test"),
		testenv.ARC(f.keys.RSA2048, "rsa2048", "fwd.test", "hop1.fwd.test")}})
	msg := msgs["arc"]
	v := f.verifier()
	whole := v.Verify(t.Context(), conn(), msg).Field()
	if !strings.Contains(whole, "arc=pass") || strings.Count(whole, "dkim=pass") != 2 {
		t.Fatalf("whole message:\n%s", whole)
	}
	for _, n := range []int{1, 2, 3, 7, 64, 1000} {
		c := v.Begin(t.Context(), conn())
		for b := msg; len(b) > 0; {
			k := min(n, len(b))
			c.Write(b[:k])
			b = b[k:]
		}
		if got := c.Close().Field(); got != whole {
			t.Errorf("pieces of %d:\n%s\nwhole:\n%s", n, got, whole)
		}
	}
}

// TestNoGoroutineLeft: a Check that is closed, or abandoned while its context
// ends, leaves no goroutine behind.
func TestNoGoroutineLeft(t *testing.T) {
	v := offlineVerifier(t)
	msg := []byte("DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=sel; h=from; bh=AAAA; b=AAAA\r\n" +
		"From: a@example.test\r\n\r\n" + strings.Repeat("body\r\n", 1000))
	before := runtime.NumGoroutine()
	for range 20 {
		v.Verify(t.Context(), conn(), msg)
	}
	ctx, cancel := contextWithTimeout(t, 10000)
	c := v.Begin(ctx, conn())
	c.Write(msg[:200]) // the header and part of the body; never closed
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestWriteDoesNotWaitForDNS: while a DKIM key is looked up (here 1 s late), the
// body is taken at once, up to queueBytes; the verdict comes when the key does.
func TestWriteDoesNotWaitForDNS(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	z := startZoneServer(t)
	z.txt("slow._domainkey.example.test", "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)))
	z.setDelay("slow._domainkey.example.test", time.Second)
	var signed bytes.Buffer
	body := strings.Repeat("a line of the body\r\n", (queueBytes-64<<10)/20)
	err := dkim.Sign(&signed, strings.NewReader("From: a@example.test\r\n\r\n"+body),
		&dkim.SignOptions{Domain: "example.test", Selector: "slow", Signer: priv})
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Resolver: NewResolver(z.Addr), AuthServID: fixtureID}
	c := v.Begin(t.Context(), conn())
	start := time.Now()
	c.Write(signed.Bytes())
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Write of %d bytes took %v: it waited for the key", signed.Len(), d)
	}
	vd := c.Close()
	if time.Since(start) < time.Second || vd.DKIM[0].Result != Pass {
		t.Errorf("after %v: %s", time.Since(start), vd.Field())
	}
}

func TestSigTimes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct{ tags, want string }{
		{"t=1799999000; x=1800000100", ""},
		{"x=1799999999", "expired"},
		{"t=1800030000", ""}, // within the 10 hours a fast clock may be ahead
		{"t=1800040000", "future"},
		{"t=1799999000; x=1799998000", "expired"},
		{"t=1800000500; x=1800000400", "before"},
		{"", ""},
	} {
		tags, _ := parseTagList(tc.tags)
		if got := checkSigTimes(tags, now); tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.tags, got, tc.want)
		}
	}
}
