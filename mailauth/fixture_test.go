package mailauth

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd/internal/testenv"
)

// fixture is a private nsd serving the zones of this package's own tests, and the
// keys published in them:
//
//	example.test   SPF for 127.0.0.2 and 127.0.0.1 (smtptest's clients), p=reject, keys rsa2048/rsa1024/rsa512/ed25519,
//	               a revoked key "revoked", mx.example.test -> 127.0.0.2
//	fwd.test       an ARC forwarder's keys, SPF for 127.0.0.3
//	sub.org.test   no DMARC record; org.test has p=quarantine sp=reject pct=50
//	127.0.0.2      PTR mx.example.test; 127.0.0.3 PTR nowhere.test (no address);
//	127.0.0.1      PTR client.example.test
type fixture struct {
	nsd  *testenv.NSD
	keys *testenv.Keyring
}

const (
	fixtureIP   = "127.0.0.2"
	fixtureHelo = "mx.example.test"
	fixtureFrom = "alice@example.test"
	fixtureID   = "mx.rcpt.test"
)

// plainMessage is the message the fixture's signers start from.
const plainMessage = "From: Alice <alice@example.test>\r\n" +
	"To: bob@rcpt.test\r\n" +
	"Subject: a test\r\n" +
	"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\n" +
	"Message-ID: <1@example.test>\r\n" +
	"\r\n" +
	"Hello,  \r\n" +
	"\tworld.\r\n" +
	"\r\n" +
	"\r\n"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	testenv.NeedPython(t)
	keys := testenv.NewKeyring(t)
	ex := testenv.Zone{Origin: "example.test."}
	for _, k := range keys.All() {
		ex.TXT(k.Name+"._domainkey", k.Record())
	}
	ex.TXT("revoked._domainkey", keys.RSA2048.Revoked()).
		TXT("two._domainkey", keys.RSA2048.Record()).
		TXT("two._domainkey", keys.RSA1024.Record()).
		TXT("@", "v=spf1 ip4:127.0.0.2 ip4:127.0.0.1 -all").
		TXT("_dmarc", "v=DMARC1; p=reject").
		Add("mx", "A", "127.0.0.2").
		Add("client", "A", "127.0.0.1")
	fwd := testenv.Zone{Origin: "fwd.test."}
	for _, k := range keys.All() {
		fwd.TXT(k.Name+"._domainkey", k.Record())
	}
	fwd.TXT("@", "v=spf1 ip4:127.0.0.3 -all")
	org := testenv.Zone{Origin: "org.test."}
	org.TXT("_dmarc", "v=DMARC1; p=quarantine; sp=reject; pct=50").
		TXT("rsa2048._domainkey", keys.RSA2048.Record()).
		TXT("@", "v=spf1 ip4:127.0.0.2 -all").
		TXT("sub", "v=spf1 ip4:127.0.0.2 -all")
	ptr := testenv.Zone{Origin: "0.0.127.in-addr.arpa."}
	ptr.Add("2", "PTR", "mx.example.test.").Add("3", "PTR", "nowhere.test.").Add("1", "PTR", "client.example.test.")
	n := testenv.StartNSD(t, ex, fwd, org, ptr, testenv.Zone{Origin: "test."})
	return &fixture{nsd: n, keys: keys}
}

// verifier is a Verifier asking the fixture's nsd.
func (f *fixture) verifier() *Verifier {
	return &Verifier{Resolver: NewResolver(f.nsd.Addr), AuthServID: fixtureID, Timeout: 5 * time.Second}
}

// sign builds messages with dkimpy (and the other signers testenv knows).
func (f *fixture) sign(t *testing.T, jobs ...testenv.SignJob) map[string][]byte {
	t.Helper()
	for i := range jobs {
		if jobs[i].Message == nil {
			jobs[i].Message = []byte(plainMessage)
		}
	}
	return testenv.Sign(t, f.nsd.Addr, jobs)
}

func conn() Connection {
	return Connection{IP: net.ParseIP(fixtureIP), Helo: fixtureHelo, MailFrom: fixtureFrom}
}

// dkimWords lists each DKIM result word, for compact comparisons.
func dkimWordList(rs []DKIMResult) string {
	var w []string
	for _, r := range rs {
		w = append(w, string(r.Result))
	}
	return strings.Join(w, ",")
}

// contextWithTimeout is the test's context with a deadline ms milliseconds away.
func contextWithTimeout(t *testing.T, ms int) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), time.Duration(ms)*time.Millisecond)
}
