package mailauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// This file validates ARC chains (RFC 8617 section 5.2): the sets are complete and
// numbered 1..N (N at most 50), every ARC-Seal's cv= is what its place requires,
// the newest ARC-Message-Signature verifies over the message, and every ARC-Seal
// verifies, newest first. The result is the chain's cv: none, pass or fail.

// MaxARCInstances is the highest i= RFC 8617 4.2.1 allows.
const MaxARCInstances = 50

// arcSet is one instance's three fields.
type arcSet struct {
	seal, sig, results *field
	sealTags, sigTags  tagList
}

// arcCheck is the validation of one message's chain: decided from the header
// alone when its structure is broken, else finished with the body hash.
type arcCheck struct {
	res     ARCResult
	decided bool
	sets    []arcSet // sets[i-1] is instance i
	fields  []field
	body    *bodyCanon
	hasher  hash.Hash
}

func (a *arcCheck) decide(r Result, reason string) *arcCheck {
	a.res.Result, a.res.Reason, a.decided = r, reason, true
	return a
}

// startARC reads the chain's structure from the header and, when it may pass,
// prepares the newest AMS's body hash and looks up every key the chain names.
func startARC(ctx context.Context, keys *txtCache, fields []field) *arcCheck {
	a := &arcCheck{fields: fields}
	sets, n, err := arcSets(fields)
	a.res.Instances = n
	switch {
	case n == 0:
		return a.decide(None, "")
	case err != nil:
		return a.decide(Fail, err.Error())
	}
	a.sets = sets
	for i, s := range sets {
		cv := strings.ToLower(s.sealTags.value("cv"))
		switch {
		case i == n-1 && cv == "fail":
			return a.decide(Fail, fmt.Sprintf("ARC-Seal i=%d says cv=fail", n))
		case i == 0 && cv != "none", i > 0 && cv != "pass":
			return a.decide(Fail, fmt.Sprintf("ARC-Seal i=%d has cv=%.10s", i+1, cv))
		}
	}
	ams := sets[n-1].sigTags
	for _, t := range []string{"a", "b", "bh", "d", "h", "s"} {
		if _, ok := ams.get(t); !ok {
			return a.decide(Fail, fmt.Sprintf("ARC-Message-Signature i=%d lacks %s=", n, t))
		}
	}
	_, bodyCan, ok := canonicalization(ams.value("c"))
	limit, lok := bodyLimit(ams)
	if !ok || !lok {
		return a.decide(Fail, fmt.Sprintf("ARC-Message-Signature i=%d has a bad c= or l=", n))
	}
	a.hasher = sha256.New()
	a.body = newBodyCanon(a.hasher, bodyCan, limit)
	for _, s := range sets {
		for _, t := range []tagList{s.sealTags, s.sigTags} {
			keys.start(ctx, keyName(stripFWS(t.value("s")), stripFWS(t.value("d"))))
		}
	}
	return a
}

// arcField is one ARC field: its kind (0 seal, 1 message signature, 2
// authentication results), instance and tags (none for results).
type arcField struct {
	f    *field
	kind int
	inst int
	tags tagList
}

// arcSets groups the ARC fields by instance; n is the highest i= seen (0: no ARC
// field). A field without a readable i=, an i= over 50, a duplicate or a missing
// field of an instance is an error.
func arcSets(fields []field) ([]arcSet, int, error) {
	var all []arcField
	n := 0
	for k := range fields {
		e, ok, err := readARCField(&fields[k])
		if err != nil {
			return nil, max(n, 1), err
		}
		if ok {
			all = append(all, e)
			n = max(n, e.inst)
		}
	}
	if n == 0 {
		return nil, 0, nil
	}
	sets := make([]arcSet, n)
	for _, e := range all {
		s := &sets[e.inst-1]
		slot := [3]**field{&s.seal, &s.sig, &s.results}[e.kind]
		if *slot != nil {
			return nil, n, fmt.Errorf("two %s fields with i=%d", e.f.name, e.inst)
		}
		*slot = e.f
		switch e.kind {
		case 0:
			s.sealTags = e.tags
		case 1:
			s.sigTags = e.tags
		}
	}
	for i, s := range sets {
		if s.seal == nil || s.sig == nil || s.results == nil {
			return nil, n, fmt.Errorf("ARC set i=%d is incomplete", i+1)
		}
	}
	return sets, n, nil
}

// readARCField reads f when it is an ARC field (false otherwise).
func readARCField(f *field) (arcField, bool, error) {
	e := arcField{f: f}
	switch {
	case f.is("ARC-Seal"):
		e.kind = 0
	case f.is("ARC-Message-Signature"):
		e.kind = 1
	case f.is("ARC-Authentication-Results"):
		e.kind = 2
	default:
		return e, false, nil
	}
	var inst string
	if e.kind == 2 {
		inst, _, _ = strings.Cut(f.value(), ";")
		inst = strings.TrimPrefix(stripFWS(inst), "i=")
	} else {
		tags, err := parseTagList(f.value())
		if err != nil {
			return e, false, fmt.Errorf("%s: %w", f.name, err)
		}
		e.tags, inst = tags, stripFWS(tags.value("i"))
	}
	i, err := strconv.Atoi(inst)
	if err != nil || i < 1 || i > MaxARCInstances || len(inst) > 2 {
		return e, false, fmt.Errorf("%s: bad instance i=%.10s", f.name, inst)
	}
	e.inst = i
	return e, true, nil
}

// canonicalization reads c= ("header/body", RFC 6376 3.5): relaxed or not for
// each; false for an unknown algorithm.
func canonicalization(c string) (header, body, ok bool) {
	c = strings.ToLower(stripFWS(c))
	h, b, _ := strings.Cut(c, "/")
	known := func(s string) (bool, bool) {
		switch s {
		case "", "simple":
			return false, true
		case "relaxed":
			return true, true
		}
		return false, false
	}
	header, hok := known(h)
	body, bok := known(b)
	return header, body, hok && bok && strings.Count(c, "/") <= 1
}

// bodyLimit reads l= (-1 without one).
func bodyLimit(tags tagList) (int64, bool) {
	l, ok := tags.get("l")
	if !ok {
		return -1, true
	}
	n, err := strconv.ParseInt(stripFWS(l), 10, 64)
	return n, err == nil && n >= 0
}

// writeBody feeds the newest AMS's body hash.
func (a *arcCheck) writeBody(p []byte) {
	if a != nil && a.body != nil {
		a.body.Write(p)
	}
}

// finish verifies the newest AMS and every seal.
func (a *arcCheck) finish(ctx context.Context, keys *txtCache) ARCResult {
	if a.decided {
		return a.res
	}
	a.body.Close()
	n := len(a.sets)
	newest := a.sets[n-1]
	if err := a.verifyAMS(ctx, keys, newest); err != nil {
		return a.decide(Fail, fmt.Sprintf("ARC-Message-Signature i=%d: %v", n, err)).res
	}
	for i := n; i >= 1; i-- {
		if err := a.verifySeal(ctx, keys, i); err != nil {
			return a.decide(Fail, fmt.Sprintf("ARC-Seal i=%d: %v", i, err)).res
		}
	}
	return a.decide(Pass, "").res
}

// verifyAMS checks the newest ARC-Message-Signature as a DKIM signature (RFC 8617
// 4.1.2): body hash, then the signed header fields picked bottom-up by h=.
func (a *arcCheck) verifyAMS(ctx context.Context, keys *txtCache, s arcSet) error {
	bh, err := base64.StdEncoding.DecodeString(stripFWS(s.sigTags.value("bh")))
	if err != nil {
		return errors.New("bh= is not base64")
	}
	if !bytes.Equal(a.hasher.Sum(nil), bh) {
		return errors.New("body hash did not verify")
	}
	headerCan, _, _ := canonicalization(s.sigTags.value("c"))
	names := splitColonList(s.sigTags.value("h"))
	var data strings.Builder
	for _, f := range pickFields(a.fields, names) {
		if f.is("ARC-Seal") {
			return errors.New("h= names ARC-Seal")
		}
		data.WriteString(canonHeader(f, headerCan))
	}
	writeSigField(&data, *s.sig, headerCan)
	return verifyWithKey(ctx, keys, s.sigTags, data.String())
}

// verifySeal checks the ARC-Seal of instance i (RFC 8617 5.1.1): relaxed, over
// the sets 1..i, each AAR, AMS, AS, the last with b= empty.
func (a *arcCheck) verifySeal(ctx context.Context, keys *txtCache, i int) error {
	s := a.sets[i-1]
	if _, ok := s.sealTags.get("h"); ok {
		return errors.New("h= is not allowed in a seal")
	}
	for _, t := range []string{"a", "b", "cv", "d", "s"} {
		if _, ok := s.sealTags.get(t); !ok {
			return fmt.Errorf("no %s=", t)
		}
	}
	var data strings.Builder
	for _, set := range a.sets[:i-1] {
		data.WriteString(canonHeader(*set.results, true))
		data.WriteString(canonHeader(*set.sig, true))
		data.WriteString(canonHeader(*set.seal, true))
	}
	data.WriteString(canonHeader(*s.results, true))
	data.WriteString(canonHeader(*s.sig, true))
	writeSigField(&data, *s.seal, true)
	return verifyWithKey(ctx, keys, s.sealTags, data.String())
}

// verifyWithKey fetches the key of tags' s= and d= and checks b= over data.
func verifyWithKey(ctx context.Context, keys *txtCache, tags tagList, data string) error {
	sig, err := base64.StdEncoding.DecodeString(stripFWS(tags.value("b")))
	if err != nil {
		return errors.New("b= is not base64")
	}
	k, err := fetchKey(ctx, keys, keyName(stripFWS(tags.value("s")), stripFWS(tags.value("d"))))
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	return k.verifySig(strings.ToLower(stripFWS(tags.value("a"))), sum256([]byte(data)), sig)
}

// pickFields selects the fields h= names: for each name, the lowest field of that
// name not picked yet; names with no field left contribute nothing (RFC 6376
// 5.4.2).
func pickFields(fields []field, names []string) []field {
	used := make([]bool, len(fields))
	var picked []field
	for _, name := range names {
		for i := len(fields) - 1; i >= 0; i-- {
			if !used[i] && fields[i].is(name) {
				used[i] = true
				picked = append(picked, fields[i])
				break
			}
		}
	}
	return picked
}

// writeSigField writes the signature field itself, its b= value removed,
// canonicalized, without its final CRLF (RFC 6376 3.7).
func writeSigField(w *strings.Builder, f field, relaxed bool) {
	f.raw = removeB(f.raw)
	w.WriteString(strings.TrimSuffix(canonHeader(f, relaxed), "\r\n"))
}

// removeB empties the value of the b= tag of a signature field, keeping everything
// else as it is.
func removeB(raw string) string {
	colon := strings.IndexByte(raw, ':')
	if colon < 0 {
		return raw
	}
	start := colon + 1
	for start <= len(raw) {
		end := strings.IndexByte(raw[start:], ';')
		if end < 0 {
			end = len(raw)
		} else {
			end += start
		}
		spec := raw[start:end]
		if name, _, ok := strings.Cut(spec, "="); ok && trimFWS(name) == "b" {
			eq := start + strings.IndexByte(spec, '=') + 1
			tail := raw[end:]
			if end == len(raw) && strings.HasSuffix(spec, "\r\n") {
				tail = "\r\n"
			}
			return raw[:eq] + tail
		}
		start = end + 1
	}
	return raw
}
