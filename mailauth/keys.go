package mailauth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
)

// This file holds the DKIM key records of one message: looked up once each (DKIM
// and ARC ask for the same names), parsed (RFC 6376 3.6.1), and used to verify
// ARC signatures.

// txtCache looks up each TXT name once per message, at the first ask, and keeps the
// answer for every later one. Lookups run under the context given at the first ask.
type txtCache struct {
	r       Resolver
	mu      sync.Mutex
	entries map[string]*txtEntry
}

type txtEntry struct {
	done chan struct{}
	txts []string
	err  error
}

func newTXTCache(r Resolver) *txtCache {
	return &txtCache{r: r, entries: make(map[string]*txtEntry)}
}

// start begins looking name up, unless that was done already.
func (c *txtCache) start(ctx context.Context, name string) *txtEntry {
	key := strings.ToLower(strings.TrimSuffix(name, "."))
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		return e
	}
	e := &txtEntry{done: make(chan struct{})}
	c.entries[key] = e
	go func() {
		defer close(e.done)
		e.txts, e.err = lookupTXT(ctx, c.r, key)
	}()
	return e
}

// get returns the TXT records of name, looking them up unless started before.
func (c *txtCache) get(ctx context.Context, name string) ([]string, error) {
	e := c.start(ctx, name)
	<-e.done
	return e.txts, e.err
}

// lookupTXT asks r, rooted, and keeps the error a *net.DNSError.
func lookupTXT(ctx context.Context, r Resolver, name string) ([]string, error) {
	txts, err := r.LookupTXT(ctx, name+".")
	return txts, dnsError(ctx, name, err)
}

// dnsError makes err a *net.DNSError, not wrapped, as the SPF and DKIM libraries
// need to tell "not found" from "temporary": a wrapped one is unwrapped, anything
// else (a context error of a custom Resolver) is temporary.
func dnsError(ctx context.Context, name string, err error) error {
	if err == nil {
		return nil
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return de
	}
	var ne net.Error
	timeout := ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout()
	return &net.DNSError{Err: err.Error(), Name: name, IsTimeout: timeout, IsTemporary: true}
}

// keyName is where the key of selector s in domain d is published.
func keyName(s, d string) string { return s + "._domainkey." + d }

// dkimKey is a parsed DKIM key record.
type dkimKey struct {
	pub    crypto.PublicKey // *rsa.PublicKey or ed25519.PublicKey
	kind   string           // "rsa" or "ed25519"
	bits   int              // RSA modulus size
	hashes []string         // h=, nil: any
}

var (
	errKeyRevoked = errors.New("key revoked (empty p=)")
	errKeyMissing = errors.New("no key record")
)

// fetchKey returns the one key record at name, parsed; a temporary DNS error is
// returned as it is (a *net.DNSError).
func fetchKey(ctx context.Context, cache *txtCache, name string) (*dkimKey, error) {
	txts, err := cache.get(ctx, name)
	if err != nil {
		return nil, err
	}
	switch len(txts) {
	case 0:
		return nil, errKeyMissing
	case 1:
		return parseKey(txts[0])
	default:
		return nil, errors.New("more than one key record")
	}
}

// parseKey parses a DKIM key record (v=DKIM1; k=rsa; p=...).
func parseKey(rec string) (*dkimKey, error) {
	tags, err := parseTagList(rec)
	if err != nil {
		return nil, fmt.Errorf("key record: %w", err)
	}
	if v, ok := tags.get("v"); ok && v != "DKIM1" {
		return nil, errors.New("key record: v= is not DKIM1")
	}
	p, ok := tags.get("p")
	if !ok {
		return nil, errors.New("key record: no p=")
	}
	if p = stripFWS(p); p == "" {
		return nil, errKeyRevoked
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, errors.New("key record: p= is not base64")
	}
	k := &dkimKey{kind: strings.ToLower(tags.value("k"))}
	if h, ok := tags.get("h"); ok {
		k.hashes = splitColonList(h)
	}
	switch k.kind {
	case "", "rsa":
		k.kind = "rsa"
		pub, err := parseRSAKey(der)
		if err != nil {
			return nil, err
		}
		k.pub, k.bits = pub, pub.N.BitLen()
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, errors.New("key record: an ed25519 key is 32 octets")
		}
		k.pub = ed25519.PublicKey(der)
	default:
		return nil, fmt.Errorf("key record: unknown key type k=%.20s", k.kind)
	}
	return k, nil
}

// parseRSAKey reads SubjectPublicKeyInfo or, as RFC 6376 erratum 3017 allows,
// RSAPublicKey.
func parseRSAKey(der []byte) (*rsa.PublicKey, error) {
	if pub, err := x509.ParsePKIXPublicKey(der); err == nil {
		if rk, ok := pub.(*rsa.PublicKey); ok {
			return rk, nil
		}
		return nil, errors.New("key record: not an RSA key")
	}
	rk, err := x509.ParsePKCS1PublicKey(der)
	if err != nil {
		return nil, errors.New("key record: unreadable RSA key")
	}
	return rk, nil
}

// verifySig checks sig over the SHA-256 hash of the signed data with algorithm
// algo ("rsa-sha256" or "ed25519-sha256", RFC 8463), refusing RSA keys under
// 1024 bits (RFC 8301).
func (k *dkimKey) verifySig(algo string, hashed, sig []byte) error {
	kind, hash, _ := strings.Cut(algo, "-")
	if hash != "sha256" {
		return fmt.Errorf("algorithm %.20s refused (RFC 8301)", algo)
	}
	if kind != k.kind {
		return fmt.Errorf("a=%.20s does not match the key type %s", algo, k.kind)
	}
	if k.hashes != nil && !slices.Contains(k.hashes, "sha256") {
		return errors.New("the key does not allow sha256")
	}
	switch pub := k.pub.(type) {
	case *rsa.PublicKey:
		if k.bits < 1024 {
			return fmt.Errorf("RSA key of %d bits refused (RFC 8301)", k.bits)
		}
		if rsa.VerifyPKCS1v15(pub, crypto.SHA256, hashed, sig) != nil {
			return errors.New("signature did not verify")
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(pub, hashed, sig) {
			return errors.New("signature did not verify")
		}
	}
	return nil
}

// sum256 is SHA-256, the one hash RFC 8301 leaves.
func sum256(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
