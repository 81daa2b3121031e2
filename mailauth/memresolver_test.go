package mailauth_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/midismtp/smtpd/mailauth"
)

// memResolver answers from maps: the examples and benchmarks use it to run without
// a DNS server (the behaviour tests ask nsd). Names are lowercase, without the final
// dot.
type memResolver struct {
	txt map[string][]string
	ptr map[string][]string
	ip  map[string][]net.IPAddr
}

var _ mailauth.Resolver = (*memResolver)(nil)

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func key(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

func (m *memResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	if r, ok := m.txt[key(name)]; ok {
		return r, nil
	}
	return nil, notFound(name)
}

func (m *memResolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	if r, ok := m.ptr[addr]; ok {
		return r, nil
	}
	return nil, notFound(addr)
}

func (m *memResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	if r, ok := m.ip[key(host)]; ok {
		return r, nil
	}
	return nil, notFound(host)
}

func (m *memResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, notFound(name)
}

// exampleKey is example.org's DKIM key (selector "ed"), made from a fixed seed.
var exampleKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// exampleDNS is the DNS of the examples: example.org publishes SPF for 127.0.0.1,
// its ed25519 key and p=reject; 127.0.0.1 is mx.example.org and back.
func exampleDNS() *memResolver {
	pub := base64.StdEncoding.EncodeToString(exampleKey.Public().(ed25519.PublicKey))
	return &memResolver{
		txt: map[string][]string{
			"example.org":               {"v=spf1 ip4:127.0.0.1 -all"},
			"ed._domainkey.example.org": {"v=DKIM1; k=ed25519; p=" + pub},
			"_dmarc.example.org":        {"v=DMARC1; p=reject"},
			"bounces.example.com":       {"v=spf1 ?all"},
			"ed._domainkey.example.com": {"v=DKIM1; k=ed25519; p=" + pub},
			"_dmarc.example.com":        {"v=DMARC1; p=none"},
		},
		ptr: map[string][]string{"127.0.0.1": {"mx.example.org."}},
		ip:  map[string][]net.IPAddr{"mx.example.org": {{IP: net.ParseIP("127.0.0.1")}}},
	}
}

// signed returns msg with a DKIM signature of domain (selector "ed", relaxed/relaxed).
func signed(msg, domain string) string {
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{
		Domain: domain, Selector: "ed", Signer: exampleKey,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		Expiration: time.Now().Add(time.Hour),
	})
	if err != nil {
		panic(err)
	}
	return out.String()
}

// summary is a verdict's result words, one per method.
func summary(v *mailauth.Verdict) string {
	words := []string{"spf=" + string(v.SPF.Result)}
	for _, d := range v.DKIM {
		words = append(words, "dkim="+string(d.Result))
	}
	if len(v.DKIM) == 0 {
		words = append(words, "dkim=none")
	}
	return strings.Join(append(words, "dmarc="+string(v.DMARC.Result), "arc="+string(v.ARC.Result),
		"iprev="+string(v.IPRev.Result)), " ")
}
