package testenv

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Question is one message and what SMTP said about its sender, for the oracles.
type Question struct {
	ID       string  `json:"id"`
	Message  []byte  `json:"message"`
	IP       string  `json:"ip"`
	Helo     string  `json:"helo"`
	MailFrom string  `json:"mailfrom"` // "" for <>
	Rand     float64 `json:"rand"`     // the pinned DMARC pct draw in [0,1)
	// AR is an Authentication-Results field for python3-authres to parse ("": none).
	AR string `json:"ar,omitempty"`
}

// Answer is what the oracles say about one Question (see scripts/oracle.py for how each
// tool's outcome is put in RFC 8601 words).
type Answer struct {
	DKIM  []DKIMAnswer `json:"dkim"` // dkimpy, one per DKIM-Signature field in header order
	ARC   Verdict      `json:"arc"`  // dkimpy's arc_verify
	SPF   SPFAnswer    `json:"spf"`  // pyspf
	DMARC DMARCAnswer  `json:"dmarc"`
	IPRev IPRevAnswer  `json:"iprev"` // RFC 8601 §2.7.3 with dnspython
	// Header is python3-authres's reading of Question.AR.
	Header HeaderAnswer `json:"header"`
	Ms     int          `json:"ms"` // how long the oracles took over this question
}

// HeaderAnswer is an Authentication-Results field as python3-authres parsed it.
type HeaderAnswer struct {
	Error      string `json:"error"` // the parser's complaint; "" when it parsed
	AuthServID string `json:"authserv_id"`
	Methods    []struct {
		Method string            `json:"method"`
		Result string            `json:"result"`
		Props  map[string]string `json:"props"` // "header.d" → "example.test"
	} `json:"methods"`
}

// Verdict is a result word and the tool's reason.
type Verdict struct {
	Result string `json:"result"`
	Reason string `json:"reason"`
}

// DKIMAnswer is dkimpy's verdict on one signature.
type DKIMAnswer struct {
	Verdict
	Domain    string `json:"d"`
	Selector  string `json:"s"`
	Algorithm string `json:"a"`
	Identity  string `json:"i"`
}

// SPFAnswer is pyspf's verdict.
type SPFAnswer struct {
	Verdict
	Identity string `json:"identity"` // "mailfrom" or "helo"
	Domain   string `json:"domain"`
}

// DMARCAnswer is OpenDMARC's verdict. Result is "n/a" when the message does not have exactly
// one From domain (libopendmarc takes one).
type DMARCAnswer struct {
	Verdict
	FromDomain   string `json:"from_domain"`
	RecordDomain string `json:"record_domain"` // where the record was looked for last
	Policy       string `json:"policy"`        // p= or sp=, as OpenDMARC chose
	Applied      string `json:"applied"`       // after pct, as the opendmarc milter applies it
	P            string `json:"p"`
	SP           string `json:"sp"`
	Pct          int    `json:"pct"`
}

// IPRevAnswer is the iprev verdict.
type IPRevAnswer struct {
	Verdict
	Name string `json:"name"`
}

// Ask puts every question to the oracles in one Python process whose every DNS query goes
// to dnsAddr (dkimpy, pyspf and dnspython through dnspython's default resolver, OpenDMARC
// through libopendmarc's name-server list), each lookup given timeout. The organizational
// domain for OpenDMARC comes from a public suffix list holding "test" (publicsuffix's
// default rule "*" says the same of names under .test). It returns the answers by ID.
func Ask(t testing.TB, dnsAddr string, timeout time.Duration, qs []Question) map[string]Answer {
	t.Helper()
	psl := filepath.Join(t.TempDir(), "public_suffix_list.dat")
	if err := os.WriteFile(psl, []byte("// the test TLD\ntest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	secs := strconv.FormatFloat(timeout.Seconds(), 'f', -1, 64)
	// glibc's resolver, which libopendmarc uses, reads RES_OPTIONS: one-second tries, as
	// many as fit in timeout (glibc allows 5).
	tries := min(5, max(1, int(timeout.Seconds())))
	env := []string{"RES_OPTIONS=timeout:1 attempts:" + strconv.Itoa(tries)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out struct {
		Results map[string]Answer `json:"results"`
	}
	in := map[string]any{"dns": dnsAddr, "timeout": secs, "psl": psl, "jobs": qs}
	if err := runScript(ctx, t, "oracle.py", env, in, &out); err != nil {
		t.Fatal(err)
	}
	ms := map[string]int{}
	for _, q := range qs {
		a, ok := out.Results[q.ID]
		if !ok {
			t.Fatalf("oracles gave no answer for %s", q.ID)
		}
		ms[q.ID] = a.Ms
	}
	logSlowest(t, "the oracles", ms)
	return out.Results
}
