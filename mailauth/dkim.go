package mailauth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// MaxDKIMSignatures is how many DKIM-Signature fields of a message are verified,
// in header order. The others are reported with Result Policy ("not verified"), so
// a message with 1000 signatures costs at most this many key lookups.
const MaxDKIMSignatures = 10

// dkimSig is one DKIM-Signature field, read with our own tag-list parser: the
// results need s= and b=, which go-msgauth does not report.
type dkimSig struct {
	res  DKIMResult
	tags tagList
	err  error // the tag list is malformed
}

// collectDKIM returns the message's DKIM-Signature fields, in header order, named
// as go-msgauth names them (the name trimmed, case-insensitive), so that the n-th
// here is its n-th.
func collectDKIM(fields []field) []dkimSig {
	var sigs []dkimSig
	for _, f := range fields {
		if !f.is("DKIM-Signature") {
			continue
		}
		tags, err := parseTagList(f.value())
		if err == nil {
			err = checkSigTags(tags)
		}
		s := dkimSig{tags: tags, err: err}
		s.res.Domain = stripFWS(tags.value("d"))
		s.res.Selector = stripFWS(tags.value("s"))
		s.res.Identifier = stripFWS(tags.value("i"))
		s.res.Algorithm = strings.ToLower(stripFWS(tags.value("a")))
		s.res.Signature = firstN(stripFWS(tags.value("b")), 8)
		sigs = append(sigs, s)
	}
	return sigs
}

// checkSigTags refuses, before any lookup, a signature whose tags RFC 6376 3.5
// says are malformed: a required tag missing, v= not 1, d= or s= not a domain
// name (so a signature cannot choose where a key is asked for), b= or bh= not
// base64, l=, t= or x= not a number.
func checkSigTags(tags tagList) error {
	for _, t := range []string{"v", "a", "b", "bh", "d", "h", "s"} {
		if _, ok := tags.get(t); !ok {
			return fmt.Errorf("no %s= tag", t)
		}
	}
	if tags.value("v") != "1" {
		return errors.New("v= is not 1")
	}
	d, s := stripFWS(tags.value("d")), stripFWS(tags.value("s"))
	if !validDomainName(d) || !validDomainName(s) || len(keyName(s, d)) > 253 {
		return errors.New("d= or s= is not a domain name")
	}
	for _, t := range []string{"b", "bh"} {
		if _, err := base64.StdEncoding.DecodeString(stripFWS(tags.value(t))); err != nil {
			return fmt.Errorf("%s= is not base64", t)
		}
	}
	for _, t := range []string{"l", "t", "x"} {
		if v, ok := tags.get(t); ok && !isNumber(stripFWS(v), 76) {
			return fmt.Errorf("%s= is not a number", t)
		}
	}
	return nil
}

// validDomainName reports whether s is dot-separated labels of letters, digits,
// "-" and "_" (selectors use "_"), each of 1 to 63 octets, 253 in all.
func validDomainName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// isNumber reports whether s is 1 to max digits.
func isNumber(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func firstN(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// dkimRun is go-msgauth's verification of a message being fed to it through a pipe
// as it arrives: its Verify reads the header, looks the keys up (through our
// cache, under the header's context), then hashes the body as it comes. The body
// waits in a queuedWriter meanwhile.
type dkimRun struct {
	sigs []dkimSig
	pw   *io.PipeWriter
	in   *queuedWriter
	done chan dkimOutcome
	stop func() bool
}

type dkimOutcome struct {
	verifs []*dkim.Verification
	err    error
}

var errDKIMDone = errors.New("mailauth: DKIM verification ended")

// startDKIM starts verifying sigs, feeding go-msgauth the header; the body follows
// through write. The keys of the verified signatures are looked up at once; a
// malformed signature's key is not looked up at all. When parent ends (the
// session is gone) the pipe breaks, so nothing waits forever.
func startDKIM(parent, ctx context.Context, keys *txtCache, header []byte, sigs []dkimSig) *dkimRun {
	allowed := map[string]bool{}
	for _, s := range sigs[:min(len(sigs), MaxDKIMSignatures)] {
		if s.err == nil {
			name := keyName(s.res.Selector, s.res.Domain)
			allowed[strings.ToLower(name)] = true
			keys.start(ctx, name)
		}
	}
	pr, pw := io.Pipe()
	d := &dkimRun{sigs: sigs, pw: pw, in: newQueuedWriter(parent, pw), done: make(chan dkimOutcome, 1)}
	opts := &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if !allowed[strings.ToLower(name)] { // a malformed signature: judged without DNS
				return nil, &net.DNSError{Err: "not asked: malformed signature", Name: name, IsNotFound: true}
			}
			return keys.get(ctx, name)
		},
		MaxVerifications: MaxDKIMSignatures,
	}
	go func() {
		verifs, err := dkim.VerifyWithOptions(pr, opts)
		pr.CloseWithError(errDKIMDone)
		d.done <- dkimOutcome{verifs, err}
	}()
	d.stop = context.AfterFunc(parent, func() { pw.CloseWithError(parent.Err()) })
	d.write(header)
	return d
}

// write queues body bytes for go-msgauth.
func (d *dkimRun) write(p []byte) {
	if d != nil {
		d.in.Write(p)
	}
}

// finish ends the body and returns one result per signature.
func (d *dkimRun) finish(ctx context.Context, keys *txtCache, now time.Time) []DKIMResult {
	d.in.Close()
	d.pw.Close()
	out := <-d.done
	d.stop()
	results := make([]DKIMResult, len(d.sigs))
	for i, s := range d.sigs {
		results[i] = s.res
		switch {
		case i >= MaxDKIMSignatures:
			results[i].Result, results[i].Reason = Policy, notVerified
		case out.err != nil && !errors.Is(out.err, dkim.ErrTooManySignatures):
			results[i].Result, results[i].Reason = TempError, "verification interrupted: "+out.err.Error()
		case i >= len(out.verifs):
			results[i].Result, results[i].Reason = TempError, "not verified"
		default:
			results[i].Result, results[i].Reason = judgeDKIM(ctx, keys, s, out.verifs[i].Err, now)
		}
	}
	return results
}

var notVerified = fmt.Sprintf("not verified: only the first %d signatures are", MaxDKIMSignatures)

// judgeDKIM turns go-msgauth's verdict on one signature into a result. RFC 8301
// refusals (rsa-sha1, RSA keys under 1024 bits) and l= are Policy: go-msgauth
// reports them as plain failures, so they are told by the signature's a= and l=
// and by the key. t= and x= are also checked against now (Verifier.Now); go-msgauth
// checks x= against the system clock.
func judgeDKIM(ctx context.Context, keys *txtCache, s dkimSig, err error, now time.Time) (Result, string) {
	if s.err != nil {
		return PermError, "signature: " + s.err.Error()
	}
	if _, sha1 := strings.CutSuffix(s.res.Algorithm, "-sha1"); sha1 {
		return Policy, "rsa-sha1 refused (RFC 8301)"
	}
	if reason := checkSigTimes(s.tags, now); reason != "" {
		return PermError, reason
	}
	if err == nil {
		return Pass, ""
	}
	if _, l := s.tags.get("l"); l {
		return Policy, "l= refused: a body length limit leaves content unsigned"
	}
	reason := strings.TrimPrefix(err.Error(), "dkim: ")
	switch {
	case dkim.IsTempFail(err):
		return TempError, reason
	case dkim.IsPermFail(err):
		if k, kerr := fetchKey(ctx, keys, keyName(s.res.Selector, s.res.Domain)); kerr == nil && k.kind == "rsa" && k.bits < 1024 {
			return Policy, fmt.Sprintf("RSA key of %d bits refused (RFC 8301)", k.bits)
		}
		return PermError, reason
	default:
		return Fail, reason
	}
}

// clockSkew is how far in the future a t= may be (a signer's clock running
// fast), as dkimpy allows.
const clockSkew = 10 * time.Hour

// checkSigTimes checks t= and x= against now (RFC 6376 3.5): expired, signed
// in the future (past clockSkew), or expiring before it was signed.
func checkSigTimes(tags tagList, now time.Time) string {
	t, hasT := sigTime(tags, "t")
	x, hasX := sigTime(tags, "x")
	switch {
	case hasX && now.Unix() > x:
		return "signature expired"
	case hasT && t > now.Add(clockSkew).Unix():
		return "t= is in the future"
	case hasT && hasX && x < t:
		return "x= is before t="
	}
	return ""
}

func sigTime(tags tagList, name string) (int64, bool) {
	v, ok := tags.get(name)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(stripFWS(v), 10, 64)
	return n, err == nil
}

// refuseDKIM gives every signature the same result, for a message whose DKIM
// fields could not be verified at all (a header section over the limit).
func refuseDKIM(sigs []dkimSig, r Result, reason string) []DKIMResult {
	results := make([]DKIMResult, len(sigs))
	for i, s := range sigs {
		results[i] = s.res
		results[i].Result, results[i].Reason = r, reason
		if i >= MaxDKIMSignatures {
			results[i].Result, results[i].Reason = Policy, notVerified
		}
	}
	return results
}
