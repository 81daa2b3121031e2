package mailauth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd/internal/testenv"
)

func loadRSA(t *testing.T, file string) *Sealer {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &Sealer{Domain: "fwd.test", Selector: "rsa2048", Signer: k}
}

func loadEd25519(t *testing.T, file string) *Sealer {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return &Sealer{Domain: "fwd.test", Selector: "ed25519", Signer: ed25519.NewKeyFromSeed(seed)}
}

// TestSealer: our ARC sets verify by us and by dkimpy's arc_verify, and dkimpy's
// arc_sign, forwarding a message we sealed, finds our chain valid (its
// ARC-Authentication-Results say arc=pass).
func TestSealer(t *testing.T) {
	f := newFixture(t)
	v := f.verifier()
	rsaSealer, edSealer := loadRSA(t, f.keys.RSA2048.File), loadEd25519(t, f.keys.Ed25519.File)
	hop := func(msg []byte, s *Sealer) []byte {
		t.Helper()
		set, err := s.Seal(msg, v.Verify(t.Context(), conn(), msg))
		if err != nil {
			t.Fatal(err)
		}
		checkSetShape(t, set)
		return append([]byte(set), msg...)
	}
	arcIs := func(msg []byte, want Result, inst int) {
		t.Helper()
		if got := v.Verify(t.Context(), conn(), msg).ARC; got.Result != want || got.Instances != inst {
			t.Errorf("ours: %+v, want %s i=%d\n%s", got, want, inst, msg)
		}
	}
	msg0 := f.sign(t, testenv.SignJob{ID: "dkim", Steps: []testenv.Step{testenv.DKIM(f.keys.RSA2048, "rsa2048", "example.test")}})["dkim"]
	msg1 := hop(msg0, rsaSealer)
	arcIs(msg1, Pass, 1)
	msg2 := f.sign(t, testenv.SignJob{ID: "hop2", Message: msg1, Steps: []testenv.Step{
		{Op: "arc", Key: f.keys.RSA1024.File, Selector: "rsa1024", Domain: "fwd.test", SrvID: "hop2.fwd.test"}}})["hop2"]
	if !bytes.Contains(msg2, []byte("ARC-Authentication-Results: i=2; hop2.fwd.test;")) || !bytes.Contains(msg2, []byte("arc=pass")) {
		t.Errorf("dkimpy's hop did not find our set valid:\n%s", msg2)
	}
	arcIs(msg2, Pass, 2)
	msg3 := hop(msg2, edSealer)
	arcIs(msg3, Pass, 3)
	tampered := bytes.Replace(msg1, []byte("Hello"), []byte("Jello"), 1)
	arcIs(tampered, Fail, 1)
	failedSet := hop(tampered, rsaSealer) // a broken chain is sealed with cv=fail
	arcIs(failedSet, Fail, 2)
	if _, err := rsaSealer.Seal(failedSet, v.Verify(t.Context(), conn(), failedSet)); err != errChainFailed {
		t.Errorf("sealing after cv=fail: %v", err)
	}

	answers := testenv.Ask(t, f.nsd.Addr, 2*time.Second, []testenv.Question{
		{ID: "one", Message: msg1, IP: fixtureIP, Helo: fixtureHelo, MailFrom: fixtureFrom},
		{ID: "two", Message: msg2, IP: fixtureIP, Helo: fixtureHelo, MailFrom: fixtureFrom},
		{ID: "tampered", Message: tampered, IP: fixtureIP, Helo: fixtureHelo, MailFrom: fixtureFrom},
	})
	for id, want := range map[string]string{"one": "pass", "two": "pass", "tampered": "fail"} {
		if got := answers[id].ARC; got.Result != want {
			t.Errorf("dkimpy on %s: %s (%s), want %s", id, got.Result, got.Reason, want)
		}
	}
}

// checkSetShape: three fields, ARC-Seal first, CRLF lines within 998 octets.
func checkSetShape(t *testing.T, set string) {
	t.Helper()
	fields := parseHeader([]byte(set))
	if len(fields) != 3 || !fields[0].is("ARC-Seal") || !fields[1].is("ARC-Message-Signature") || !fields[2].is("ARC-Authentication-Results") {
		t.Fatalf("set:\n%s", set)
	}
	for _, l := range strings.Split(strings.TrimSuffix(set, "\r\n"), "\r\n") {
		if len(l) > 998 || strings.ContainsAny(l, "\r\n") {
			t.Fatalf("line %q", l)
		}
	}
}

func TestSealerRefuses(t *testing.T) {
	small := &Sealer{Domain: "d.test", Selector: "s"}
	if _, err := small.Seal([]byte("From: a\r\n\r\n"), &Verdict{}); err == nil {
		t.Error("a Sealer without a Signer sealed")
	}
	var b strings.Builder
	b.WriteString(arcFields(1, "none"))
	for i := 2; i <= MaxARCInstances; i++ {
		b.WriteString(arcFields(i, "pass"))
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	s := &Sealer{Domain: "d.test", Selector: "s", Signer: priv}
	if _, err := s.Seal([]byte(b.String()+"From: a\r\n\r\n"), &Verdict{ARC: ARCResult{Result: Pass}}); err == nil {
		t.Error("a 51st set was added")
	}
}
