package testenv

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Key is a DKIM key pair made for a test: the private half in a file the signers read,
// the public half ready for a DNS record.
type Key struct {
	Name      string // "rsa2048", "rsa1024", "rsa512", "ed25519": also a handy selector
	Algorithm string // the k= tag: "rsa" or "ed25519"
	Bits      int
	// File is the private key as dkimpy and OpenDKIM read it: PKCS #1 PEM for RSA, the
	// base64 32-byte seed for ed25519 (what PyNaCl's SigningKey takes).
	File string
	// Public is the p= value: base64 of the DER SubjectPublicKeyInfo for RSA (what
	// opendkim-genkey publishes), of the raw 32-byte key for ed25519 (RFC 8463).
	Public string
	// PublicPKCS1 is, for RSA, base64 of the DER RSAPublicKey (RFC 6376 §3.6.1's own
	// wording for p=); empty for ed25519.
	PublicPKCS1 string
}

// Record is the key's DNS TXT record: "v=DKIM1; k=...; p=...".
func (k *Key) Record() string { return "v=DKIM1; k=" + k.Algorithm + "; p=" + k.Public }

// RecordPKCS1 is the record with p= in the RSAPublicKey form.
func (k *Key) RecordPKCS1() string { return "v=DKIM1; k=" + k.Algorithm + "; p=" + k.PublicPKCS1 }

// Revoked is the record of a revoked key of the same type: an empty p= (RFC 6376 §3.6.1).
func (k *Key) Revoked() string { return "v=DKIM1; k=" + k.Algorithm + "; p=" }

// Keyring holds one key of each kind the tests sign with.
type Keyring struct {
	RSA2048, RSA1024, RSA512, Ed25519 *Key
}

// All returns every key of the ring.
func (r *Keyring) All() []*Key { return []*Key{r.RSA2048, r.RSA1024, r.RSA512, r.Ed25519} }

// NewKeyring makes RSA keys of 2048, 1024 and 512 bits and an ed25519 key with Go's crypto
// and writes their private halves into a temporary directory. The 512-bit key, which Go's
// rsa.GenerateKey refuses to make, is built from two random primes: it only has to exist for
// the signers (RFC 8301 says verifiers refuse it).
func NewKeyring(t testing.TB) *Keyring {
	t.Helper()
	dir := t.TempDir()
	r := &Keyring{}
	var err error
	for _, bits := range []int{2048, 1024, 512} {
		var k *Key
		if k, err = newRSAKey(dir, bits); err != nil {
			t.Fatalf("RSA %d: %v", bits, err)
		}
		switch bits {
		case 2048:
			r.RSA2048 = k
		case 1024:
			r.RSA1024 = k
		default:
			r.RSA512 = k
		}
	}
	if r.Ed25519, err = newEd25519Key(dir); err != nil {
		t.Fatalf("ed25519: %v", err)
	}
	return r
}

func newRSAKey(dir string, bits int) (*Key, error) {
	var key *rsa.PrivateKey
	var err error
	if bits >= 1024 {
		key, err = rsa.GenerateKey(rand.Reader, bits)
	} else {
		key, err = smallRSAKey(bits)
	}
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	k := &Key{
		Name: "rsa" + strconv.Itoa(bits), Algorithm: "rsa", Bits: bits,
		File:        filepath.Join(dir, "rsa"+strconv.Itoa(bits)+".pem"),
		Public:      base64.StdEncoding.EncodeToString(spki),
		PublicPKCS1: base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PublicKey(&key.PublicKey)),
	}
	block := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return k, os.WriteFile(k.File, block, 0o600)
}

// smallRSAKey builds an RSA key below the size crypto/rsa generates: two primes of half the
// size, e = 65537.
func smallRSAKey(bits int) (*rsa.PrivateKey, error) {
	e := big.NewInt(65537)
	one := big.NewInt(1)
	for range 100 {
		p, err := rand.Prime(rand.Reader, bits/2)
		if err != nil {
			return nil, err
		}
		q, err := rand.Prime(rand.Reader, bits/2)
		if err != nil {
			return nil, err
		}
		n := new(big.Int).Mul(p, q)
		if p.Cmp(q) == 0 || n.BitLen() != bits {
			continue
		}
		phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
		d := new(big.Int).ModInverse(e, phi)
		if d == nil {
			continue
		}
		key := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: 65537}, D: d, Primes: []*big.Int{p, q}}
		key.Precompute()
		return key, nil
	}
	return nil, errors.New("no key after 100 tries")
}

func newEd25519Key(dir string) (*Key, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	k := &Key{
		Name: "ed25519", Algorithm: "ed25519", Bits: 256,
		File:   filepath.Join(dir, "ed25519.key"),
		Public: base64.StdEncoding.EncodeToString(pub),
	}
	seed := base64.StdEncoding.EncodeToString(priv.Seed())
	return k, os.WriteFile(k.File, []byte(seed), 0o600)
}
