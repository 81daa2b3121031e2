package mailauth_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/midismtp/smtpd/internal/testenv"
	"github.com/midismtp/smtpd/mailauth"
)

// The differential table: every case's records are served by a private nsd, its message is
// built by signers we did not write (dkimpy, dkimsign, arcsign, OpenDKIM), and our Verifier
// and the oracles (dkimpy, pyspf, OpenDMARC, an RFC 8601 iprev check) judge the same message
// against the same zones. Every method of every case is compared; the case also states the
// verdict the RFCs give, so that a case the harness built wrong (both sides agreeing on an
// accident) fails too. A disagreement fails the test unless the case names the RFC that
// overrides the oracle (dkimpy accepts rsa-sha1, RFC 8301 refuses it) — and even then the
// oracle must say what the exception expects it to.
//
// MAILAUTH_TABLE=path writes the table as Markdown to path.

const (
	authServID  = "mx.rcpt.test"
	caseTimeout = 5 * time.Second // the Verifier's Timeout for cases served by nsd
	holeTimeout = 2 * time.Second // the Verifier's Timeout against the blackhole
	// the oracles' per-lookup timeout: generous for nsd (a loaded machine must not make a
	// temperror), short for the blackhole (every lookup there times out)
	oracleLookup     = 5 * time.Second
	oracleHoleLookup = time.Second
)

// methods in table order.
var methods = []string{"spf", "dkim", "dmarc", "arc", "iprev", "header"}

// defaultWant is what a case that changes nothing gets: the default zone publishes SPF
// for the case's IP, its keys, p=reject, a PTR; the default message is DKIM-signed by the
// From domain.
var defaultWant = map[string]string{
	"spf": "pass", "dkim": "pass", "dmarc": "pass/reject", "arc": "none", "iprev": "pass",
}

// exception is a row where an RFC overrides the oracle: ours must say the case's want, the
// oracle must say oracle.
type exception struct {
	method, oracle string
	rule           string // "RFC 8301 §3.1 wins"
	why            string
}

// row is one line of the table.
type row struct {
	Case, Method, Ours, Oracle, Verdict string
	OK                                  bool
}

// outcome is what our Verifier made of one case.
type outcome struct {
	v        *mailauth.Verdict
	streamed *mailauth.Verdict // the same message through Begin, Write in odd pieces, Close
	field    string
	elapsed  time.Duration
	lookups  int64
}

func TestDifferential(t *testing.T) {
	testenv.NeedPython(t)
	keys := testenv.NewKeyring(t)
	cases := differentialCases()
	envs, zones := buildZones(t, keys, cases)
	start := time.Now()
	ns := testenv.StartNSD(t, zones...)
	hole := testenv.StartBlackhole(t)
	started := time.Now()
	msgs := signAll(t, ns.Addr, cases, envs)
	signed := time.Now()

	ours := runOurs(t, ns.Addr, hole, cases, envs, msgs)
	verified := time.Now()
	answers := askOracles(t, ns.Addr, hole, cases, envs, msgs, ours)
	asked := time.Now()

	var rows []row
	for i, c := range cases {
		rows = append(rows, compareCase(t, c, envs[i], ours[i], answers[c.name])...)
	}
	report(t, rows)
	t.Logf("nsd up in %v, signing %v, our Verifier %v, oracles %v (%d cases, %d zones)",
		started.Sub(start).Round(time.Millisecond), signed.Sub(started).Round(time.Millisecond),
		verified.Sub(signed).Round(time.Millisecond),
		asked.Sub(verified).Round(time.Millisecond), len(cases), len(zones))
}

// signAll builds every case's message through testenv.Sign, in one Python process.
func signAll(t *testing.T, dnsAddr string, cases []diffCase, envs []*caseEnv) map[string][]byte {
	t.Helper()
	jobs := make([]testenv.SignJob, len(cases))
	for i, c := range cases {
		jobs[i] = testenv.SignJob{ID: c.name, Message: []byte(envs[i].message(c)), Steps: envs[i].steps(c)}
	}
	return testenv.Sign(t, dnsAddr, jobs)
}

// countingResolver counts the lookups of one message.
type countingResolver struct {
	mailauth.Resolver
	n atomic.Int64
}

func (c *countingResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	c.n.Add(1)
	return c.Resolver.LookupTXT(ctx, name)
}

func (c *countingResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	c.n.Add(1)
	return c.Resolver.LookupAddr(ctx, addr)
}

func (c *countingResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	c.n.Add(1)
	return c.Resolver.LookupIPAddr(ctx, host)
}

func (c *countingResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	c.n.Add(1)
	return c.Resolver.LookupMX(ctx, name)
}

// runOurs runs our Verifier on every case, four at a time.
func runOurs(t *testing.T, nsAddr, hole string, cases []diffCase, envs []*caseEnv, msgs map[string][]byte) []outcome {
	t.Helper()
	out := make([]outcome, len(cases))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i] = verifyOne(c, envs[i], nsAddr, hole, msgs[c.name])
		}()
	}
	wg.Wait()
	return out
}

func verifyOne(c diffCase, e *caseEnv, nsAddr, hole string, msg []byte) outcome {
	addr, timeout := nsAddr, caseTimeout
	if c.blackhole {
		addr, timeout = hole, holeTimeout
	}
	r := &countingResolver{Resolver: mailauth.NewResolver(addr)}
	v := &mailauth.Verifier{Resolver: r, AuthServID: authServID, Timeout: timeout,
		Rand: func() float64 { return e.rand }, MaxHeaderBytes: c.maxHeaderBytes}
	start := time.Now()
	verdict := v.Verify(context.Background(), e.conn(), msg)
	o := outcome{v: verdict, field: verdict.Field(), elapsed: time.Since(start), lookups: r.n.Load()}
	sv := *v
	sv.Resolver = mailauth.NewResolver(addr)
	chk := sv.Begin(context.Background(), e.conn())
	for p := msg; len(p) > 0; {
		n := min(len(p), 1021) // odd pieces: CRLFs and the header's end fall across writes
		if _, err := chk.Write(p[:n]); err != nil {
			break
		}
		p = p[n:]
	}
	o.streamed = chk.Close()
	return o
}

// heavyMessage is the size from which a message gets a Python process of its own: dkimpy
// takes seconds over 1000 signatures or a 1 MiB header.
const heavyMessage = 100 << 10

// askOracles asks the oracles, in three processes at once: the cases served by nsd, the
// heavy ones among them, and those pointed at the blackhole.
func askOracles(t *testing.T, nsAddr, hole string, cases []diffCase, envs []*caseEnv,
	msgs map[string][]byte, ours []outcome) map[string]testenv.Answer {
	t.Helper()
	var viaNSD, heavy, viaHole []testenv.Question
	for i, c := range cases {
		e := envs[i]
		q := testenv.Question{ID: c.name, Message: msgs[c.name], IP: e.ip, Helo: e.helo,
			MailFrom: e.mailFrom, Rand: e.rand, AR: ours[i].field}
		switch {
		case c.blackhole:
			viaHole = append(viaHole, q)
		case len(q.Message) >= heavyMessage:
			heavy = append(heavy, q)
		default:
			viaNSD = append(viaNSD, q)
		}
	}
	answers := map[string]testenv.Answer{}
	var mu sync.Mutex
	t.Run("oracles", func(t *testing.T) {
		for _, g := range []struct {
			name, addr string
			timeout    time.Duration
			qs         []testenv.Question
		}{
			{"nsd", nsAddr, oracleLookup, viaNSD},
			{"nsd-heavy", nsAddr, oracleLookup, heavy},
			{"blackhole", hole, oracleHoleLookup, viaHole},
		} {
			t.Run(g.name, func(t *testing.T) {
				t.Parallel()
				if len(g.qs) == 0 {
					return
				}
				a := testenv.Ask(t, g.addr, g.timeout, g.qs)
				mu.Lock()
				defer mu.Unlock()
				for k, v := range a {
					answers[k] = v
				}
			})
		}
	})
	if len(answers) != len(cases) {
		t.Fatalf("the oracles answered %d of %d cases", len(answers), len(cases))
	}
	return answers
}

// compareCase makes the rows of one case and checks its bounds.
func compareCase(t *testing.T, c diffCase, e *caseEnv, o outcome, a testenv.Answer) []row {
	t.Helper()
	ourWords := oursByMethod(o.v)
	oracleWords := oracleByMethod(a)
	ourWords["header"], oracleWords["header"] = headerWords(o.v, a.Header)
	var rows []row
	for _, m := range methods {
		rows = append(rows, judge(c, m, ourWords[m], oracleWords[m]))
	}
	if got, want := oursByMethod(o.streamed), oursByMethod(o.v); !maps.Equal(got, want) {
		t.Errorf("%s: streamed verdict %v differs from buffered %v", c.name, got, want)
	}
	if c.maxLookups > 0 && o.lookups > c.maxLookups {
		t.Errorf("%s: our Verifier made %d lookups, the case allows %d", c.name, o.lookups, c.maxLookups)
	}
	limit := caseTimeout
	if c.blackhole {
		limit = holeTimeout
	}
	if o.elapsed > limit+2*time.Second {
		t.Errorf("%s: our Verifier took %v, its Timeout is %v", c.name, o.elapsed, limit)
	}
	for _, r := range rows {
		if !r.OK {
			t.Errorf("%s %s: ours %q, oracle %q: %s\n  our field: %s\n  oracle reasons: %s",
				r.Case, r.Method, r.Ours, r.Oracle, r.Verdict, strings.TrimSpace(o.field), reasons(a, r.Method))
		}
	}
	return rows
}

// judge decides one row.
func judge(c diffCase, m, ours, oracle string) row {
	r := row{Case: c.name, Method: m, Ours: ours, Oracle: oracle}
	want, hasWant := c.wantFor(m)
	if ex, ok := c.exceptionFor(m); ok {
		r.OK = ours == want && oracle == ex.oracle
		r.Verdict = ex.rule + ": " + ex.why
		if !r.OK {
			r.Verdict = fmt.Sprintf("DISAGREE (exception expects ours %q, oracle %q): %s", want, ex.oracle, r.Verdict)
		}
		return r
	}
	switch {
	case ours != oracle:
		r.Verdict = "DISAGREE"
	case hasWant && oracle != want:
		r.Verdict = fmt.Sprintf("agree, but the case wants %q: the case is built wrong", want)
	default:
		r.OK, r.Verdict = true, "agree"
	}
	return r
}

// oursByMethod renders our verdict in the table's words.
func oursByMethod(v *mailauth.Verdict) map[string]string {
	dkim := make([]string, len(v.DKIM))
	for i, d := range v.DKIM {
		dkim[i] = string(d.Result)
	}
	return map[string]string{
		"spf":   spfWords(string(v.SPF.Result), v.SPF.Identity),
		"dkim":  runLength(dkim),
		"dmarc": dmarcWords(string(v.DMARC.Result), string(v.DMARC.Policy), string(v.DMARC.Applied)),
		"arc":   string(v.ARC.Result),
		"iprev": string(v.IPRev.Result),
	}
}

// oracleByMethod renders the oracles' answers in the same words.
func oracleByMethod(a testenv.Answer) map[string]string {
	dkim := make([]string, len(a.DKIM))
	for i, d := range a.DKIM {
		dkim[i] = d.Result
	}
	return map[string]string{
		"spf":   spfWords(a.SPF.Result, a.SPF.Identity),
		"dkim":  runLength(dkim),
		"dmarc": dmarcWords(a.DMARC.Result, a.DMARC.Policy, a.DMARC.Applied),
		"arc":   a.ARC.Result,
		"iprev": a.IPRev.Result,
	}
}

func spfWords(result, identity string) string {
	if identity == "helo" {
		return result + " (helo)"
	}
	return result
}

// dmarcWords is "pass/<policy>", "fail/<policy>/<applied after pct>" or the bare result.
func dmarcWords(result, policy, applied string) string {
	switch result {
	case "pass":
		return "pass/" + policy
	case "fail":
		return "fail/" + policy + "/" + applied
	}
	return result
}

// runLength joins words with commas, runs of one word as "word×n"; no words is "none".
func runLength(words []string) string {
	if len(words) == 0 {
		return "none"
	}
	var parts []string
	for i := 0; i < len(words); {
		j := i
		for j < len(words) && words[j] == words[i] {
			j++
		}
		if j-i > 2 {
			parts = append(parts, fmt.Sprintf("%s×%d", words[i], j-i))
		} else {
			for range j - i {
				parts = append(parts, words[i])
			}
		}
		i = j
	}
	return strings.Join(parts, ",")
}

// headerWords renders, sorted, the method=result pairs our verdict has and those
// python3-authres read in our Authentication-Results field (with its authserv-id).
func headerWords(v *mailauth.Verdict, h testenv.HeaderAnswer) (ours, parsed string) {
	want := []string{"spf=" + string(v.SPF.Result), "dmarc=" + string(v.DMARC.Result),
		"arc=" + string(v.ARC.Result), "iprev=" + string(v.IPRev.Result)}
	// past the signatures it verifies, our field says each further result once
	seen := map[mailauth.Result]bool{}
	for i, d := range v.DKIM {
		if i >= mailauth.MaxDKIMSignatures && seen[d.Result] {
			continue
		}
		seen[d.Result] = i >= mailauth.MaxDKIMSignatures
		want = append(want, "dkim="+string(d.Result))
	}
	if len(v.DKIM) == 0 {
		want = append(want, "dkim=none")
	}
	slices.Sort(want)
	ours = authServID + "; " + runLength(want)
	if h.Error != "" {
		return ours, "unparsable: " + h.Error
	}
	var got []string
	for _, m := range h.Methods {
		got = append(got, m.Method+"="+m.Result)
	}
	slices.Sort(got)
	return ours, h.AuthServID + "; " + runLength(got)
}

// reasons are the oracle's explanations for method m.
func reasons(a testenv.Answer, m string) string {
	switch m {
	case "spf":
		return a.SPF.Reason
	case "dkim":
		var rs []string
		for _, d := range a.DKIM {
			rs = append(rs, d.Result+": "+d.Reason)
		}
		return runLength(rs)
	case "dmarc":
		return fmt.Sprintf("%s (record looked up at %s, p=%s sp=%s pct=%d)", a.DMARC.Reason, a.DMARC.RecordDomain, a.DMARC.P, a.DMARC.SP, a.DMARC.Pct)
	case "arc":
		return a.ARC.Reason
	case "iprev":
		return a.IPRev.Reason
	}
	return a.Header.Error
}
