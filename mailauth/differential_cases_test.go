package mailauth_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/midismtp/smtpd/internal/testenv"
	"github.com/midismtp/smtpd/mailauth"
)

// w builds a want map from method, verdict pairs.
func w(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// Steps shared by several cases.
var (
	// whitespace changes that relaxed canonicalization forgives and simple does not
	rewrap = []testenv.Step{
		{Op: "replace", Old: "Subject: differential", New: "Subject:   differential"},
		{Op: "replace", Old: "a trailing space \r\n", New: "a trailing space \t \r\n"},
	}
	tamperBody = testenv.Step{Op: "replace", Old: "Hello Bob", New: "Hello Eve"}
)

// lPolicy is the exception of every signature with l=: ours refuses them.
func lPolicy(oracle string) exception {
	return exception{method: "dkim", oracle: oracle, rule: "RFC 6376 §8.2 wins",
		why: "l= lets anyone append unsigned text; Verifiers might ignore such signatures: ours refuses every l= signature (policy, RFC 8601 §2.7.1), dkimpy verifies the first l= octets"}
}

// strictAlignment is the exception of a strict-alignment failure that OpenDMARC 1.4.2 passes.
var strictAlignment = exception{method: "dmarc", oracle: "pass/reject", rule: "RFC 7489 §3.1 wins",
	why: "strict alignment wants the identical domain; OpenDMARC 1.4.2's check_alignment also takes an organizational-domain match in strict mode (fixed upstream, OpenDMARC PR #354)"}

func withException(c diffCase, e exception) diffCase {
	c.exceptions = append(c.exceptions, e)
	return c
}

// rsaSHA1 is the exception of every rsa-sha1 signature: dkimpy verifies it.
func rsaSHA1(oracle string) exception {
	return exception{method: "dkim", oracle: oracle, rule: "RFC 8301 §3.1 wins",
		why: "dkimpy verifies rsa-sha1; RFC 8301: verifiers MUST NOT consider rsa-sha1 signatures valid (our result: policy)"}
}

// rawSig is a case whose only DKIM-Signature field is the malformed one given; SPF passes,
// so DMARC passes on SPF alone.
func rawSig(name, field string) diffCase {
	return diffCase{name: name, noSign: true, header: "DKIM-Signature: " + field + "\r\n",
		want: w("dkim", "permerror")}
}

const (
	bh  = "bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
	sig = "b=dGhpcyBpcyBub3QgYSBzaWduYXR1cmUgYnV0IGl0IGlzIGJhc2U2NA=="
)

func differentialCases() []diffCase {
	var cs []diffCase
	cs = append(cs, dkimCases()...)
	cs = append(cs, malformedCases()...)
	cs = append(cs, spfCases()...)
	cs = append(cs, dmarcCases()...)
	cs = append(cs, arcCases()...)
	cs = append(cs, iprevCases()...)
	cs = append(cs, badInputCases()...)
	return cs
}

func dkimCases() []diffCase {
	now := time.Now().Unix()
	return []diffCase{
		{name: "pass"},
		{name: "dkimsign-rsa1024", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{{Op: "dkim", Via: "dkimsign", Key: e.keys.RSA1024.File, Selector: "rsa1024", Domain: e.d}}
		}},
		{name: "dkimsign-simple-simple", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{{Op: "dkim", Via: "dkimsign", Key: e.keys.RSA2048.File, Selector: "rsa2048", Domain: e.d, Canon: "simple/simple"}}
		}},
		{name: "relaxed-relaxed", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Canon = "relaxed/relaxed" })}
		}},
		{name: "simple-relaxed", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Canon = "simple/relaxed" })}
		}},
		{name: "relaxed-survives-rewrap", steps: func(e *caseEnv) []testenv.Step {
			return append([]testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Canon = "relaxed/relaxed" })}, rewrap...)
		}},
		{name: "simple-breaks-on-rewrap", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return append([]testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Canon = "simple/simple" })}, rewrap...)
		}, want: w("spf", "neutral", "dkim", "fail", "dmarc", "fail/reject/reject")},
		{name: "body-tampered", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.sign(e.keys.RSA2048), tamperBody}
		}, want: w("spf", "neutral", "dkim", "fail", "dmarc", "fail/reject/reject")},
		{name: "header-tampered", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.sign(e.keys.RSA2048), {Op: "replace", Old: "Subject: differential", New: "Subject: URGENT differential"}}
		}, want: w("spf", "neutral", "dkim", "fail", "dmarc", "fail/reject/reject")},
		{name: "from-display-tampered", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.sign(e.keys.RSA2048), {Op: "replace", Old: "From: Alice", New: "From: Your Bank"}}
		}, want: w("dkim", "fail")},
		{name: "unsigned-field-added", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.sign(e.keys.RSA2048), {Op: "prepend", Text: "X-Added-Later: yes\r\n"}}
		}},
		{name: "l-whole-body", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Length = -1 })}
		}, want: w("dkim", "policy"), exceptions: []exception{lPolicy("pass")}},
		{name: "l-content-appended", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Length = -1 }),
				{Op: "append", Text: "P.S. Wire the money to http://evil.test/ today.\r\n"}}
		}, want: w("spf", "neutral", "dkim", "policy", "dmarc", "fail/reject/reject"),
			exceptions: []exception{lPolicy("pass"), {method: "dmarc", oracle: "pass/reject", rule: "RFC 6376 §8.2 wins",
				why: "the only aligned signature has l=: OpenDMARC is fed dkimpy's pass on the first l= octets, the appended text unsigned"}}},
		{name: "l-body-truncated", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Length = -1 }),
				{Op: "replace", Old: "a trailing space \r\n\r\n\r\n", New: "\r\n"}}
		}, want: w("spf", "neutral", "dkim", "policy", "dmarc", "fail/reject/reject"), exceptions: []exception{lPolicy("fail")}},
		{name: "expired", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Time, s.Expire = now-3*86400, now-2*86400 })}
		}, want: w("spf", "neutral", "dkim", "permerror", "dmarc", "fail/reject/reject")},
		{name: "expires-tomorrow", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Time, s.Expire = now-60, now+86400 })}
		}},
		{name: "missing-key", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Selector = "nokey" })}
		}, want: w("spf", "neutral", "dkim", "permerror", "dmarc", "fail/reject/reject")},
		{name: "revoked-key", spf: "v=spf1 ?all", zone: func(e *caseEnv) {
			e.zone.TXT("revoked._domainkey", e.keys.RSA2048.Revoked())
		}, steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Selector = "revoked" })}
		}, want: w("spf", "neutral", "dkim", "permerror", "dmarc", "fail/reject/reject")},
		{name: "wrong-key", spf: "v=spf1 ?all", zone: func(e *caseEnv) {
			e.zone.TXT("wrong._domainkey", e.keys.RSA1024.Record())
		}, steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Selector = "wrong" })}
		}, want: w("spf", "neutral", "dkim", "fail", "dmarc", "fail/reject/reject")},
		{name: "key-rsapublickey-form", zone: func(e *caseEnv) {
			e.zone.TXT("pkcs1._domainkey", e.keys.RSA2048.RecordPKCS1())
		}, steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Selector = "pkcs1" })}
		}},
		{name: "key-garbled", zone: func(e *caseEnv) {
			e.zone.TXT("garbled._domainkey", "v=DKIM1; k=rsa; p=MIIB!!!not*base64")
		}, steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Selector = "garbled" })}
		}, want: w("dkim", "permerror")},
		{name: "key-unknown-type", zone: func(e *caseEnv) {
			e.zone.TXT("dsa._domainkey", "v=DKIM1; k=dsa; p="+e.keys.RSA2048.Public)
		}, steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Selector = "dsa" })}
		}, want: w("dkim", "permerror")},
		{name: "rsa-sha1-dkimpy", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Alg = "rsa-sha1" })}
		}, want: w("spf", "neutral", "dkim", "policy", "dmarc", "fail/reject/reject"),
			exceptions: []exception{rsaSHA1("pass"), {method: "dmarc", oracle: "pass/reject", rule: "RFC 8301 §3.1 wins",
				why: "the only aligned signature is rsa-sha1: OpenDMARC is fed dkimpy's pass, RFC 8301 makes it no pass"}}},
		{name: "rsa-sha1-opendkim", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{{Op: "dkim", Via: "opendkim", Key: e.keys.RSA2048.File, Selector: "rsa2048", Domain: e.d}}
		}, want: w("dkim", "policy"), exceptions: []exception{rsaSHA1("pass")}},
		{name: "rsa512", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.sign(e.keys.RSA512)}
		}, want: w("dkim", "policy")},
		{name: "ed25519", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.sign(e.keys.Ed25519)}
		}},
		{name: "ed25519-dkimsign", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{{Op: "dkim", Via: "dkimsign", Key: e.keys.Ed25519.File, Selector: "ed25519", Domain: e.d, Alg: "ed25519-sha256"}}
		}},
		{name: "two-good", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.sign(e.keys.RSA2048), e.sign(e.keys.Ed25519)}
		}, want: w("dkim", "pass,pass")},
		{name: "good-and-keyless", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.sign(e.keys.RSA2048), e.signAs(e.keys.RSA1024, func(s *testenv.Step) { s.Selector = "nokey" })}
		}, want: w("spf", "neutral", "dkim", "permerror,pass")},
		{name: "relaxed-and-simple-rewrapped", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return append([]testenv.Step{
				e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Canon = "relaxed/relaxed" }),
				e.signAs(e.keys.Ed25519, func(s *testenv.Step) { s.Canon = "simple/simple" }),
			}, rewrap...)
		}, want: w("spf", "neutral", "dkim", "fail,pass")},
		{name: "subject-added-on-top", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Headers = []string{"from", "subject", "date"} }),
				{Op: "prepend", Text: "Subject: a second Subject, added on top\r\n"}}
		}},
		{name: "subject-oversigned-added", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Headers = []string{"from", "subject", "subject", "date"} }),
				{Op: "prepend", Text: "Subject: a second Subject, added on top\r\n"}}
		}, want: w("spf", "neutral", "dkim", "fail", "dmarc", "fail/reject/reject")},
		{name: "empty-body-simple", body: "\r\n", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Canon = "simple/simple" })}
		}},
		{name: "empty-body-relaxed", body: "\r\n", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Canon = "relaxed/relaxed" })}
		}},
		{name: "identity-subdomain", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.signAs(e.keys.RSA2048, func(s *testenv.Step) { s.Identity = "alice@sub." + e.d })}
		}},
		{name: "third-party-signer", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{testenv.DKIM(e.keys.RSA2048, "rsa2048", "thirdparty.test")}
		}, want: w("spf", "neutral", "dmarc", "fail/reject/reject")},
		{name: "third-party-and-author", spf: "v=spf1 ?all", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.sign(e.keys.Ed25519), testenv.DKIM(e.keys.RSA2048, "rsa2048", "thirdparty.test")}
		}, want: w("spf", "neutral", "dkim", "pass,pass")},
	}
}

func malformedCases() []diffCase {
	return []diffCase{
		rawSig("sig-no-b", "v=1; a=rsa-sha256; c=relaxed/simple; d={D}; s=rsa2048; h=from:subject; "+bh),
		rawSig("sig-version-2", "v=2; a=rsa-sha256; d={D}; s=rsa2048; h=from; "+bh+"; "+sig),
		rawSig("sig-duplicate-tag", "v=1; a=rsa-sha256; d={D}; d=evil.test; s=rsa2048; h=from; "+bh+"; "+sig),
		rawSig("sig-unknown-algorithm", "v=1; a=rsa-md5; d={D}; s=rsa2048; h=from; "+bh+"; "+sig),
		rawSig("sig-not-a-tag-list", "this is not a tag=value list; at all"),
		rawSig("sig-i-outside-d", "v=1; a=rsa-sha256; d={D}; i=@evil.test; s=rsa2048; h=from; "+bh+"; "+sig),
		withException(rawSig("sig-from-not-signed", "v=1; a=rsa-sha256; d={D}; s=rsa2048; h=subject:date; "+bh+"; "+sig),
			exception{method: "dkim", oracle: "fail", rule: "RFC 6376 §6.1.1 wins",
				why: "h= without From: the Verifier MUST ignore the signature and return PERMFAIL (From field not signed); dkimpy does not check and goes on to the hashes"}),
		rawSig("sig-b-not-base64", "v=1; a=rsa-sha256; d={D}; s=rsa2048; h=from; "+bh+"; b=!!!*&^%"),
		rawSig("sig-empty-d", "v=1; a=rsa-sha256; d=; s=rsa2048; h=from; "+bh+"; "+sig),
		rawSig("sig-l-not-a-number", "v=1; a=rsa-sha256; d={D}; s=rsa2048; h=from; l=many; "+bh+"; "+sig),
	}
}

func spfCases() []diffCase {
	var lookups11, lookups10 []string
	for i := 1; i <= 11; i++ {
		lookups11 = append(lookups11, fmt.Sprintf("a:h%d.{D}", i))
	}
	lookups10 = lookups11[:10]
	manyHosts := func(e *caseEnv) {
		for i := 1; i <= 11; i++ {
			e.zone.Add(fmt.Sprintf("h%d", i), "A", "192.0.2.1")
		}
	}
	return []diffCase{
		{name: "spf-fail", spf: "v=spf1 -all", want: w("spf", "fail")},
		{name: "spf-softfail", spf: "v=spf1 ~all", want: w("spf", "softfail")},
		{name: "spf-neutral", spf: "v=spf1 ?all", want: w("spf", "neutral")},
		{name: "spf-plus-all", spf: "v=spf1 +all"},
		{name: "spf-no-record", spf: "-", want: w("spf", "none")},
		{name: "spf-two-records", zone: func(e *caseEnv) { e.zone.TXT("@", "v=spf1 -all") }, want: w("spf", "permerror")},
		{name: "spf-include", spf: "v=spf1 include:_spf.{D} -all", zone: func(e *caseEnv) {
			e.zone.TXT("_spf", e.x("v=spf1 ip4:{IP} -all"))
		}},
		{name: "spf-include-no-match", spf: "v=spf1 include:_spf.{D} -all", zone: func(e *caseEnv) {
			e.zone.TXT("_spf", "v=spf1 ip4:192.0.2.1 -all")
		}, want: w("spf", "fail")},
		{name: "spf-include-no-record", spf: "v=spf1 include:_none.{D} ip4:{IP} -all", want: w("spf", "permerror")},
		{name: "spf-redirect", spf: "v=spf1 redirect=_r.{D}", zone: func(e *caseEnv) {
			e.zone.TXT("_r", e.x("v=spf1 ip4:{IP} -all"))
		}},
		{name: "spf-redirect-no-record", spf: "v=spf1 redirect=_none.{D}", want: w("spf", "permerror")},
		{name: "spf-macro-i", spf: "v=spf1 exists:%{i}._i.{D} -all", zone: func(e *caseEnv) {
			e.zone.Add(e.ip+"._i", "A", "127.0.0.2")
		}},
		{name: "spf-macro-ir-v", spf: "v=spf1 exists:%{ir}.%{v}._rv.{D} -all", zone: func(e *caseEnv) {
			e.zone.Add(strings.TrimSuffix(reverseName(e.ip), ".arpa.")+"._rv", "A", "127.0.0.2")
		}},
		{name: "spf-macro-l-d", spf: "v=spf1 exists:%{l}.%{d}._ld.{D} -all", zone: func(e *caseEnv) {
			e.zone.Add(e.x("alice.{D}._ld.{D}."), "A", "127.0.0.2")
		}},
		{name: "spf-macro-s", spf: "v=spf1 exists:%{s}._s.{D} -all", zone: func(e *caseEnv) {
			e.zone.Add(e.x(`alice\@{D}._s.{D}.`), "A", "127.0.0.2")
		}},
		{name: "spf-macro-h", spf: "v=spf1 exists:%{h}._h.{D} -all", zone: func(e *caseEnv) {
			e.zone.Add(e.x("mx.{D}._h.{D}."), "A", "127.0.0.2")
		}},
		{name: "spf-macro-transformers", mailFrom: "alice-smith@a.b.{D}", zone: func(e *caseEnv) {
			e.zone.TXT("a.b", e.x("v=spf1 exists:%{l-}.%{d2}._t.{D} -all"))
			e.zone.Add(e.x("alice.smith.{D}._t.{D}."), "A", "127.0.0.2")
		}},
		{name: "spf-void-lookups-3", spf: "v=spf1 a:v1.{D} a:v2.{D} a:v3.{D} ip4:{IP} -all", want: w("spf", "permerror")},
		{name: "spf-void-lookups-2", spf: "v=spf1 a:v1.{D} a:v2.{D} ip4:{IP} -all"},
		{name: "spf-11-lookups", spf: "v=spf1 " + strings.Join(lookups11, " ") + " ip4:{IP} -all", zone: manyHosts, want: w("spf", "permerror")},
		{name: "spf-10-lookups", spf: "v=spf1 " + strings.Join(lookups10, " ") + " ip4:{IP} -all", zone: manyHosts},
		{name: "spf-include-loop", spf: "v=spf1 include:{D} -all", want: w("spf", "permerror")},
		{name: "spf-mx", spf: "v=spf1 mx -all", zone: func(e *caseEnv) { e.zone.Add("@", "MX", e.x("10 mx.{D}.")) }},
		{name: "spf-a-cidr", spf: "v=spf1 a:other.{D}/24 -all", zone: func(e *caseEnv) { e.zone.Add("other", "A", "127.0.0.250") }},
		{name: "spf-ptr", spf: "v=spf1 ptr -all"},
		{name: "spf-redirect-ignored-with-all", spf: "v=spf1 -all redirect=_r.{D}", zone: func(e *caseEnv) {
			e.zone.TXT("_r", e.x("v=spf1 ip4:{IP} -all"))
		}, want: w("spf", "fail")},
		{name: "spf-mx-11-records", spf: "v=spf1 mx ip4:{IP} -all", zone: func(e *caseEnv) {
			for i := 1; i <= 11; i++ {
				e.zone.Add("@", "MX", fmt.Sprintf("%d m%d.%s.", i, i, e.d)).Add(fmt.Sprintf("m%d", i), "A", "192.0.2.1")
			}
		}, want: w("spf", "permerror")},
		{name: "spf-syntax-error-before-match", spf: "v=spf1 foo:bar ip4:{IP} -all", want: w("spf", "permerror")},
		{name: "spf-syntax-error-after-match", spf: "v=spf1 ip4:{IP} foo:bar -all", want: w("spf", "permerror")},
		{name: "spf-exp", spf: "v=spf1 -all exp=_exp.{D}", zone: func(e *caseEnv) {
			e.zone.TXT("_exp", "%{i} is not one of %{d}'s servers")
		}, want: w("spf", "fail")},
		{name: "spf-helo-null-sender", mailFrom: "<>", zone: func(e *caseEnv) {
			e.zone.TXT("mx", e.x("v=spf1 ip4:{IP} -all"))
		}, want: w("spf", "pass (helo)")},
		{name: "spf-helo-fail", mailFrom: "<>", zone: func(e *caseEnv) {
			e.zone.TXT("mx", "v=spf1 -all")
		}, want: w("spf", "fail (helo)")},
		{name: "spf-ip6", ipv6: true, spf: "v=spf1 ip6:2001:db8::/64 -all"},
		{name: "dns-timeout", blackhole: true, want: w("spf", "temperror", "dkim", "temperror", "dmarc", "temperror", "iprev", "temperror")},
	}
}

func dmarcCases() []diffCase {
	spfFails := "v=spf1 -all"
	return []diffCase{
		{name: "dmarc-no-record", dmarc: "-", want: w("dmarc", "none")},
		{name: "dmarc-p-none", dmarc: "v=DMARC1; p=none", spf: spfFails, steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.sign(e.keys.RSA2048), tamperBody}
		}, want: w("spf", "fail", "dkim", "fail", "dmarc", "fail/none/none")},
		{name: "dmarc-quarantine", dmarc: "v=DMARC1; p=quarantine", spf: spfFails, noSign: true,
			want: w("spf", "fail", "dkim", "none", "dmarc", "fail/quarantine/quarantine")},
		{name: "dmarc-reject", spf: spfFails, noSign: true, want: w("spf", "fail", "dkim", "none", "dmarc", "fail/reject/reject")},
		{name: "dmarc-dkim-relaxed", spf: spfFails, zone: subKeys, steps: signSub,
			want: w("spf", "fail", "dmarc", "pass/reject")},
		{name: "dmarc-dkim-strict", dmarc: "v=DMARC1; p=reject; adkim=s", spf: spfFails, zone: subKeys, steps: signSub,
			want: w("spf", "fail", "dmarc", "fail/reject/reject"), exceptions: []exception{strictAlignment}},
		{name: "dmarc-spf-relaxed", mailFrom: "bounce@bounce.{D}", noSign: true, zone: bounceSPF,
			want: w("dkim", "none")},
		{name: "dmarc-spf-strict", dmarc: "v=DMARC1; p=reject; aspf=s", mailFrom: "bounce@bounce.{D}", noSign: true, zone: bounceSPF,
			want: w("dkim", "none", "dmarc", "fail/reject/reject"), exceptions: []exception{strictAlignment}},
		{name: "dmarc-sp", dmarc: "v=DMARC1; p=reject; sp=quarantine", from: "Alice <alice@sub.{D}>", spf: spfFails, noSign: true,
			want: w("spf", "fail", "dkim", "none", "dmarc", "fail/quarantine/quarantine")},
		{name: "dmarc-sp-absent", dmarc: "v=DMARC1; p=quarantine", from: "Alice <alice@sub.{D}>", spf: spfFails, noSign: true,
			want: w("spf", "fail", "dkim", "none", "dmarc", "fail/quarantine/quarantine")},
		{name: "dmarc-org-record-deep", dmarc: "v=DMARC1; p=reject; sp=none", from: "Alice <alice@a.b.{D}>", spf: spfFails, noSign: true,
			want: w("spf", "fail", "dkim", "none", "dmarc", "fail/none/none")},
		{name: "dmarc-own-subdomain-record", from: "Alice <alice@sub.{D}>", spf: spfFails, noSign: true, zone: func(e *caseEnv) {
			e.zone.TXT("_dmarc.sub", "v=DMARC1; p=none")
		}, want: w("spf", "fail", "dkim", "none", "dmarc", "fail/none/none")},
		{name: "dmarc-pct0-quarantine", dmarc: "v=DMARC1; p=quarantine; pct=0", spf: spfFails, noSign: true,
			want: w("spf", "fail", "dkim", "none", "dmarc", "fail/quarantine/none")},
		{name: "dmarc-pct0-reject", dmarc: "v=DMARC1; p=reject; pct=0", spf: spfFails, noSign: true,
			want: w("spf", "fail", "dkim", "none", "dmarc", "fail/reject/quarantine"),
			exceptions: []exception{{method: "dmarc", oracle: "fail/reject/none", rule: "RFC 7489 §6.6.4 wins",
				why: "a message not sampled for p=reject is treated as if p=quarantine applied; the opendmarc milter applies nothing"}}},
		{name: "dmarc-pct100", dmarc: "v=DMARC1; p=reject; pct=100", spf: spfFails, noSign: true,
			want: w("spf", "fail", "dkim", "none", "dmarc", "fail/reject/reject")},
		{name: "dmarc-pct50-drawn-in", dmarc: "v=DMARC1; p=quarantine; pct=50", spf: spfFails, noSign: true, rand: 0.25,
			want: w("spf", "fail", "dkim", "none", "dmarc", "fail/quarantine/quarantine")},
		{name: "dmarc-pct50-drawn-out", dmarc: "v=DMARC1; p=quarantine; pct=50", spf: spfFails, noSign: true, rand: 0.75,
			want: w("spf", "fail", "dkim", "none", "dmarc", "fail/quarantine/none")},
		{name: "dmarc-invalid-record", dmarc: "v=DMARC1; p=bogus", spf: spfFails, noSign: true,
			want: w("spf", "fail", "dkim", "none", "dmarc", "none")},
		{name: "dmarc-two-records", spf: spfFails, noSign: true, zone: func(e *caseEnv) {
			e.zone.TXT("_dmarc", "v=DMARC1; p=quarantine")
		}, want: w("spf", "fail", "dkim", "none", "dmarc", "none"),
			exceptions: []exception{{method: "dmarc", oracle: "fail/reject/reject", rule: "RFC 7489 §6.6.3 wins",
				why: "with more than one DMARC record, policy discovery ends and DMARC is not applied; OpenDMARC 1.4.2 takes the first record"}}},
		{name: "dmarc-v-not-first", dmarc: "p=reject; v=DMARC1", spf: spfFails, noSign: true,
			want: w("spf", "fail", "dkim", "none", "dmarc", "none"),
			exceptions: []exception{{method: "dmarc", oracle: "fail/reject/reject", rule: "RFC 7489 §6.6.3 wins",
				why: "records that do not start with v=DMARC1 are discarded; OpenDMARC 1.4.2 reads the tags in any order"}}},
		{name: "dmarc-multiple-from", header: "From: Mallory <mallory@evil.test>\r\n",
			want: w("dmarc", "permerror", "dkim", "?"),
			exceptions: []exception{{method: "dmarc", oracle: "n/a", rule: "no oracle, RFC 7489 §6.6.1",
				why: "libopendmarc takes one From domain; RFC 5322 §3.6 allows one From field, RFC 7489 lets the receiver refuse such a message"}}},
		{name: "dmarc-no-from", from: "-", noSign: true, want: w("dmarc", "permerror", "dkim", "none"),
			exceptions: []exception{{method: "dmarc", oracle: "n/a", rule: "no oracle, RFC 7489 §6.6.1",
				why: "there is no From domain to give libopendmarc; RFC 5322 §3.6 requires a From field"}}},
	}
}

// subKeys publishes the keys at sub.{D} too; signSub signs as sub.{D}.
func subKeys(e *caseEnv) { e.zone.TXT("rsa2048._domainkey.sub", e.keys.RSA2048.Record()) }

func signSub(e *caseEnv) []testenv.Step {
	return []testenv.Step{testenv.DKIM(e.keys.RSA2048, "rsa2048", "sub."+e.d)}
}

// bounceSPF lets the case's address send as bounce.{D}.
func bounceSPF(e *caseEnv) { e.zone.TXT("bounce", e.x("v=spf1 ip4:{IP} -all")) }

func arcCases() []diffCase {
	hops := func(n int) func(e *caseEnv) []testenv.Step {
		return func(e *caseEnv) []testenv.Step {
			steps := []testenv.Step{e.sign(e.keys.RSA2048)}
			for i := 1; i <= n; i++ {
				h := e.hop(i)
				if i == 2 {
					h.Via, h.Key, h.Selector = "arcsign", e.keys.RSA1024.File, "rsa1024"
				}
				steps = append(steps, h)
			}
			return steps
		}
	}
	then := func(base func(e *caseEnv) []testenv.Step, more ...testenv.Step) func(e *caseEnv) []testenv.Step {
		return func(e *caseEnv) []testenv.Step { return append(base(e), more...) }
	}
	return []diffCase{
		{name: "arc-absent", want: w("arc", "none")},
		{name: "arc-1-hop", steps: hops(1), want: w("arc", "pass")},
		{name: "arc-2-hops", steps: hops(2), want: w("arc", "pass")},
		{name: "arc-3-hops", steps: hops(3), want: w("arc", "pass")},
		{name: "arc-seal-cv-forged", steps: then(hops(2), testenv.Step{Op: "replace", Old: "cv=none", New: "cv=pass"}),
			want: w("arc", "fail")},
		{name: "arc-seal-altered", steps: then(hops(1), testenv.Step{Op: "replace", Old: "ARC-Seal: i=1;", New: "ARC-Seal: i=1; x=1;"}),
			want: w("arc", "fail")},
		{name: "arc-ams-body-tampered", steps: then(hops(1), tamperBody), want: w("dkim", "fail", "arc", "fail")},
		{name: "arc-aar-tampered", steps: then(hops(1), testenv.Step{Op: "replace", Old: "; dkim=pass header.d", New: "; dkim=fail header.d"}),
			want: w("arc", "fail")},
		{name: "arc-seal-key-missing", steps: func(e *caseEnv) []testenv.Step {
			h := e.hop(1)
			h.Selector = "nokey"
			return []testenv.Step{e.sign(e.keys.RSA2048), h}
		}, want: w("arc", "fail")},
		{name: "arc-rsa512", steps: func(e *caseEnv) []testenv.Step {
			h := e.hop(1)
			h.Key, h.Selector = e.keys.RSA512.File, "rsa512"
			return []testenv.Step{e.sign(e.keys.RSA2048), h}
		}, want: w("arc", "fail")},
		{name: "arc-resealed-after-failure", steps: func(e *caseEnv) []testenv.Step {
			return []testenv.Step{e.sign(e.keys.RSA2048), e.hop(1), tamperBody, e.hop(2)}
		}, want: w("dkim", "fail", "arc", "fail")},
	}
}

func iprevCases() []diffCase {
	return []diffCase{
		{name: "iprev-no-ptr", ptr: "-", want: w("iprev", "permerror")},
		{name: "iprev-mismatch", ptr: "liar.{D}", zone: func(e *caseEnv) { e.zone.Add("liar", "A", "192.0.2.7") }, want: w("iprev", "fail")},
		{name: "iprev-second-ptr-confirms", ptr: "nope.{D},mx.{D}"},
		{name: "iprev-name-without-address", ptr: "ghost.{D}", want: w("iprev", "fail")},
	}
}

func badInputCases() []diffCase {
	big := func(n int) string {
		var b strings.Builder
		b.WriteString("X-Big: start")
		for b.Len() < n {
			b.WriteString("\r\n\tfolded line of a very large header field, 0123456789abcdef")
		}
		return b.String() + "\r\n"
	}
	return []diffCase{
		{name: "huge-header-200k", header: big(200 << 10)},
		{name: "huge-header-1m", header: big(1 << 20), want: w("dkim", "permerror", "dmarc", "permerror"),
			exceptions: []exception{
				{method: "dkim", oracle: "pass", rule: "bad-input bound Verifier.MaxHeaderBytes (256 KiB)",
					why: "our bound on the header kept per message; past it every signature is permerror, dkimpy has no bound"},
				{method: "dmarc", oracle: "pass/reject", rule: "bad-input bound Verifier.MaxHeaderBytes (256 KiB)",
					why: "past the bound a From field might be missed: permerror"}}},
		// 1000 fields are about 300 KiB: the header bound is raised to 1 MiB for this case
		{name: "dkim-1000-signatures", maxLookups: 20, maxHeaderBytes: 1 << 20, steps: func(e *caseEnv) []testenv.Step {
			// simple/simple: dkimpy re-canonicalizes every field for every signature, relaxed is slow
			return []testenv.Step{e.signAs(e.keys.Ed25519, func(s *testenv.Step) { s.Headers, s.Canon = []string{"from"}, "simple/simple" }),
				{Op: "repeat", Text: "DKIM-Signature", Count: 999}}
		}, want: w("dkim", fmt.Sprintf("pass×%d,policy×%d", mailauth.MaxDKIMSignatures, 1000-mailauth.MaxDKIMSignatures)),
			exceptions: []exception{{method: "dkim", oracle: "pass×1000", rule: "RFC 6376 §6.1 wins",
				why: fmt.Sprintf("a Verifier MAY limit the number of signatures it tries: ours verifies the first %d (one key lookup), the rest are policy; dkimpy verifies all", mailauth.MaxDKIMSignatures)}}},
	}
}
