package milter_test

import (
	"net/textproto"
	"slices"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/internal/testenv/realmilter"
	"github.com/midismtp/smtpd/milter"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// The differential against Postfix: the same milters behind a private Postfix 3.7
// and behind milter.Wrap, the same messages, the results compared.

// realDiffOurs starts the receiver the differential test compares with
// Postfix, calling the milters at addrs in order; it returns where to send and
// the recorder of what it delivered. It is milter.Wrap on an smtpd server
// (examples/mx's TestRealPostfixDifferential compares the program itself).
func realDiffOurs(t *testing.T, addrs []string) (string, *smtptest.Recorder) {
	t.Helper()
	// What the milters are told of the server itself: the same as Postfix.
	c := milter.Config{Hostname: realDiffHost, DaemonName: realDiffHost, MTAVersion: realmilter.PostfixVersion(t)}
	for _, a := range addrs {
		c.Milters = append(c.Milters, milter.Milter{Addr: a})
	}
	r := realOurs(t, c, false)
	return r.addr, &r.store.Recorder
}

// realDiffPostfix starts one private Postfix with a listener per milter chain,
// relaying to a capturing server; it returns the listeners' addresses and the
// recorder of what Postfix relayed.
func realDiffPostfix(t *testing.T, chains []realmilter.Chain) ([]string, *smtptest.Recorder) {
	t.Helper()
	// The sink takes 8-bit mail as it is: no conversion by Postfix's client.
	sink := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.Internationalization = true })
	pf := realmilter.StartPostfix(t, realmilter.DifferentialPostfix(sink.Addr, realDiffHost, chains))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Postfix's maillog:\n%s", pf.Maillog())
		}
	})
	return pf.Addrs, sink.Recorder
}

// realWaitID waits until r has a message with the Message-ID id and returns it.
func realWaitID(t *testing.T, r *smtptest.Recorder, id string) []byte {
	t.Helper()
	return realmilter.WaitMessageID(t, smtptest.DefaultTimeout, func() [][]byte {
		var out [][]byte
		for _, m := range r.Messages() {
			out = append(out, m.Data)
		}
		return out
	}, id)
}

// TestRealPostfixDifferential sends the same messages through the same milters
// behind Postfix 3.7 and behind milter.Wrap, and compares the outcomes: the same
// SMTP refusal, or delivered messages with the same header fields in the same
// places and the same body bytes, but for what each server adds itself
// (Postfix's Received field), the DKIM-Signature tags that change with the
// second (t=, b=: both signatures must verify with dkimpy, or both fail when a
// body was replaced after signing, and their other tags must be equal), and in
// SpamAssassin's report its random MIME boundary and the time spamass-milter
// wrote. The milters: OpenDKIM signing with simple canonicalization (every byte
// of the signed fields counts), spamass-milter marking (fields added, the body
// replaced for spam), both in a row, clamav-milter rejecting viruses and
// replacing X-Virus fields, and rspamd.
func TestRealPostfixDifferential(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	dns := realmilter.StartNSD(t, key.Zone())
	dkim := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key, Canonicalization: "simple/simple"})
	spam := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: realSpamd(t)})
	clam := realmilter.StartClamavMilter(t, realmilter.ClamavMilter{Clamd: realmilter.StartClamd(t), OnInfected: "Reject", AddHeader: "Replace"})
	chains := []realmilter.Chain{
		{Name: "opendkim", Milters: []string{dkim.Addr}},
		{Name: "spamass", Milters: []string{spam.Addr}},
		{Name: "opendkim+spamass", Milters: []string{dkim.Addr, spam.Addr}},
		{Name: "clamav", Milters: []string{clam.Addr}},
		{Name: "rspamd", Milters: []string{realRspamd(t).Addr}},
	}
	pfAddrs, pfGot := realDiffPostfix(t, chains)
	for i, c := range chains {
		oursAddr, oursGot := realDiffOurs(t, c.Milters)
		for _, m := range realDiffMessages {
			t.Run(c.Name+"/"+m.name, func(t *testing.T) {
				id := c.Name + "." + m.name + "@example.test"
				msg := realSetID(t, m.msg, id)
				pfErr, oursErr := realmilter.Deliver(pfAddrs[i], msg), realmilter.Deliver(oursAddr, msg)
				// Refused: the virus by clamav-milter, GTUBE by rspamd; no other.
				if refused := c.Name == "clamav" && m.name == "eicar" || c.Name == "rspamd" && m.name == "gtube"; refused {
					realSameRefusal(t, pfErr, oursErr)
					return
				}
				require.NoError(t, pfErr, "Postfix")
				require.NoError(t, oursErr, "milter.Wrap")
				signed := slices.Contains(c.Milters, dkim.Addr)
				replaced := slices.Contains(c.Milters, spam.Addr) && m.name == "gtube" // SpamAssassin's report
				realCompare(t, realWaitID(t, pfGot, id), realWaitID(t, oursGot, id), dns.Addr, signed, !replaced)
			})
		}
	}
}

// realDiffMessages are the messages of the differential test.
var realDiffMessages = []struct {
	name string
	msg  []byte
}{
	{"clean", realmilter.Message("Hello Bob.\n\nSee you on Monday.\n")},
	{"leading-space", realLeadingSpaceMsg},
	{"gtube", realmilter.Message("Buy now.\n" + realmilter.GTUBE + "\n")},
	{"eicar", realmilter.Message(string(realmilter.EICAR()) + "\n")},
	// Fields the milters write themselves, already there: replaced, or added to.
	{"forged-fields", realmilter.Message("Hello Bob.\n",
		"X-Virus-Status: Clean (forged)",
		"From: Alice <alice@example.test>",
		"X-Spam-Status: No, score=-100 (forged)",
		"To: Bob <bob@dest.test>",
		"X-Virus-Scanned: forged",
		"Subject: forged fields",
		"X-Spam-Flag: NO",
		"Date: "+realmilter.Date(),
		"X-Virus-Status: Clean (second, forged)",
		"Message-ID: <forged@example.test>",
	)},
}

// realSameRefusal checks that Postfix (pf) and milter.Wrap (ours) both refused a
// message, with the same reply.
func realSameRefusal(t *testing.T, pf, ours error) {
	t.Helper()
	var pfReply, oursReply *textproto.Error
	require.ErrorAs(t, pf, &pfReply, "Postfix took the message milter.Wrap refused with %v", ours)
	require.ErrorAs(t, ours, &oursReply, "milter.Wrap took the message Postfix refused with %v", pf)
	require.Equal(t, pfReply.Error(), oursReply.Error(), "Postfix's (expected) and milter.Wrap's (actual) refusals differ")
}

// realSetID returns msg with its Message-ID field's value replaced by <id>.
func realSetID(t *testing.T, msg []byte, id string) []byte {
	t.Helper()
	msg, err := realmilter.WithMessageID(msg, id)
	require.NoError(t, err)
	return msg
}

// realCompare compares a message Postfix delivered with the same one delivered
// by milter.Wrap (see TestRealPostfixDifferential and realmilter.Differential).
// When signed, both have a DKIM-Signature, which dkimpy must find good when
// verifies is set, and bad otherwise (a body replaced after signing).
func realCompare(t *testing.T, pf, ours []byte, dns string, signed, verifies bool) {
	t.Helper()
	d := realmilter.Differential{Ours: "milter.Wrap", PostfixHost: realDiffHost, DNS: dns, Signed: signed, Verifies: verifies}
	d.Compare(t, pf, ours)
}
