package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"strings"
	"time"
)

// selfSignedValidity is how long a generated certificate is valid, as in
// MidiSmtpServer.
const selfSignedValidity = 90 * 24 * time.Hour

// SelfSigned makes an in-memory ECDSA P-256 certificate valid from now-1h
// for 90 days (NotAfter is now+90d), with cn as Subject CN and san as SANs.
//
// SAN entries that parse as IPs (brackets allowed) become IP SANs, the others
// DNS SANs. The CN is also added as the first SAN, so that modern verifiers
// that ignore the CN accept it; duplicates and empty entries are dropped.
// An empty cn is replaced by "localhost.local" and a zero now by time.Now().
// The certificate is a leaf (not a CA) for server authentication; its Leaf
// field is set.
func SelfSigned(cn string, san []string, now time.Time) (tls.Certificate, error) {
	if now.IsZero() {
		now = time.Now()
	}
	cn = strings.TrimSpace(cn)
	if cn == "" {
		cn = fallbackCN
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		// SerialNumber nil: x509.CreateCertificate picks a random one.
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	names := make([]string, 0, len(san)+1)
	names = append(names, cn)
	names = append(names, san...)
	for _, name := range dedup(names) {
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, name)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: create self-signed certificate (CN=%q): %w", cn, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: parse self-signed certificate: %w", err)
	}
	return tls.Certificate{
		Certificate: [][]byte{der},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}
