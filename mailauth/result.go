package mailauth

// Result is an RFC 8601 result word.
type Result string

// The result words of RFC 8601 section 2.7 (and of RFC 7208, RFC 7489, RFC 8617).
const (
	Pass      Result = "pass"
	Fail      Result = "fail"
	SoftFail  Result = "softfail"
	Neutral   Result = "neutral"
	None      Result = "none"
	TempError Result = "temperror"
	PermError Result = "permerror"
	// Policy is DKIM's word for a signature refused by local policy: rsa-sha1 and RSA
	// keys under 1024 bits (RFC 8301), an l= body length, or a signature past the
	// verification cap (MaxDKIMSignatures).
	Policy Result = "policy"
)

// Disposition is what a DMARC policy asks for a message that fails (RFC 7489 6.3).
type Disposition string

// The DMARC dispositions.
const (
	DispositionNone       Disposition = "none"
	DispositionQuarantine Disposition = "quarantine"
	DispositionReject     Disposition = "reject"
)

// Verdict is the outcome for one message.
type Verdict struct {
	AuthServID string       // the authserv-id the Field names
	SPF        SPFResult    // RFC 7208
	DKIM       []DKIMResult // one per DKIM-Signature field, in header order (none: empty)
	DMARC      DMARCResult  // RFC 7489
	ARC        ARCResult    // RFC 8617
	IPRev      IPRevResult  // RFC 8601 section 3
}

// SPFResult is the RFC 7208 check_host() result for the envelope sender.
type SPFResult struct {
	Result   Result
	Identity string // "mailfrom" or "helo" (MAIL FROM was <>)
	Domain   string // the domain checked
	Reason   string // why, for a result other than pass (the SPF library's error text)
}

// DKIMResult is the result for one DKIM-Signature field (RFC 6376).
type DKIMResult struct {
	Result     Result
	Domain     string // d=
	Selector   string // s=
	Identifier string // i= (as written; "" when absent)
	Algorithm  string // a=
	Reason     string // why, for a result other than pass
	// Signature is the start of b= (RFC 6008 header.b), telling apart signatures of
	// one domain and selector.
	Signature string
}

// DMARCResult is the RFC 7489 evaluation of the message's RFC5322.From domain.
type DMARCResult struct {
	Result     Result      // pass, fail, none, temperror, permerror
	FromDomain string      // RFC5322.From domain
	OrgDomain  string      // organizational domain (publicsuffix)
	Policy     Disposition // what the published policy asks for this message (p= or sp=); "" without a policy
	Applied    Disposition // what to do after pct= sampling ("none" when Result is not fail)
	Reason     string
}

// ARCResult is the RFC 8617 chain validation (cv) of the message's ARC sets.
type ARCResult struct {
	Result    Result // none, pass, fail
	Instances int    // i= of the newest set (0: none)
	Reason    string
}

// IPRevResult is the RFC 8601 section 3 reverse-then-forward check of the client IP.
type IPRevResult struct {
	Result Result // pass, fail, temperror, permerror
	IP     string
	Name   string // the forward-confirmed name, when pass
	Reason string
}
