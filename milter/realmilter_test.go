package milter_test

// Tests against the real milters (OpenDKIM, spamass-milter with spamd,
// clamav-milter with clamd, rspamd) and against Postfix with the same milters,
// all started by the tests on loopback by internal/realmilter. A missing program
// skips a test, or fails it when CI is set.

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/internal/testenv/realmilter"
	"github.com/midismtp/smtpd/milter"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// realSuite holds the slow starters (spamd, rspamd) for all tests of the binary.
var realSuite realmilter.Suite

func TestMain(m *testing.M) {
	code := m.Run()
	if err := realSuite.Close(); err != nil {
		fmt.Println(err)
		code = 1
	}
	os.Exit(code)
}

// realSpamd is the binary's spamd.
func realSpamd(t *testing.T) *realmilter.Spamd {
	return realmilter.Shared(&realSuite, t, "spamd", realmilter.StartSpamd)
}

// realRspamd is the binary's rspamd, with an NSD of its own as its DNS.
func realRspamd(t *testing.T) *realmilter.Milter {
	return realmilter.Shared(&realSuite, t, "rspamd", func(t realmilter.T) *realmilter.Milter {
		return realmilter.StartRspamd(t, realmilter.Rspamd{DNS: realmilter.StartNSD(t)})
	})
}

// realStore is the program's handler behind milter.Wrap: it keeps every message it
// is given, with the quarantine reason milter.Quarantined reports for it.
type realStore struct {
	smtptest.Recorder
	mu          sync.Mutex
	quarantined map[string]string // Message.ID: reason
}

func (h *realStore) OnMessage(s *smtpd.Session) error {
	if reason, ok := milter.Quarantined(s); ok {
		h.mu.Lock()
		if h.quarantined == nil {
			h.quarantined = map[string]string{}
		}
		h.quarantined[s.Message.ID] = reason
		h.mu.Unlock()
	}
	return h.Recorder.OnMessage(s)
}

// quarantine returns the quarantine reason of a stored message.
func (h *realStore) quarantine(id string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.quarantined[id]
	return r, ok
}

// realStreamStore is realStore on the streaming path (smtpd.MessageStreamer).
type realStreamStore struct{ realStore }

func (h *realStreamStore) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.Message.Data = data
	return h.realStore.OnMessage(s)
}

// realReceiver is one SMTP server under test: where to send, and what it kept.
type realReceiver struct {
	addr  string
	ts    *smtptest.Server
	store *realStore
}

// realOurs starts milter.Wrap with config c in front of a realStore (a realStreamStore
// when stream is set) on a real smtpd server on 127.0.0.1.
func realOurs(t *testing.T, c milter.Config, stream bool) realReceiver {
	t.Helper()
	var h smtpd.Handler
	var st *realStore
	if stream {
		ss := &realStreamStore{}
		h, st = ss, &ss.realStore
	} else {
		st = &realStore{}
		h = st
	}
	ts := smtptest.NewServer(t, milter.Wrap(h, c), func(s *smtpd.Server) { s.EnhancedStatusCodes = true }) // as Postfix, always
	return realReceiver{addr: ts.Addr, ts: ts, store: st}
}

// realMilters is a Config calling ms in order with Postfix's defaults.
func realMilters(ms ...*realmilter.Milter) milter.Config {
	var c milter.Config
	for _, m := range ms {
		c.Milters = append(c.Milters, milter.Milter{Addr: m.Addr})
	}
	return c
}

// realRefused checks that err is an SMTP refusal with code and that the
// reply's text contains text.
func realRefused(t *testing.T, err error, code int, text string) {
	t.Helper()
	var te *textproto.Error
	require.ErrorAs(t, err, &te)
	require.Equal(t, code, te.Code, "reply %v", te)
	require.Contains(t, te.Msg, text)
}

// realSplit splits a stored message into its header fields and its body.
func realSplit(t *testing.T, msg []byte) ([]realmilter.Field, []byte) {
	t.Helper()
	fs, body, err := realmilter.Split(msg)
	require.NoError(t, err)
	return fs, body
}

// one returns the only message r stored.
func (r realReceiver) one(t *testing.T) smtptest.Message {
	t.Helper()
	msgs := r.store.Messages()
	require.Len(t, msgs, 1)
	return msgs[0]
}

// TestRealOpenDKIMSigns: OpenDKIM in signing mode adds a DKIM-Signature that dkimpy
// verifies with the key NSD publishes, on both the buffering and the streaming
// path.
func TestRealOpenDKIMSigns(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	dns := realmilter.StartNSD(t, key.Zone())
	m := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key})
	for _, stream := range []bool{false, true} {
		r := realOurs(t, realMilters(m), stream)
		msg := realmilter.Message("Hello Bob.\n\nA signed message.\n")
		require.NoError(t, realmilter.Deliver(r.addr, msg))
		got := r.one(t).Data
		fs, body := realSplit(t, got)
		require.Equal(t, "DKIM-Signature", fs[0].Name, "OpenDKIM inserts its field first:\n%s", got)
		require.Contains(t, fs[0].Value, " d=example.test;")
		require.True(t, bytes.HasSuffix(got, msg[bytes.Index(msg, []byte("From:")):]), "the message follows unchanged:\n%s", got)
		require.Equal(t, "Hello Bob.\r\n\r\nA signed message.\r\n", string(body))
		ok, out := realmilter.DKIMVerify(t, got, dns.Addr)
		require.True(t, ok, "dkimpy: %s\n%s", out, got)
	}
}

// realLeadingSpaceMsg has header fields that simple header canonicalization (RFC
// 6376 §3.4.1) signs byte for byte: no space after the colon, two spaces, a tab,
// folding.
var realLeadingSpaceMsg = realmilter.Message("Body.\n",
	"From: Alice <alice@example.test>",
	"To:Bob <bob@dest.test>",
	"Subject:  two spaces,",
	"\tthen a folded line",
	"Date:\tMon, 07 Dec 2026 20:00:00 +0000",
	"Message-ID: <leading-space@example.test>",
)

// TestRealOpenDKIMLeadingSpace is the regression test for header values and their
// leading space: OpenDKIM negotiates SMFIP_HDR_LEADSPC and signs the values it
// is given; with simple canonicalization a client that drops (or adds) a space
// signs other bytes than those stored, and the signature fails. The control
// half proves the check can fail: the same OpenDKIM, fed values without their
// leading space by go-milter's client used naively, makes a signature dkimpy
// refuses on the stored message.
func TestRealOpenDKIMLeadingSpace(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	dns := realmilter.StartNSD(t, key.Zone())
	m := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key, Canonicalization: "simple/simple"})

	r := realOurs(t, realMilters(m), false)
	require.NoError(t, realmilter.Deliver(r.addr, realLeadingSpaceMsg))
	got := r.one(t).Data
	require.True(t, bytes.HasSuffix(got, realLeadingSpaceMsg), "stored as sent, after the signature:\n%s", got)
	ok, out := realmilter.DKIMVerify(t, got, dns.Addr)
	require.True(t, ok, "dkimpy refuses the signature made through milter.Wrap: %s\n%s", out, got)

	stripped := realSignStripped(t, m, realLeadingSpaceMsg)
	ok, out = realmilter.DKIMVerify(t, stripped, dns.Addr)
	require.False(t, ok, "control: a signature over values without their leading space must fail, dkimpy says %s\n%s", out, stripped)
}

// realSignStripped has m sign msg through go-milter's client driven by hand, giving
// each header value without its leading white space (what a client that ignores
// SMFIP_HDR_LEADSPC sends), and returns msg with the signature m added.
func realSignStripped(t *testing.T, m *realmilter.Milter, msg []byte) []byte {
	t.Helper()
	macros := gomilter.NewMacroBag()
	macros.Set(gomilter.MacroMTAFQDN, "mx.test")
	macros.Set(gomilter.MacroQueueId, "CONTROL1")
	s, err := gomilter.NewClient("tcp", m.HostPort(), gomilter.WithReadTimeout(30*time.Second)).Session(macros)
	require.NoError(t, err)
	defer s.Close()
	require.True(t, s.ProtocolOption(gomilter.OptHeaderLeadingSpace), "OpenDKIM asks for leading spaces")
	must := func(act *gomilter.Action, err error) {
		t.Helper()
		require.NoError(t, err)
		require.Equal(t, gomilter.ActionContinue, act.Type, "%v", act)
	}
	must(s.Conn("localhost", gomilter.FamilyInet, 40000, "127.0.0.1"))
	must(s.Helo("client.test"))
	must(s.Mail("<alice@example.test>", ""))
	must(s.Rcpt("<bob@dest.test>", ""))
	must(s.DataStart())
	fs, body := realSplit(t, msg)
	for _, f := range fs {
		must(s.HeaderField(f.Name, strings.TrimLeft(f.Value, " \t"), nil))
	}
	must(s.HeaderEnd())
	mods, act, err := s.BodyReadFrom(bytes.NewReader(body))
	require.NoError(t, err)
	require.Equal(t, gomilter.ActionAccept, act.Type, "%v", act)
	for _, mod := range mods {
		if mod.Type == gomilter.ActionInsertHeader && mod.HeaderName == "DKIM-Signature" {
			return append([]byte("DKIM-Signature:"+strings.ReplaceAll(mod.HeaderValue, "\n", "\r\n")+"\r\n"), msg...)
		}
	}
	t.Fatalf("control: no DKIM-Signature in %v", mods)
	return nil
}

// TestRealOpenDKIMVerifies: OpenDKIM in verifying mode checks a dkimpy signature
// with the key from NSD and adds its Authentication-Results field (its own
// authserv-id, opendkim.test), which the program's handler gets; with
// On-BadSignature reject, a tampered message is refused with OpenDKIM's reply
// and not stored.
func TestRealOpenDKIMVerifies(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	dns := realmilter.StartNSD(t, key.Zone())
	m := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "v", DNS: dns, OnBadSignature: "reject"})
	signed := realmilter.DKIMSign(t, key, "relaxed/simple", []string{"from", "to", "subject", "date", "message-id"},
		realmilter.Message("Hello Bob.\n"))

	r := realOurs(t, realMilters(m), false)
	require.NoError(t, realmilter.Deliver(r.addr, signed))
	got := r.one(t).Data
	fs, _ := realSplit(t, got)
	require.Equal(t, "Authentication-Results", fs[0].Name, "%s", got)
	require.Regexp(t, `^ opendkim\.test;\r\n\tdkim=pass \(2048-bit key; unprotected\) header\.d=example\.test `, fs[0].Value)
	require.True(t, bytes.HasSuffix(got, signed))

	tampered := bytes.Replace(signed, []byte("Hello Bob."), []byte("Hello Eve."), 1)
	r = realOurs(t, realMilters(m), true)
	realRefused(t, realmilter.Deliver(r.addr, tampered), 550, "5.7.0 bad DKIM signature data")
	require.Empty(t, r.store.Messages())
}

// TestRealSpamAssassin: spamass-milter with spamd. Configured to mark (its default),
// GTUBE gets the spam headers and SpamAssassin's report in place of the body (the
// original attached: report_safe), and a clean message its X-Spam headers;
// told not to modify (-m), GTUBE gets the X-Spam headers only; configured to
// reject at 15 points (-r 15), GTUBE (1000 points) is refused and not stored.
// Both paths: buffering and streaming.
func TestRealSpamAssassin(t *testing.T) {
	t.Parallel()
	spamd := realSpamd(t)
	mark := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: spamd})
	reject := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: spamd, RejectScore: 15})
	headersOnly := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: spamd, NoModify: true})
	gtube := realmilter.Message("Buy now.\n" + realmilter.GTUBE + "\n")
	clean := realmilter.Message("Hello Bob.\n\nSee you on Monday.\n")
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			r := realOurs(t, realMilters(mark), stream)
			require.NoError(t, realmilter.Deliver(r.addr, gtube))
			fs, body := realSplit(t, r.one(t).Data)
			require.Equal(t, []string{" YES"}, realmilter.Values(fs, "X-Spam-Flag"))
			require.Len(t, realmilter.Values(fs, "X-Spam-Status"), 1)
			require.Regexp(t, `^ Yes, score=\d{3,4}\.\d required=5\.0 tests=.*GTUBE`, realmilter.Values(fs, "X-Spam-Status")[0])
			require.Regexp(t, `^ multipart/mixed; boundary="`, realmilter.Values(fs, "Content-Type")[0], "the new Content-Type comes first")
			require.Contains(t, string(body), "Spam detection software", "SpamAssassin's report replaced the body")
			require.Contains(t, string(body), realmilter.GTUBE, "with the original attached")

			r.store.Reset()
			require.NoError(t, realmilter.Deliver(r.addr, clean))
			got := r.one(t).Data
			fs, body = realSplit(t, got)
			require.Len(t, realmilter.Values(fs, "X-Spam-Status"), 1)
			require.Regexp(t, `^ No, score=-?\d+\.\d required=5\.0 `, realmilter.Values(fs, "X-Spam-Status")[0])
			require.Len(t, realmilter.Values(fs, "X-Spam-Checker-Version"), 1)
			require.Empty(t, realmilter.Values(fs, "X-Spam-Flag"))
			require.Equal(t, "Hello Bob.\r\n\r\nSee you on Monday.\r\n", string(body))
			require.True(t, bytes.HasPrefix(got, clean[:bytes.Index(clean, []byte("\r\n\r\n"))]), "the fields added after the message's own:\n%s", got)

			r = realOurs(t, realMilters(headersOnly), stream)
			require.NoError(t, realmilter.Deliver(r.addr, gtube))
			got = r.one(t).Data
			fs, body = realSplit(t, got)
			require.Equal(t, []string{" YES"}, realmilter.Values(fs, "X-Spam-Flag"))
			require.Equal(t, "Buy now.\r\n"+realmilter.GTUBE+"\r\n", string(body), "-m: the body as sent")
			require.True(t, bytes.HasPrefix(got, gtube[:bytes.Index(gtube, []byte("\r\n\r\n"))]), "-m: the fields as sent, then the X-Spam ones:\n%s", got)

			r = realOurs(t, realMilters(reject), stream)
			realRefused(t, realmilter.Deliver(r.addr, gtube), 550, "5.7.1 Blocked by SpamAssassin")
			require.Empty(t, r.store.Messages())
		})
	}
}

// TestRealClamAV: clamav-milter with clamd and a database holding EICAR's
// signature. With OnInfected Reject the EICAR file is refused and not stored;
// with OnInfected Quarantine it is stored and milter.Quarantined reports it. A
// clean message passes both, with its X-Virus headers and no quarantine.
func TestRealClamAV(t *testing.T) {
	t.Parallel()
	clamd := realmilter.StartClamd(t)
	eicar := realmilter.Message(string(realmilter.EICAR()) + "\n")
	clean := realmilter.Message("Hello Bob.\n")
	tests := []struct {
		onInfected string
		stream     bool
	}{{"Reject", false}, {"Reject", true}, {"Quarantine", false}, {"Quarantine", true}}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/stream=%v", tc.onInfected, tc.stream), func(t *testing.T) {
			m := realmilter.StartClamavMilter(t, realmilter.ClamavMilter{Clamd: clamd, OnInfected: tc.onInfected, AddHeader: "Replace"})
			r := realOurs(t, realMilters(m), tc.stream)
			require.NoError(t, realmilter.Deliver(r.addr, clean))
			msg := r.one(t)
			fs, _ := realSplit(t, msg.Data)
			require.Equal(t, []string{" Clean"}, realmilter.Values(fs, "X-Virus-Status"))
			require.Equal(t, []string{" clamav-milter 1.4.6 at clamav.test"}, realmilter.Values(fs, "X-Virus-Scanned"))
			_, quarantined := r.store.quarantine(msg.ID)
			require.False(t, quarantined)

			r.store.Reset()
			err := realmilter.Deliver(r.addr, eicar)
			if tc.onInfected == "Reject" {
				realRefused(t, err, 550, "5.7.1")
				require.Empty(t, r.store.Messages())
				return
			}
			require.NoError(t, err)
			msg = r.one(t)
			reason, quarantined := r.store.quarantine(msg.ID)
			require.True(t, quarantined, "milter.Quarantined after clamav-milter's quarantine")
			require.Equal(t, "quarantined by clamav-milter", reason, "clamav-milter's own reason")
			fs, _ = realSplit(t, msg.Data)
			require.Equal(t, []string{" Infected (" + realmilter.EICARSignature + ".UNOFFICIAL)"}, realmilter.Values(fs, "X-Virus-Status"))
		})
	}
}

// TestRealRspamd: rspamd's proxy worker in milter mode refuses GTUBE with its reply
// (554 5.7.1 Gtube pattern) and adds its headers (milter_headers: X-Spamd-Result,
// X-Rspamd-Server, X-Spam-Status) to a clean message.
func TestRealRspamd(t *testing.T) {
	t.Parallel()
	m := realRspamd(t)
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			r := realOurs(t, realMilters(m), stream)
			realRefused(t, realmilter.Deliver(r.addr, realmilter.Message(realmilter.GTUBE+"\n")), 554, "5.7.1 Gtube pattern")
			require.Empty(t, r.store.Messages())

			require.NoError(t, realmilter.Deliver(r.addr, realmilter.Message("Hello Bob.\n")))
			fs, body := realSplit(t, r.one(t).Data)
			require.Equal(t, []string{" rspamd.test"}, realmilter.Values(fs, "X-Rspamd-Server"))
			require.Len(t, realmilter.Values(fs, "X-Spamd-Result"), 1)
			require.Regexp(t, `^ default: False \[-?\d+\.\d\d / 15\.00\];\r\n\t`, realmilter.Values(fs, "X-Spamd-Result")[0])
			require.Regexp(t, `^ No, score=`, realmilter.Values(fs, "X-Spam-Status")[0])
			require.Equal(t, "Hello Bob.\r\n", string(body))
		})
	}
}

// realDiffHost is the host name both Postfix and milter.Wrap give the milters
// (macro j) in the differential test.
const realDiffHost = "mx.test"

// realDiffOurs starts the receiver the differential test compares with
// Postfix, calling the milters at addrs in order; it returns where to send and
// the recorder of what it delivered. It is milter.Wrap on an smtpd server;
// examples/mx may take its place.
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

// realDiffPostfix starts one private Postfix with a listener per milter list,
// relaying to a capturing server; it returns the listeners' addresses and the
// recorder of what Postfix relayed.
func realDiffPostfix(t *testing.T, lists [][]string) ([]string, *smtptest.Recorder) {
	t.Helper()
	// The sink takes 8-bit mail as it is: no conversion by Postfix's client.
	sink := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.Internationalization = true })
	// Our server looks up no client host name: nor does this Postfix
	// (the milters' connect host name and macro _ are then the same).
	c := realmilter.Postfix{RelayTo: sink.Addr, Hostname: realDiffHost,
		Main: map[string]string{"smtpd_peername_lookup": "no"}}
	for _, l := range lists {
		c.Listeners = append(c.Listeners, realmilter.PostfixListener{Milters: strings.Join(l, ",")})
	}
	pf := realmilter.StartPostfix(t, c)
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
	needle := []byte("\r\nMessage-ID: <" + id + ">\r\n")
	deadline := time.Now().Add(smtptest.DefaultTimeout)
	for {
		for _, m := range r.Messages() {
			if bytes.Contains(m.Data, needle) {
				return m.Data
			}
		}
		require.True(t, time.Now().Before(deadline), "no message <%s> after %v", id, smtptest.DefaultTimeout)
		time.Sleep(20 * time.Millisecond)
	}
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
	chains := []struct {
		name  string
		addrs []string
	}{
		{"opendkim", []string{dkim.Addr}},
		{"spamass", []string{spam.Addr}},
		{"opendkim+spamass", []string{dkim.Addr, spam.Addr}},
		{"clamav", []string{clam.Addr}},
		{"rspamd", []string{realRspamd(t).Addr}},
	}
	var lists [][]string
	for _, c := range chains {
		lists = append(lists, c.addrs)
	}
	pfAddrs, pfGot := realDiffPostfix(t, lists)
	for i, c := range chains {
		oursAddr, oursGot := realDiffOurs(t, c.addrs)
		for _, m := range realDiffMessages {
			t.Run(c.name+"/"+m.name, func(t *testing.T) {
				id := c.name + "." + m.name + "@example.test"
				msg := realSetID(t, m.msg, id)
				pfErr, oursErr := realmilter.Deliver(pfAddrs[i], msg), realmilter.Deliver(oursAddr, msg)
				// Refused: the virus by clamav-milter, GTUBE by rspamd; no other.
				if refused := c.name == "clamav" && m.name == "eicar" || c.name == "rspamd" && m.name == "gtube"; refused {
					realSameRefusal(t, pfErr, oursErr)
					return
				}
				require.NoError(t, pfErr, "Postfix")
				require.NoError(t, oursErr, "milter.Wrap")
				signed := slices.Contains(c.addrs, dkim.Addr)
				replaced := slices.Contains(c.addrs, spam.Addr) && m.name == "gtube" // SpamAssassin's report
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
		"Date: Mon, 07 Dec 2026 20:00:00 +0000",
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
	fs, body := realSplit(t, msg)
	for i, f := range fs {
		if strings.EqualFold(f.Name, "Message-ID") {
			fs[i].Value = " <" + id + ">"
		}
	}
	return realmilter.Join(fs, body)
}

// realBoundary finds the MIME boundary SpamAssassin makes for its report
// ("----------=_" and random hex).
var realBoundary = regexp.MustCompile(`boundary="(----------=_[0-9A-F.]+)"`)

// realSpamassDate finds the time in the Received field spamass-milter makes
// for SpamAssassin, which its report quotes.
var realSpamassDate = regexp.MustCompile(`(\r\n\tby [^\r]* with SMTP id [^\r]*\r\n\t)[A-Z][a-z][a-z], \d+ [A-Z][a-z][a-z] \d{4} \d\d:\d\d:\d\d [-+]\d{4}`)

// realCompare compares a message Postfix delivered with the same one delivered
// by milter.Wrap (see TestRealPostfixDifferential). When signed, both have a
// DKIM-Signature, which dkimpy must find good when verifies is set, and bad
// otherwise (a body replaced after signing).
func realCompare(t *testing.T, pf, ours []byte, dns string, signed, verifies bool) {
	t.Helper()
	var texts [2]string
	for i, msg := range [][]byte{pf, ours} {
		if signed {
			ok, out := realmilter.DKIMVerify(t, msg, dns)
			require.Equal(t, verifies, ok, "%s's DKIM-Signature: dkimpy says %s\n%s", [2]string{"Postfix", "milter.Wrap"}[i], out, msg)
		}
		if m := realBoundary.FindSubmatch(msg); m != nil {
			msg = bytes.ReplaceAll(msg, m[1], []byte("BOUNDARY"))
		}
		fs, body := realSplit(t, msg)
		if i == 0 { // Postfix's own Received field (the milters see it too)
			n := len(fs)
			fs = slices.DeleteFunc(fs, func(f realmilter.Field) bool {
				return strings.EqualFold(f.Name, "Received") && strings.Contains(f.Value, "by "+realDiffHost+" (Postfix)")
			})
			require.Equal(t, n-1, len(fs), "one Received field of Postfix's in\n%s", msg)
		}
		var b strings.Builder
		for _, f := range fs {
			if strings.EqualFold(f.Name, "DKIM-Signature") {
				// SpamAssassin's report quotes it in the body too.
				body = bytes.ReplaceAll(body, []byte(f.Name+":"+f.Value), []byte(f.Name+":"+realmilter.DKIMTags(f.Value)))
				f.Value = realmilter.DKIMTags(f.Value)
			}
			b.WriteString(f.Name + ":" + f.Value + "\r\n")
		}
		body = realSpamassDate.ReplaceAll(body, []byte("${1}(the time)"))
		texts[i] = b.String() + "\r\n" + string(body)
	}
	require.Equal(t, texts[0], texts[1], "Postfix's (expected) and milter.Wrap's (actual) messages differ")
}

// realSession connects to r and greets it. It returns the connection, or the
// reply that refused the session (a milter may refuse it at connect, as in
// Postfix: 554 for reject, 421 for tempfail).
func realSession(t *testing.T, r realReceiver) (*smtptest.Conn, int, string) {
	t.Helper()
	c := r.ts.Dial(t)
	if code, text := c.Reply(); code != 220 {
		return nil, code, text
	}
	c.Send("EHLO client.test\r\n")
	if code, text := c.Reply(); code != 250 {
		return nil, code, text
	}
	return c, 250, ""
}

// realTransaction runs one mail transaction on c, from alice@example.test to
// bob@dest.test, and returns the first reply that is not a success, or the one
// to the message (250 when it was taken). beforeData runs between RCPT and DATA.
func realTransaction(c *smtptest.Conn, msg []byte, beforeData func()) (int, string) {
	for _, cmd := range []string{"MAIL FROM:<alice@example.test>", "RCPT TO:<bob@dest.test>"} {
		c.Send(cmd + "\r\n")
		if code, text := c.Reply(); code != 250 {
			return code, text
		}
	}
	if beforeData != nil {
		beforeData()
	}
	c.Send("DATA\r\n")
	if code, text := c.Reply(); code != 354 {
		return code, text
	}
	c.Send(string(msg) + ".\r\n")
	return c.Reply()
}

// realFaultTimeouts are short per-milter timeouts for the fault tests.
func realFaultTimeouts(addr string) milter.Milter {
	return milter.Milter{Addr: addr, ConnectTimeout: 2 * time.Second, CommandTimeout: 2 * time.Second, EOMTimeout: 2 * time.Second}
}

// realCheckDefault checks a transaction's outcome under action: tempfail is a
// 4xx and nothing stored, reject a 5xx and nothing stored, accept the message
// stored as sent (unfiltered: no milter touched it).
func realCheckDefault(t *testing.T, r realReceiver, action milter.DefaultAction, code int, text string, msg []byte) {
	t.Helper()
	t.Logf("%v: %d %s", action, code, text)
	switch action {
	case milter.TempFail:
		require.Equal(t, 4, code/100, "%d %s", code, text)
		require.Empty(t, r.store.Messages())
	case milter.Reject:
		require.Equal(t, 5, code/100, "%d %s", code, text)
		require.Empty(t, r.store.Messages())
	case milter.Accept:
		require.Equal(t, 250, code, "%d %s", code, text)
		require.Equal(t, string(msg), string(r.one(t).Data))
	}
}

// realActions are the default actions the fault tests try.
var realActions = []milter.DefaultAction{milter.TempFail, milter.Accept, milter.Reject}

// TestRealFaultDown: a milter that is down gets the default action: nothing
// listens on its port (a real OpenDKIM stopped before), or the real OpenDKIM was
// killed (SIGKILL) before the session.
func TestRealFaultDown(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	for _, down := range []string{"nothing listens", "killed"} {
		for _, action := range realActions {
			t.Run(down+"/"+action.String(), func(t *testing.T) {
				m := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key})
				if down == "nothing listens" {
					m.Proc.Stop() // its port is then free: nothing answers there
				} else {
					require.NoError(t, m.Proc.Signal(syscall.SIGKILL))
					require.True(t, m.Proc.Wait(5*time.Second))
				}
				r := realOurs(t, milter.Config{Milters: []milter.Milter{realFaultTimeouts(m.Addr)}, DefaultAction: action}, false)
				msg := realmilter.Message("Hello Bob.\n")
				c, code, text := realSession(t, r)
				if c != nil {
					code, text = realTransaction(c, msg, nil)
				}
				realCheckDefault(t, r, action, code, text, msg)
			})
		}
	}
}

// TestRealFaultHang: a milter that stops answering (a real OpenDKIM stopped by
// SIGSTOP, continued when the test ends) gets its timeout, then the default
// action; stopped before the session, or after RCPT (it then answers neither
// DATA nor the message). The session ends in time either way.
func TestRealFaultHang(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	for _, when := range []string{"before connect", "after RCPT"} {
		for _, action := range realActions {
			t.Run(when+"/"+action.String(), func(t *testing.T) {
				t.Parallel()
				m := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key})
				t.Cleanup(func() { m.Proc.Signal(syscall.SIGCONT) })
				stop := func() { require.NoError(t, m.Proc.Signal(syscall.SIGSTOP)) }
				r := realOurs(t, milter.Config{Milters: []milter.Milter{realFaultTimeouts(m.Addr)}, DefaultAction: action}, false)
				msg := realmilter.Message("Hello Bob.\n")
				if when == "before connect" {
					stop()
					stop = nil
				}
				c, code, text := realSession(t, r)
				if c != nil {
					code, text = realTransaction(c, msg, stop)
				}
				realCheckDefault(t, r, action, code, text, msg)
				if c != nil && code < 500 {
					c.Cmd("NOOP", 250) // the session goes on
				}
			})
		}
	}
}

// TestRealFaultKilledMidBody: spamass-milter (which may replace the body, so the
// streaming path spools the message) is killed (SIGKILL) while the client is
// sending a 6 MiB body. Tempfail: 451 at the end of the data, nothing stored;
// accept: the message stored unfiltered. Either way no spool file is left in
// Config.TempDir, neither as a name nor as a descriptor still open.
func TestRealFaultKilledMidBody(t *testing.T) {
	t.Parallel()
	spamd := realSpamd(t)
	line := strings.Repeat("0123456789", 7) + "\r\n" // 72 bytes
	body := strings.Repeat(line, (6<<20)/len(line))
	for _, action := range []milter.DefaultAction{milter.TempFail, milter.Accept} {
		t.Run(action.String(), func(t *testing.T) {
			m := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: spamd})
			spool := t.TempDir()
			r := realOurs(t, milter.Config{Milters: []milter.Milter{realFaultTimeouts(m.Addr)}, DefaultAction: action, TempDir: spool}, true)
			msg := realmilter.Message(body)
			c, code, text := realSession(t, r)
			require.NotNil(t, c, "%d %s", code, text)
			c.Cmd("MAIL FROM:<alice@example.test>", 250)
			c.Cmd("RCPT TO:<bob@dest.test>", 250)
			c.Cmd("DATA", 354)
			half := len(msg) / 3
			c.Send(string(msg[:half]))
			require.NotEmpty(t, realOpenIn(t, spool, true), "the message is being spooled")
			require.NoError(t, m.Proc.Signal(syscall.SIGKILL))
			require.True(t, m.Proc.Wait(5*time.Second), "spamass-milter killed")
			c.Send(string(msg[half:]) + ".\r\n")
			code, text = c.Reply()
			realCheckDefault(t, r, action, code, text, msg)
			c.Cmd("NOOP", 250)
			realNoSpool(t, spool)
		})
	}
}

// realNoSpool checks that dir is empty and that this process has no file open
// in it (a spool file unlinked but still open would be a leak).
func realNoSpool(t *testing.T, dir string) {
	t.Helper()
	require.Empty(t, realOpenIn(t, dir, false), "spool files still open")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, ents, "spool files left")
}

// realOpenIn returns the files of dir this process has open (unlinked ones
// too), once there are some (want set) or none (want unset), waiting at most
// 5 s for it.
func realOpenIn(t *testing.T, dir string, want bool) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var open []string
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, fd := range fds {
			if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(target, dir+"/") {
				open = append(open, target)
			}
		}
		if (len(open) > 0) == want || time.Now().After(deadline) {
			return open
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// realGarbage is a TCP listener that answers whatever a milter client sends
// with reply, then holds the connection until the client closes it.
func realGarbage(t *testing.T, reply []byte) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				if _, err := c.Read(buf); err != nil {
					return
				}
				c.Write(reply)
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return "inet:" + l.Addr().String()
}

// TestRealFaultGarbage: a "milter" that answers the negotiation with garbage
// gets the default action, a log line names it, and the session goes on: after
// the refused (tempfail) or taken (accept) message, a second transaction on the
// same connection gets the same outcome.
func TestRealFaultGarbage(t *testing.T) {
	t.Parallel()
	garbage := map[string][]byte{
		"http":              []byte("HTTP/1.0 400 Bad Request\r\n\r\n"),
		"unknown command":   {0, 0, 0, 2, 'Z', 'x'},
		"4 GiB length":      {0xff, 0xff, 0xff, 0xff, 'O'},
		"zero length":       {0, 0, 0, 0},
		"short negotiation": {0, 0, 0, 5, 'O', 0, 0, 0, 6},
	}
	for name, reply := range garbage {
		for _, action := range []milter.DefaultAction{milter.TempFail, milter.Accept} {
			t.Run(name+"/"+action.String(), func(t *testing.T) {
				t.Parallel()
				addr := realGarbage(t, reply)
				var logs realmilter.Buffer
				r := realOurs(t, milter.Config{Milters: []milter.Milter{realFaultTimeouts(addr)}, DefaultAction: action,
					Logger: slog.New(slog.NewTextHandler(&logs, nil))}, false)
				msg := realmilter.Message("Hello Bob.\n")
				c, code, text := realSession(t, r)
				if c != nil {
					code, text = realTransaction(c, msg, nil)
				}
				realCheckDefault(t, r, action, code, text, msg)
				require.Contains(t, logs.String(), strings.TrimPrefix(addr, "inet:"), "a log line names the milter")
				if c == nil {
					return // refused at connect (as Postfix does with tempfail there)
				}
				r.store.Reset()
				code, text = realTransaction(c, msg, nil)
				realCheckDefault(t, r, action, code, text, msg)
				c.Cmd("NOOP", 250)
			})
		}
	}
}

// TestRealPostfixFaults compares Postfix and milter.Wrap when a real milter
// fails: OpenDKIM killed before the session (down), or stopped by SIGSTOP
// (hung: 2-second timeouts on both sides), under each default action. Both must
// end the transaction at the same step with the same reply (a refusal's text
// included); with accept both deliver the message unfiltered, the same.
func TestRealPostfixFaults(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	down := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key})
	require.NoError(t, down.Proc.Signal(syscall.SIGKILL))
	require.True(t, down.Proc.Wait(5*time.Second))
	hung := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key})
	require.NoError(t, hung.Proc.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { hung.Proc.Signal(syscall.SIGCONT) })

	faults := []struct {
		name string
		m    *realmilter.Milter
	}{{"down", down}, {"hung", hung}}
	type fcase struct {
		fault  string
		addr   string
		action milter.DefaultAction
	}
	var cases []fcase
	var listeners []realmilter.PostfixListener
	for _, f := range faults {
		for _, action := range realActions {
			cases = append(cases, fcase{f.name, f.m.Addr, action})
			listeners = append(listeners, realmilter.PostfixListener{Milters: f.m.Addr, Options: map[string]string{
				"milter_default_action":  action.String(),
				"milter_connect_timeout": "2s", "milter_command_timeout": "2s", "milter_content_timeout": "2s",
			}})
		}
	}
	sink := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.Internationalization = true })
	pf := realmilter.StartPostfix(t, realmilter.Postfix{RelayTo: sink.Addr, Hostname: realDiffHost,
		Listeners: listeners, Main: map[string]string{"smtpd_peername_lookup": "no"}})
	for i, c := range cases {
		t.Run(c.fault+"/"+c.action.String(), func(t *testing.T) {
			t.Parallel()
			ours := realOurs(t, milter.Config{Hostname: realDiffHost, DaemonName: realDiffHost,
				Milters: []milter.Milter{realFaultTimeouts(c.addr)}, DefaultAction: c.action}, false)
			id := c.fault + "." + c.action.String() + "@example.test"
			msg := realSetID(t, realmilter.Message("Hello Bob.\n"), id)
			pfOut, err := realmilter.Try(pf.Addrs[i], msg)
			require.NoError(t, err, "Postfix")
			oursOut, err := realmilter.Try(ours.addr, msg)
			require.NoError(t, err, "milter.Wrap")
			t.Logf("Postfix: %+v; milter.Wrap: %+v", pfOut, oursOut)
			if pfOut.Code == 250 && oursOut.Code == 250 {
				pfOut.Text, oursOut.Text = "", "" // each server's own words: "Ok: queued as ..."
			}
			require.Equal(t, pfOut, oursOut, "Postfix's (expected) and milter.Wrap's (actual) outcomes differ")
			if c.action == milter.Accept {
				realCompare(t, realWaitID(t, sink.Recorder, id), realWaitID(t, &ours.store.Recorder, id), "", false, false)
			}
		})
	}
}
