package mailauth

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"time"
)

// DefaultTimeout bounds the lookups of one message when Verifier.Timeout is 0.
const DefaultTimeout = 20 * time.Second

// DefaultMaxHeaderBytes is the header section a Check keeps when
// Verifier.MaxHeaderBytes is 0: more than Postfix's header_size_limit (100 KiB).
const DefaultMaxHeaderBytes = 256 << 10

// Verifier checks messages. Zero values are useful; a Verifier may be used by many
// goroutines at once and must not be changed while in use.
type Verifier struct {
	Resolver   Resolver         // nil: net.DefaultResolver
	AuthServID string           // the authserv-id of our Authentication-Results; "": os.Hostname()
	Timeout    time.Duration    // for all lookups of one message; 0: 20 s. DNS that does not answer in time: temperror
	Now        func() time.Time // nil: time.Now (DKIM x=/t= checks; tests pin it)
	Rand       func() float64   // nil: math/rand/v2; DMARC pct sampling (a draw in [0,1) < pct/100 applies the policy)

	// MaxHeaderBytes is the most of a header section a Check keeps; 0:
	// DefaultMaxHeaderBytes. Past it, the DKIM signatures are permerror, ARC fails
	// when it has fields, and DMARC is permerror (a From field might be missed).
	MaxHeaderBytes int
}

// Connection is what SMTP told us about one message's sender.
type Connection struct {
	IP       net.IP // the real client (after PROXY/XCLIENT)
	Helo     string // HELO/EHLO domain
	MailFrom string // MAIL FROM address without brackets, "" for <>
}

func (v *Verifier) resolver() Resolver {
	if v.Resolver == nil {
		return net.DefaultResolver
	}
	return v.Resolver
}

func (v *Verifier) timeout() time.Duration {
	if v.Timeout <= 0 {
		return DefaultTimeout
	}
	return v.Timeout
}

func (v *Verifier) now() time.Time {
	if v.Now == nil {
		return time.Now()
	}
	return v.Now()
}

func (v *Verifier) draw() float64 {
	if v.Rand == nil {
		return rand.Float64()
	}
	return v.Rand()
}

func (v *Verifier) maxHeader() int {
	if v.MaxHeaderBytes <= 0 {
		return DefaultMaxHeaderBytes
	}
	return v.MaxHeaderBytes
}

// authServID is AuthServID, or the host name, or "localhost".
func (v *Verifier) authServID() string {
	if v.AuthServID != "" {
		return v.AuthServID
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// Verify checks a whole message (the buffered path): Begin, Write, Close.
func (v *Verifier) Verify(ctx context.Context, c Connection, msg []byte) *Verdict {
	ch := v.Begin(ctx, c)
	ch.Write(msg)
	return ch.Close()
}

// Check is one message being checked as it arrives. It is not safe for concurrent
// use: one goroutine writes the message and then calls Close.
type Check struct {
	v      *Verifier
	parent context.Context
	id     string

	envCtx    context.Context // SPF and iprev: Timeout from Begin
	envCancel context.CancelFunc
	spfDone   chan SPFResult
	iprevDone chan IPRevResult

	scan     headerScanner
	head     []byte
	overflow bool
	inBody   bool

	hdrCtx    context.Context // keys and DMARC: Timeout from the end of the header
	hdrCancel context.CancelFunc
	keys      *txtCache
	sigs      []dkimSig
	dkim      *dkimRun
	arc       *arcCheck
	from      string
	fromErr   error
	dmarcDone chan dmarcLookup

	verdict *Verdict
}

// Begin starts checking a message that arrives in pieces (the streaming path):
// write every byte of the message to the Check, then Close it. Memory stays
// bounded whatever the size: the header section up to MaxHeaderBytes, and of the
// body at most 288 KiB waiting for DKIM keys. The SPF and iprev lookups start at once, the DKIM, ARC and DMARC ones
// when the header section has ended; each group has Timeout to answer. Close must
// be called (ctx's end also releases what the Check holds).
func (v *Verifier) Begin(ctx context.Context, c Connection) *Check {
	ch := &Check{v: v, parent: ctx, id: v.authServID(),
		spfDone: make(chan SPFResult, 1), iprevDone: make(chan IPRevResult, 1)}
	ch.envCtx, ch.envCancel = context.WithTimeout(ctx, v.timeout())
	go func() { ch.spfDone <- v.CheckSPF(ch.envCtx, c) }()
	go func() { ch.iprevDone <- v.CheckIPRev(ch.envCtx, c.IP) }()
	return ch
}

// Write takes the next bytes of the message. It never fails, so that it can sit
// in an io.TeeReader or io.MultiWriter. While DKIM keys are being looked up, up to
// 288 KiB of the body wait in memory; past that, Write waits for the keys (at most
// Timeout).
func (c *Check) Write(p []byte) (int, error) {
	n := len(p)
	if c.verdict != nil {
		return n, nil
	}
	if !c.inBody {
		k, end := c.scan.scan(p)
		c.keepHeader(p[:k])
		if !end {
			return n, nil
		}
		c.endHeader()
		p = p[k:]
	}
	if len(p) > 0 {
		c.dkim.write(p)
		c.arc.writeBody(p)
	}
	return n, nil
}

// keepHeader stores header bytes up to the limit.
func (c *Check) keepHeader(p []byte) {
	if c.overflow {
		return
	}
	if room := c.v.maxHeader() - len(c.head); len(p) > room {
		c.head = append(c.head, p[:room]...)
		c.overflow = true
		return
	}
	c.head = append(c.head, p...)
}

// endHeader reads the header section and starts the lookups it needs.
func (c *Check) endHeader() {
	c.inBody = true
	c.hdrCtx, c.hdrCancel = context.WithTimeout(c.parent, c.v.timeout())
	c.keys = newTXTCache(c.v.resolver())
	fields := parseHeader(c.head)
	c.head = nil
	c.sigs = collectDKIM(fields)
	if c.overflow {
		c.arc = &arcCheck{}
		c.arc.decide(None, "")
		if _, n, _ := arcSets(fields); n > 0 {
			c.arc.res.Instances = n
			c.arc.decide(Fail, c.overflowReason())
		}
		return
	}
	if len(c.sigs) > 0 {
		c.dkim = startDKIM(c.parent, c.hdrCtx, c.keys, headerBytes(fields), c.sigs)
	}
	c.arc = startARC(c.hdrCtx, c.keys, fields)
	c.from, c.fromErr = fromDomain(fields)
	if c.fromErr == nil {
		c.dmarcDone = make(chan dmarcLookup, 1)
		r, from := c.v.resolver(), c.from
		go func() { c.dmarcDone <- lookupDMARC(c.hdrCtx, r, from, orgDomain(from)) }()
	}
}

// Close ends the message and returns the verdict, once every lookup has answered
// or timed out. Later calls return the same verdict.
func (c *Check) Close() *Verdict {
	if c.verdict != nil {
		return c.verdict
	}
	if !c.inBody {
		c.endHeader() // a message without an empty line: all header
	}
	defer c.envCancel()
	defer c.hdrCancel()
	vd := &Verdict{AuthServID: c.id}
	vd.DKIM, vd.ARC = c.finishHeaderChecks()
	vd.SPF = <-c.spfDone
	vd.IPRev = <-c.iprevDone
	vd.DMARC = c.dmarc(vd.SPF, vd.DKIM)
	c.verdict = vd
	return vd
}

// finishHeaderChecks returns the DKIM and ARC results.
func (c *Check) finishHeaderChecks() ([]DKIMResult, ARCResult) {
	if c.overflow {
		return refuseDKIM(c.sigs, PermError, c.overflowReason()), c.arc.res
	}
	var dkim []DKIMResult
	if c.dkim != nil {
		dkim = c.dkim.finish(c.hdrCtx, c.keys, c.v.now())
	}
	return dkim, c.arc.finish(c.hdrCtx, c.keys)
}

func (c *Check) overflowReason() string {
	return fmt.Sprintf("header section over %d bytes: not verified", c.v.maxHeader())
}

// dmarc evaluates DMARC once SPF and DKIM are known.
func (c *Check) dmarc(spf SPFResult, dkim []DKIMResult) DMARCResult {
	res := DMARCResult{FromDomain: c.from, Applied: DispositionNone}
	switch {
	case c.overflow:
		res.Result, res.Reason = PermError, c.overflowReason()
		return res
	case c.fromErr != nil:
		res.Result, res.Reason = PermError, c.fromErr.Error()
		return res
	}
	res.OrgDomain = orgDomain(c.from)
	l := <-c.dmarcDone
	if l.rec == nil {
		res.Result, res.Reason = l.result, l.reason
		return res
	}
	return evalDMARC(res, l.rec, spf, dkim, c.v.draw)
}
