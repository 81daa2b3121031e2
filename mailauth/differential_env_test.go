package mailauth_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/midismtp/smtpd/internal/testenv"
	"github.com/midismtp/smtpd/mailauth"
)

// diffCase is one row group of the differential table. Its domain is name+".test", served
// from its own zone; "{D}" and "{IP}" in its strings stand for that domain and the case's
// client address (127.0.0.x, or 2001:db8::x with ipv6).
type diffCase struct {
	name string

	// DNS. The zone always has the keys of the keyring at <key name>._domainkey.{D}
	// (rsa2048, rsa1024, rsa512, ed25519) and mx.{D} with the client's address.
	spf   string // the SPF record at {D}: "" is "v=spf1 ip4:{IP} -all", "-" none
	dmarc string // the record at _dmarc.{D}: "" is "v=DMARC1; p=reject", "-" none
	ptr   string // the client address's PTR names, comma-separated: "" is mx.{D}, "-" none
	zone  func(e *caseEnv)

	// SMTP
	mailFrom string // "" is alice@{D}; "<>" is the null sender
	helo     string // "" is mx.{D}
	ipv6     bool

	// The message: header lines (CRLF-ended) on top of the default ones, the From field's
	// value ("" is "Alice <alice@{D}>", "-" no From field), the body ("" a default one).
	header, from, body string
	// steps build the message as it reaches us; nil: one rsa-sha256 signature by {D} with
	// dkimpy's defaults. noSign: no steps at all.
	steps  func(e *caseEnv) []testenv.Step
	noSign bool

	want       map[string]string // the verdicts the RFCs give, by method; absent: defaultWant; "?": none stated
	exceptions []exception
	blackhole  bool    // every lookup goes to a server that never answers
	rand       float64 // the pinned DMARC draw; 0 is 0.5
	maxLookups int64   // when > 0, the most lookups our Verifier may make
	// maxHeaderBytes is the Verifier's MaxHeaderBytes (0: its default)
	maxHeaderBytes int
}

func (c diffCase) wantFor(m string) (string, bool) {
	if m == "header" {
		return "", false
	}
	if w, ok := c.want[m]; ok {
		return w, w != "?"
	}
	return defaultWant[m], true
}

func (c diffCase) exceptionFor(m string) (exception, bool) {
	for _, e := range c.exceptions {
		if e.method == m {
			return e, true
		}
	}
	return exception{}, false
}

// caseEnv is a case made concrete: its domain, address, zone and keys.
type caseEnv struct {
	d, ip, helo, mailFrom string
	rand                  float64
	keys                  *testenv.Keyring
	zone                  *testenv.Zone
	ptrs                  []string
}

// x expands {D} and {IP}.
func (e *caseEnv) x(s string) string {
	return strings.NewReplacer("{D}", e.d, "{IP}", e.ip).Replace(s)
}

// sign is a dkimpy rsa-sha256 (or ed25519-sha256) signature by {D} with key k, whose
// selector is its name.
func (e *caseEnv) sign(k *testenv.Key) testenv.Step { return testenv.DKIM(k, k.Name, e.d) }

// signAs is sign with other tags set by edit.
func (e *caseEnv) signAs(k *testenv.Key, edit func(*testenv.Step)) testenv.Step {
	s := e.sign(k)
	edit(&s)
	return s
}

// hop is one ARC hop by {D} with the 2048-bit key, authserv-id fwdN.{D}.
func (e *caseEnv) hop(n int) testenv.Step {
	return testenv.ARC(e.keys.RSA2048, "rsa2048", e.d, fmt.Sprintf("fwd%d.%s", n, e.d))
}

func (e *caseEnv) conn() mailauth.Connection {
	return mailauth.Connection{IP: net.ParseIP(e.ip), Helo: e.helo, MailFrom: e.mailFrom}
}

func (e *caseEnv) steps(c diffCase) []testenv.Step {
	switch {
	case c.noSign:
		return nil
	case c.steps == nil:
		return []testenv.Step{e.sign(e.keys.RSA2048)}
	}
	return c.steps(e)
}

// message is the case's message before its steps.
func (e *caseEnv) message(c diffCase) string {
	var b strings.Builder
	b.WriteString(e.x(c.header))
	switch c.from {
	case "":
		b.WriteString(e.x("From: Alice <alice@{D}>\r\n"))
	case "-":
	default:
		b.WriteString("From: " + e.x(c.from) + "\r\n")
	}
	b.WriteString("To: Bob <bob@rcpt.test>\r\n")
	b.WriteString("Subject: differential case " + c.name + "\r\n")
	b.WriteString("Date: Mon, 07 Dec 2026 12:00:00 +0000\r\n")
	b.WriteString(e.x("Message-ID: <" + c.name + "@{D}>\r\n"))
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	if c.body != "" {
		b.WriteString(e.x(c.body))
	} else {
		b.WriteString("Hello Bob,\r\n\r\nThis is case " + c.name + ".  Two spaces, a\ttab, a trailing space \r\n\r\n\r\n")
	}
	return b.String()
}

// buildZones makes every case's environment and the zones nsd serves: one per case, the
// reverse zones of 127.0.0.0/24 and 2001:db8::/64, thirdparty.test (a signer no From
// domain aligns with) and test. (so that a name no case owns is NXDOMAIN, not REFUSED).
func buildZones(t *testing.T, keys *testenv.Keyring, cases []diffCase) ([]*caseEnv, []testenv.Zone) {
	t.Helper()
	if len(cases) > 240 {
		t.Fatal("more cases than addresses in 127.0.0.10-250")
	}
	rev4 := testenv.Zone{Origin: "0.0.127.in-addr.arpa."}
	rev6 := testenv.Zone{Origin: "0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."}
	third := testenv.Zone{Origin: "thirdparty.test."}
	for _, k := range keys.All() {
		third.TXT(k.Name+"._domainkey", k.Record())
	}
	envs := make([]*caseEnv, len(cases))
	zones := []testenv.Zone{{Origin: "test."}, third}
	for i, c := range cases {
		e := newCaseEnv(c, i, keys)
		envs[i] = e
		rev := &rev4
		if c.ipv6 {
			rev = &rev6
		}
		for _, p := range e.ptrs {
			rev.Add(reverseName(e.ip), "PTR", p+".")
		}
		zones = append(zones, *e.zone)
	}
	return envs, append(zones, rev4, rev6)
}

func newCaseEnv(c diffCase, i int, keys *testenv.Keyring) *caseEnv {
	e := &caseEnv{d: c.name + ".test", ip: fmt.Sprintf("127.0.0.%d", 10+i), rand: c.rand, keys: keys}
	if c.ipv6 {
		e.ip = fmt.Sprintf("2001:db8::%x", 10+i)
	}
	if e.rand == 0 {
		e.rand = 0.5
	}
	e.helo = e.x(or(c.helo, "mx.{D}"))
	e.mailFrom = e.x(or(c.mailFrom, "alice@{D}"))
	if c.mailFrom == "<>" {
		e.mailFrom = ""
	}
	z := &testenv.Zone{Origin: e.d + "."}
	e.zone = z
	for _, k := range keys.All() {
		z.TXT(k.Name+"._domainkey", k.Record())
	}
	if c.ipv6 {
		z.Add("mx", "AAAA", e.ip)
	} else {
		z.Add("mx", "A", e.ip)
	}
	if c.spf != "-" {
		z.TXT("@", e.x(or(c.spf, "v=spf1 ip4:{IP} -all")))
	}
	if c.dmarc != "-" {
		z.TXT("_dmarc", e.x(or(c.dmarc, "v=DMARC1; p=reject")))
	}
	if c.ptr != "-" {
		for _, p := range strings.Split(e.x(or(c.ptr, "mx.{D}")), ",") {
			e.ptrs = append(e.ptrs, strings.TrimSpace(p))
		}
	}
	if c.zone != nil {
		c.zone(e)
	}
	return e
}

func or(s, dflt string) string {
	if s == "" {
		return dflt
	}
	return s
}

// reverseName is the rooted PTR name of ip.
func reverseName(ip string) string {
	a := net.ParseIP(ip)
	if v4 := a.To4(); v4 != nil {
		return fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa.", v4[3], v4[2], v4[1], v4[0])
	}
	var b strings.Builder
	for i := len(a) - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "%x.%x.", a[i]&0xf, a[i]>>4)
	}
	return b.String() + "ip6.arpa."
}
