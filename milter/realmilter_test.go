package milter_test

// Tests against the real milters (OpenDKIM, spamass-milter with spamd,
// clamav-milter with clamd, rspamd) and against Postfix with the same milters,
// all started by the tests on loopback by internal/realmilter. A missing program
// skips a test, or fails it when CI is set.

import (
	"bytes"
	"fmt"
	"io"
	"net/textproto"
	"os"
	"strings"
	"sync"
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

// realLeadingSpaceMsg has header fields that simple header canonicalization
// signs byte for byte (see realmilter.LeadingSpaceMessage).
var realLeadingSpaceMsg = realmilter.LeadingSpaceMessage()

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
			require.Regexp(t, `(?s)^ Yes, score=\d{3,4}\.\d required=5\.0 tests=.*GTUBE`, realmilter.Values(fs, "X-Spam-Status")[0])
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
