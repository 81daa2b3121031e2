package mailauth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file adds ARC sets (RFC 8617 5.1) to messages a server forwards: the
// ARC-Authentication-Results of its verdict, an ARC-Message-Signature over the
// message, and an ARC-Seal over the chain.

// defaultSealHeaders are the fields an ARC-Message-Signature signs when present,
// when Sealer.Headers is nil.
var defaultSealHeaders = []string{"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
	"In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"DKIM-Signature", "List-Id", "List-Unsubscribe"}

// Sealer adds an ARC set to messages. Its zero value is not usable: set Domain,
// Selector and Signer.
type Sealer struct {
	Domain   string           // d=: where the key is published
	Selector string           // s=
	Signer   crypto.Signer    // *rsa.PrivateKey (rsa-sha256, 1024 bits or more) or ed25519.PrivateKey (ed25519-sha256)
	Now      func() time.Time // nil: time.Now (t=)

	// Headers are the fields the ARC-Message-Signature signs when present; nil:
	// From, To, Cc, Subject, Date, Message-ID, Reply-To, In-Reply-To, References,
	// MIME-Version, Content-Type, Content-Transfer-Encoding, DKIM-Signature,
	// List-Id, List-Unsubscribe.
	Headers []string
}

var errChainFailed = errors.New("mailauth: the ARC chain has already failed (cv=fail): no set is added")

// Seal returns the ARC set to prepend to msg, ARC-Seal first, each field ending in
// CRLF. The set's instance follows the message's chain; its results are the
// verdict's (its Field without the name); its cv= is none without a chain, pass
// when the verdict's ARC result (Verify's for msg) is pass, fail otherwise. A chain
// whose newest seal says cv=fail, or at instance 50 already, gets no set (RFC 8617
// 5.1).
func (s *Sealer) Seal(msg []byte, v *Verdict) (string, error) {
	algo, err := s.algorithm()
	if err != nil {
		return "", err
	}
	var scan headerScanner
	n, _ := scan.scan(msg)
	fields := parseHeader(msg[:n])
	sets, inst, err := arcSets(fields)
	if err == nil && inst > 0 && strings.EqualFold(sets[inst-1].sealTags.value("cv"), "fail") {
		return "", errChainFailed
	}
	if inst >= MaxARCInstances {
		return "", fmt.Errorf("mailauth: the ARC chain has %d sets already", inst)
	}
	cv := "none"
	if inst > 0 {
		cv = "pass"
		if err != nil || v.ARC.Result != Pass {
			cv, sets = "fail", nil // a broken chain: this set seals only itself (RFC 8617 5.1.1)
		}
	}
	i := strconv.Itoa(inst + 1)
	t := strconv.FormatInt(s.now().Unix(), 10)
	aar := field{name: "ARC-Authentication-Results", raw: "ARC-Authentication-Results: i=" + i + "; " +
		strings.TrimPrefix(v.Field(), "Authentication-Results: ")}
	ams, err := s.sign("ARC-Message-Signature", algo, []tag{{"i", i}, {"a", algo}, {"c", "relaxed/relaxed"},
		{"d", s.Domain}, {"s", s.Selector}, {"t", t}, {"h", s.signedNames(fields)}, {"bh", bodyHash(msg[n:])}},
		func(b *strings.Builder) {
			for _, f := range pickFields(fields, splitColonList(s.signedNames(fields))) {
				b.WriteString(canonHeader(f, true))
			}
		})
	if err != nil {
		return "", err
	}
	seal, err := s.sign("ARC-Seal", algo, []tag{{"i", i}, {"cv", cv}, {"a", algo}, {"d", s.Domain}, {"s", s.Selector}, {"t", t}},
		func(b *strings.Builder) {
			for _, set := range sets {
				b.WriteString(canonHeader(*set.results, true))
				b.WriteString(canonHeader(*set.sig, true))
				b.WriteString(canonHeader(*set.seal, true))
			}
			b.WriteString(canonHeader(aar, true))
			b.WriteString(canonHeader(ams, true))
		})
	if err != nil {
		return "", err
	}
	return seal.raw + ams.raw + aar.raw, nil
}

func (s *Sealer) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// algorithm is a= for the Signer's key.
func (s *Sealer) algorithm() (string, error) {
	if s.Domain == "" || s.Selector == "" || s.Signer == nil {
		return "", errors.New("mailauth: a Sealer needs Domain, Selector and Signer")
	}
	switch k := s.Signer.Public().(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 1024 {
			return "", errors.New("mailauth: RSA keys under 1024 bits are refused (RFC 8301)")
		}
		return "rsa-sha256", nil
	case ed25519.PublicKey:
		return "ed25519-sha256", nil
	}
	return "", errors.New("mailauth: the Signer's key is neither RSA nor ed25519")
}

// signedNames is h=: the configured fields the message has, each once.
func (s *Sealer) signedNames(fields []field) string {
	want := s.Headers
	if want == nil {
		want = defaultSealHeaders
	}
	var names []string
	for _, name := range want {
		lower := strings.ToLower(name)
		if !slices.Contains(names, lower) && slices.ContainsFunc(fields, func(f field) bool { return f.is(name) }) {
			names = append(names, lower)
		}
	}
	return strings.Join(names, ":")
}

// bodyHash is the relaxed body hash, base64.
func bodyHash(body []byte) string {
	h := sha256.New()
	c := newBodyCanon(h, true, -1)
	c.Write(body)
	c.Close()
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// sign makes a signature field named name with tags and b=, signing what signed
// writes followed by the field itself with b= empty (RFC 6376 3.7).
func (s *Sealer) sign(name, algo string, tags []tag, signed func(*strings.Builder)) (field, error) {
	f := field{name: name, raw: formatTags(name, append(tags, tag{"b", ""}))}
	var data strings.Builder
	signed(&data)
	writeSigField(&data, f, true)
	digest := sha256.Sum256([]byte(data.String()))
	var sig []byte
	var err error
	if algo == "rsa-sha256" {
		sig, err = s.Signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	} else {
		sig, err = s.Signer.Sign(rand.Reader, digest[:], crypto.Hash(0))
	}
	if err != nil {
		return field{}, fmt.Errorf("mailauth: signing %s: %w", name, err)
	}
	f.raw = strings.TrimSuffix(f.raw, "\r\n") + foldBase64(base64.StdEncoding.EncodeToString(sig)) + "\r\n"
	return f, nil
}

// formatTags writes "Name: t=v; t=v; ...; b=" folded before a tag that would pass
// the line length, ending in CRLF; b= is last, empty, on a line of its own.
func formatTags(name string, tags []tag) string {
	var b strings.Builder
	b.WriteString(name + ":")
	col := b.Len()
	for k, t := range tags {
		spec := t.name + "=" + t.value
		if k < len(tags)-1 {
			spec += ";"
		}
		if col+1+len(spec) > foldAt || k == len(tags)-1 {
			b.WriteString("\r\n\t")
			col = 1
		} else {
			b.WriteByte(' ')
			col++
		}
		b.WriteString(spec)
		col += len(spec)
	}
	b.WriteString("\r\n")
	return b.String()
}

// foldBase64 folds a b= value (after "\tb=") into lines of 72 characters.
func foldBase64(v string) string {
	var b strings.Builder
	for len(v) > 72 {
		b.WriteString(v[:72] + "\r\n\t")
		v = v[72:]
	}
	b.WriteString(v)
	return b.String()
}
