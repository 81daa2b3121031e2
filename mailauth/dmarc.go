package mailauth

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// This file is DMARC (RFC 7489): policy discovery (6.6.3), identifier alignment
// (3.1) and the policy to apply (6.6.4, 6.6.2). The record is read by our own
// lenient parser, not go-msgauth's dmarc.Parse, because RFC 7489 6.3 asks for
// defaults where a tag is malformed and 6.6.3 for p=none where p= is invalid but
// rua= is valid, while dmarc.Parse refuses the whole record for a bad ri= or fo=.

// dmarcRecord is a published DMARC policy.
type dmarcRecord struct {
	p, sp         Disposition // sp "" when absent or invalid
	strictDKIM    bool        // adkim=s
	strictSPF     bool        // aspf=s
	pct           int
	atOrg         bool // found at the organizational domain, not the From domain
	domain        string
	invalidPolicy bool // the record's p= was unusable (and rua= gave p=none)
}

// dmarcLookup is the policy discovery's outcome.
type dmarcLookup struct {
	rec    *dmarcRecord
	result Result // None (no policy), TempError, or "" when rec is set
	reason string
	empty  bool // no DMARC record at all: the organizational domain is asked next
}

// lookupDMARC finds the policy for from: at _dmarc.<from>, then at
// _dmarc.<organizational domain> when from has no DMARC record at all (RFC 7489
// 6.6.3: several records, or one without a usable p=, end the discovery).
func lookupDMARC(ctx context.Context, r Resolver, from, org string) dmarcLookup {
	l := lookupDMARCAt(ctx, r, from)
	if !l.empty || org == from {
		return l
	}
	l = lookupDMARCAt(ctx, r, org)
	if l.rec != nil {
		l.rec.atOrg = true
	}
	return l
}

func lookupDMARCAt(ctx context.Context, r Resolver, domain string) dmarcLookup {
	txts, err := lookupTXT(ctx, r, "_dmarc."+domain)
	if err != nil {
		if lookupFailure(err, None) == TempError {
			return dmarcLookup{result: TempError, reason: "_dmarc." + domain + ": " + err.Error()}
		}
		return dmarcLookup{result: None, reason: "no DMARC record", empty: true}
	}
	var found []string
	for _, t := range txts {
		if isDMARCRecord(t) {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 0:
		return dmarcLookup{result: None, reason: "no DMARC record", empty: true}
	case 1:
		rec, ok := parseDMARC(found[0])
		if !ok {
			return dmarcLookup{result: None, reason: "_dmarc." + domain + ": no valid p= and no valid rua="}
		}
		rec.domain = domain
		return dmarcLookup{rec: rec}
	default:
		return dmarcLookup{result: None, reason: "_dmarc." + domain + ": more than one DMARC record"}
	}
}

// isDMARCRecord reports whether t starts with the tag v=DMARC1 (RFC 7489 6.6.3:
// other TXT records are discarded).
func isDMARCRecord(t string) bool {
	first, _, _ := strings.Cut(t, ";")
	name, value, ok := strings.Cut(first, "=")
	return ok && trimFWS(name) == "v" && trimFWS(value) == "DMARC1"
}

// parseDMARC reads a record leniently: unknown or malformed tags take their
// defaults. False when p= is unusable and no rua= URI is valid (RFC 7489 6.6.3).
func parseDMARC(t string) (*dmarcRecord, bool) {
	rec := &dmarcRecord{pct: 100}
	seen := map[string]string{}
	for spec := range strings.SplitSeq(t, ";") {
		name, value, ok := strings.Cut(spec, "=")
		name = strings.ToLower(trimFWS(name))
		if _, dup := seen[name]; ok && !dup {
			seen[name] = trimFWS(value)
		}
	}
	p, pok := disposition(seen["p"])
	sp, spok := disposition(seen["sp"])
	_, hasSP := seen["sp"]
	rec.sp = sp
	if !pok || hasSP && !spok {
		if !validRUA(seen["rua"]) {
			return nil, false
		}
		p, rec.invalidPolicy = DispositionNone, true
	}
	rec.p = p
	rec.strictDKIM = strings.EqualFold(seen["adkim"], "s")
	rec.strictSPF = strings.EqualFold(seen["aspf"], "s")
	if n, err := strconv.Atoi(seen["pct"]); err == nil && n >= 0 && n <= 100 {
		rec.pct = n
	}
	return rec, true
}

func disposition(s string) (Disposition, bool) {
	switch d := Disposition(strings.ToLower(s)); d {
	case DispositionNone, DispositionQuarantine, DispositionReject:
		return d, true
	}
	return "", false
}

// validRUA reports whether a rua= list has one URI with a scheme.
func validRUA(s string) bool {
	for u := range strings.SplitSeq(s, ",") {
		u, _, _ = strings.Cut(trimFWS(u), "!") // a size limit, RFC 7489 6.4
		if pu, err := url.Parse(u); err == nil && pu.Scheme != "" && pu.Opaque+pu.Host+pu.Path != "" {
			return true
		}
	}
	return false
}

// orgDomain is the organizational domain of d (RFC 7489 3.2), by the public suffix
// list; d itself when the list has no answer (a single label, a public suffix).
func orgDomain(d string) string {
	if org, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return org
	}
	return d
}

// aligned reports whether an authenticated domain aligns with the From domain:
// equal (strict) or of the same organizational domain (relaxed).
func aligned(domain, from string, strict bool) bool {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == "" {
		return false
	}
	if strict {
		return domain == from
	}
	return orgDomain(domain) == orgDomain(from)
}

// evalDMARC evaluates a found policy against the SPF and DKIM results.
func evalDMARC(res DMARCResult, rec *dmarcRecord, spf SPFResult, dkim []DKIMResult, draw func() float64) DMARCResult {
	res.Policy = rec.p
	if rec.atOrg && res.FromDomain != rec.domain && rec.sp != "" {
		res.Policy = rec.sp
	}
	res.Applied = DispositionNone
	spfAligned := aligned(spf.Domain, res.FromDomain, rec.strictSPF)
	if spf.Result == Pass && spfAligned {
		res.Result, res.Reason = Pass, ""
		return res
	}
	tempfail := spfAligned && spf.Result == TempError
	for _, d := range dkim {
		if !aligned(d.Domain, res.FromDomain, rec.strictDKIM) {
			continue
		}
		if d.Result == Pass {
			res.Result, res.Reason = Pass, ""
			return res
		}
		tempfail = tempfail || d.Result == TempError
	}
	if tempfail {
		// RFC 7489 6.6.2 makes this a fail; a DNS error of an aligned identifier
		// may be what hid the pass, so the answer is left to a later try.
		res.Result, res.Reason = TempError, "no aligned pass; an aligned identifier had a temporary error"
		return res
	}
	res.Result, res.Reason = Fail, "no aligned SPF or DKIM pass"
	res.Applied = res.Policy
	if rec.pct < 100 && draw() >= float64(rec.pct)/100 {
		res.Applied = lowerDisposition(res.Policy)
		res.Reason += fmt.Sprintf("; pct=%d sampled out", rec.pct)
	}
	return res
}

// lowerDisposition is the next less strict policy (RFC 7489 6.6.4).
func lowerDisposition(d Disposition) Disposition {
	if d == DispositionReject {
		return DispositionQuarantine
	}
	return DispositionNone
}
