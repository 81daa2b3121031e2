package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/internal/testenv/realmilter"
	"github.com/midismtp/smtpd/smtptest"
)

// The differential against Postfix with the program itself: the same milters
// behind a private Postfix 3.7 and behind mx, the same messages sent to both,
// Postfix's relayed copy and mx's .eml compared byte for byte (see
// realmilter.Differential for what is left out).

// diffHost is the name Postfix (myhostname) and mx (-authserv-id, which is also
// its milters' macros j and {daemon_name}) give the milters.
const diffHost = "mx.test"

// mxMTAVersion is the milter macro v mx gives: mx leaves milter.Config's
// MTAVersion empty, so it is the milter package's default, and mx has no flag to
// set it. Postfix gives "Postfix 3.7.11" ($mail_name $mail_version). The two
// differ in one place of the compared messages: spamass-milter writes macro v
// into the Received line it makes up for SpamAssassin ("by mx.test (v/8.13.0)
// with SMTP id"), which SpamAssassin's report quotes. The comparison masks
// exactly that token, there only (realmilter.Differential.MTAVersions).
const mxMTAVersion = "midismtp smtpd"

// diffMessages are the messages of the differential test.
var diffMessages = []struct {
	name string
	msg  []byte
}{
	{"clean", realmilter.Message("Hello Bob.\n\nSee you on Monday.\n")},
	// Fields that simple header canonicalization signs byte for byte, with
	// the white space before their values and their folding.
	{"leading-space", realmilter.LeadingSpaceMessage()},
	{"gtube", realmilter.Message("Buy now.\n" + realmilter.GTUBE + "\n")},
}

// TestRealPostfixDifferential sends each message through the same milters behind
// Postfix 3.7 and behind mx (its run, as main calls it, with -milter), and
// compares Postfix's relayed copy with mx's .eml: the same header fields in the
// same order, folding and bytes, and the same body bytes. Left out: Postfix's
// own Received field, mx's Authentication-Results (the .eml's first field), the
// DKIM-Signature's t= and b= (both signatures must verify with dkimpy, or both
// fail where SpamAssassin replaced a signed body), and in SpamAssassin's report
// its random MIME boundary, the time spamass-milter wrote and the macro v it
// quotes. The milters: OpenDKIM signing with simple canonicalization (every byte
// of the signed fields counts), spamass-milter in its default mode (X-Spam
// fields; for spam, the body replaced by SpamAssassin's report), and both.
func TestRealPostfixDifferential(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	dns := realmilter.StartNSD(t, key.Zone())
	dkim := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key, Canonicalization: "simple/simple"})
	spam := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: sharedSpamd(t)})
	chains := []realmilter.Chain{
		{Name: "opendkim", Milters: []string{dkim.Addr}},
		{Name: "spamass", Milters: []string{spam.Addr}},
		{Name: "opendkim+spamass", Milters: []string{dkim.Addr, spam.Addr}},
	}
	// The sink takes 8-bit mail as it is: no conversion by Postfix's client.
	sink := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.Internationalization = true })
	pf := realmilter.StartPostfix(t, realmilter.DifferentialPostfix(sink.Addr, diffHost, chains))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Postfix's maillog:\n%s", pf.Maillog())
		}
	})
	pfVersion := realmilter.PostfixVersion(t)
	for i, c := range chains {
		mx := startMX(t, "-milter", strings.Join(c.Milters, ","), "-authserv-id", diffHost, "-resolver", dns.Addr)
		for _, m := range diffMessages {
			t.Run(c.Name+"/"+m.name, func(t *testing.T) {
				id := c.Name + "." + m.name + "@example.test"
				msg, err := realmilter.WithMessageID(m.msg, id)
				if err != nil {
					t.Fatal(err)
				}
				if err := realmilter.Deliver(pf.Addrs[i], msg); err != nil {
					t.Fatalf("Postfix: %v", err)
				}
				if err := realmilter.Deliver(mx.Addr, msg); err != nil {
					t.Fatalf("mx: %v", err)
				}
				d := realmilter.Differential{
					Ours: "examples/mx", PostfixHost: diffHost, DNS: dns.Addr,
					Signed: slices.Contains(c.Milters, dkim.Addr),
					// SpamAssassin's report replaces the signed body.
					Verifies:    !(slices.Contains(c.Milters, spam.Addr) && m.name == "gtube"),
					MTAVersions: [2]string{pfVersion, mxMTAVersion},
				}
				pfGot := realmilter.WaitMessageID(t, smtptest.DefaultTimeout, sinkMessages(sink.Recorder), id)
				_, oursGot := ourField(t, realmilter.WaitMessageID(t, 0, emlFiles(t, mx.Out), id))
				d.Compare(t, pfGot, oursGot)
			})
		}
	}
}

// sinkMessages lists the messages r recorded.
func sinkMessages(r *smtptest.Recorder) func() [][]byte {
	return func() [][]byte {
		var out [][]byte
		for _, m := range r.Messages() {
			out = append(out, m.Data)
		}
		return out
	}
}

// emlFiles lists the .eml files mx stored in dir: each is complete before mx
// replies 250.
func emlFiles(t *testing.T, dir string) func() [][]byte {
	return func() [][]byte {
		t.Helper()
		names, err := filepath.Glob(filepath.Join(dir, "*.eml"))
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
		return out
	}
}
