package milter_test

// Tests against the real milters (OpenDKIM, spamass-milter with spamd,
// clamav-milter with clamd, rspamd) and against Postfix with the same milters,
// all started by the tests on loopback by internal/realmilter. A missing program
// skips a test, or fails it when CI is set.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/milter"
	"github.com/midismtp/smtpd/milter/internal/realmilter"
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

// realStreamStore is store on the streaming path (smtpd.MessageStreamer).
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
	store *realStore
}

// realOurs starts milter.Wrap with config c in front of a store (a streamStore
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
	ts := smtptest.NewServer(t, milter.Wrap(h, c))
	return realReceiver{addr: ts.Addr, store: st}
}

// realMilters is a Config calling ms in order with Postfix's defaults.
func realMilters(ms ...*realmilter.Milter) milter.Config {
	var c milter.Config
	for _, m := range ms {
		c.Milters = append(c.Milters, milter.Milter{Addr: m.Addr})
	}
	return c
}

// realDeliver sends msg over SMTP to addr, as client.test, from alice@example.test
// to bob@dest.test. It returns nil when the server accepted the message, else
// the server's refusal (*textproto.Error) or the error that ended the session.
func realDeliver(t *testing.T, addr string, msg []byte) error {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	require.NoError(t, err)
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	c, err := smtp.NewClient(conn, "127.0.0.1")
	require.NoError(t, err)
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Mail("alice@example.test"); err != nil {
		return err
	}
	if err := c.Rcpt("bob@dest.test"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	c.Quit()
	return nil
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

// realMessage builds a test message (CRLF): header lines as given, then the body.
func realMessage(body string, header ...string) []byte {
	h := []string{
		"From: Alice <alice@example.test>",
		"To: Bob <bob@dest.test>",
		"Subject: a test",
		"Date: Mon, 07 Dec 2026 20:00:00 +0000",
		"Message-ID: <realmilter@example.test>",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=us-ascii",
	}
	if header != nil {
		h = header
	}
	return []byte(strings.Join(h, "\r\n") + "\r\n\r\n" + strings.ReplaceAll(body, "\n", "\r\n"))
}

// realField is one header field as stored: its name and its value as written after
// the colon, folding kept.
type realField struct{ name, value string }

// realSplit splits a stored message into its header fields and its body.
func realSplit(t *testing.T, msg []byte) ([]realField, []byte) {
	t.Helper()
	head, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	require.True(t, ok, "no end of header in %q", msg)
	var fs []realField
	for _, line := range strings.Split(string(head), "\r\n") {
		if line != "" && (line[0] == ' ' || line[0] == '\t') {
			require.NotEmpty(t, fs, "continuation line first in %q", head)
			fs[len(fs)-1].value += "\r\n" + line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		require.True(t, ok, "not a header realField: %q", line)
		fs = append(fs, realField{name, value})
	}
	return fs, body
}

// realValues returns the values of the fields named name, in order.
func realValues(fs []realField, name string) []string {
	var vs []string
	for _, f := range fs {
		if strings.EqualFold(f.name, name) {
			vs = append(vs, f.value)
		}
	}
	return vs
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
		msg := realMessage("Hello Bob.\n\nA signed realMessage.\n")
		require.NoError(t, realDeliver(t, r.addr, msg))
		got := r.one(t).Data
		fs, body := realSplit(t, got)
		require.Equal(t, "DKIM-Signature", fs[0].name, "OpenDKIM inserts its realField first:\n%s", got)
		require.Contains(t, fs[0].value, " d=example.test;")
		require.True(t, bytes.HasSuffix(got, msg[bytes.Index(msg, []byte("From:")):]), "the realMessage follows unchanged:\n%s", got)
		require.Equal(t, "Hello Bob.\r\n\r\nA signed realMessage.\r\n", string(body))
		ok, out := realmilter.DKIMVerify(t, got, dns.Addr)
		require.True(t, ok, "dkimpy: %s\n%s", out, got)
	}
}

// realLeadingSpaceMsg has header fields that simple header canonicalization (RFC
// 6376 §3.4.1) signs byte for byte: no space after the colon, two spaces, a tab,
// folding.
var realLeadingSpaceMsg = realMessage("Body.\n",
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
	require.NoError(t, realDeliver(t, r.addr, realLeadingSpaceMsg))
	got := r.one(t).Data
	require.True(t, bytes.HasSuffix(got, realLeadingSpaceMsg), "stored as sent, after the signature:\n%s", got)
	ok, out := realmilter.DKIMVerify(t, got, dns.Addr)
	require.True(t, ok, "dkimpy refuses the signature made through milter.Wrap: %s\n%s", out, got)

	stripped := realSignStripped(t, m, realLeadingSpaceMsg)
	ok, out = realmilter.DKIMVerify(t, stripped, dns.Addr)
	require.False(t, ok, "control: a signature over realValues without their leading space must fail, dkimpy says %s\n%s", out, stripped)
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
		must(s.HeaderField(f.name, strings.TrimLeft(f.value, " \t"), nil))
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
		realMessage("Hello Bob.\n"))

	r := realOurs(t, realMilters(m), false)
	require.NoError(t, realDeliver(t, r.addr, signed))
	got := r.one(t).Data
	fs, _ := realSplit(t, got)
	require.Equal(t, "Authentication-Results", fs[0].name, "%s", got)
	require.Regexp(t, `^ opendkim\.test;\r\n\tdkim=pass \(2048-bit key; unprotected\) header\.d=example\.test `, fs[0].value)
	require.True(t, bytes.HasSuffix(got, signed))

	tampered := bytes.Replace(signed, []byte("Hello Bob."), []byte("Hello Eve."), 1)
	r = realOurs(t, realMilters(m), true)
	realRefused(t, realDeliver(t, r.addr, tampered), 550, "5.7.0 bad DKIM signature data")
	require.Empty(t, r.store.Messages())
}

// TestRealSpamAssassin: spamass-milter with spamd. Configured to mark (its default),
// GTUBE gets the spam headers and SpamAssassin's report in place of the body (the
// original attached: report_safe), and a clean message its X-Spam headers;
// configured to reject at 15 points (-r 15), GTUBE (1000 points) is refused and
// not stored. Both paths: buffering and streaming.
func TestRealSpamAssassin(t *testing.T) {
	t.Parallel()
	spamd := realSpamd(t)
	mark := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: spamd})
	reject := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: spamd, RejectScore: 15})
	gtube := realMessage("Buy now.\n" + realmilter.GTUBE + "\n")
	clean := realMessage("Hello Bob.\n\nSee you on Monday.\n")
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			r := realOurs(t, realMilters(mark), stream)
			require.NoError(t, realDeliver(t, r.addr, gtube))
			fs, body := realSplit(t, r.one(t).Data)
			require.Equal(t, []string{" YES"}, realValues(fs, "X-Spam-Flag"))
			require.Len(t, realValues(fs, "X-Spam-Status"), 1)
			require.Regexp(t, `^ Yes, score=\d{3,4}\.\d required=5\.0 tests=.*GTUBE`, realValues(fs, "X-Spam-Status")[0])
			require.Regexp(t, `^ multipart/mixed; boundary="`, realValues(fs, "Content-Type")[0], "the new Content-Type comes first")
			require.Contains(t, string(body), "Spam detection software", "SpamAssassin's report replaced the body")
			require.Contains(t, string(body), realmilter.GTUBE, "with the original attached")

			r.store.Reset()
			require.NoError(t, realDeliver(t, r.addr, clean))
			got := r.one(t).Data
			fs, body = realSplit(t, got)
			require.Len(t, realValues(fs, "X-Spam-Status"), 1)
			require.Regexp(t, `^ No, score=-?\d+\.\d required=5\.0 `, realValues(fs, "X-Spam-Status")[0])
			require.Len(t, realValues(fs, "X-Spam-Checker-Version"), 1)
			require.Empty(t, realValues(fs, "X-Spam-Flag"))
			require.Equal(t, "Hello Bob.\r\n\r\nSee you on Monday.\r\n", string(body))
			require.True(t, bytes.HasPrefix(got, clean[:bytes.Index(clean, []byte("\r\n\r\n"))]), "the fields added after the message's own:\n%s", got)

			r = realOurs(t, realMilters(reject), stream)
			realRefused(t, realDeliver(t, r.addr, gtube), 550, "5.7.1 Blocked by SpamAssassin")
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
	eicar := realMessage(string(realmilter.EICAR()) + "\n")
	clean := realMessage("Hello Bob.\n")
	tests := []struct {
		onInfected string
		stream     bool
	}{{"Reject", false}, {"Reject", true}, {"Quarantine", false}, {"Quarantine", true}}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/stream=%v", tc.onInfected, tc.stream), func(t *testing.T) {
			m := realmilter.StartClamavMilter(t, realmilter.ClamavMilter{Clamd: clamd, OnInfected: tc.onInfected, AddHeader: "Replace"})
			r := realOurs(t, realMilters(m), tc.stream)
			require.NoError(t, realDeliver(t, r.addr, clean))
			msg := r.one(t)
			fs, _ := realSplit(t, msg.Data)
			require.Equal(t, []string{" Clean"}, realValues(fs, "X-Virus-Status"))
			require.Equal(t, []string{" clamav-milter 1.4.6 at clamav.test"}, realValues(fs, "X-Virus-Scanned"))
			_, quarantined := r.store.quarantine(msg.ID)
			require.False(t, quarantined)

			r.store.Reset()
			err := realDeliver(t, r.addr, eicar)
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
			require.Equal(t, []string{" Infected (" + realmilter.EICARSignature + ".UNOFFICIAL)"}, realValues(fs, "X-Virus-Status"))
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
			realRefused(t, realDeliver(t, r.addr, realMessage(realmilter.GTUBE+"\n")), 554, "5.7.1 Gtube pattern")
			require.Empty(t, r.store.Messages())

			require.NoError(t, realDeliver(t, r.addr, realMessage("Hello Bob.\n")))
			fs, body := realSplit(t, r.one(t).Data)
			require.Equal(t, []string{" rspamd.test"}, realValues(fs, "X-Rspamd-Server"))
			require.Len(t, realValues(fs, "X-Spamd-Result"), 1)
			require.Regexp(t, `^ default: False \[-?\d+\.\d\d / 15\.00\];\r\n\t`, realValues(fs, "X-Spamd-Result")[0])
			require.Regexp(t, `^ No, score=`, realValues(fs, "X-Spam-Status")[0])
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
// behind Postfix 3.7 and behind milter.Wrap, and compares what each delivers:
// the same header fields in the same places and the same body bytes, but for
// what each server adds itself (Postfix's Received field), the DKIM-Signature
// tags that change with the second (t=, b=: both signatures must verify with
// dkimpy, and their other tags must be equal), and SpamAssassin's random MIME
// boundary. The milters: OpenDKIM signing with simple canonicalization (every
// byte of the signed fields counts), spamass-milter marking (headers added, the
// body replaced for spam), and both in a row.
func TestRealPostfixDifferential(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	dns := realmilter.StartNSD(t, key.Zone())
	dkim := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key, Canonicalization: "simple/simple"})
	spam := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: realSpamd(t)})
	chains := []struct {
		name  string
		addrs []string
	}{
		{"opendkim", []string{dkim.Addr}},
		{"spamass", []string{spam.Addr}},
		{"opendkim+spamass", []string{dkim.Addr, spam.Addr}},
	}
	var lists [][]string
	for _, c := range chains {
		lists = append(lists, c.addrs)
	}
	pfAddrs, pfGot := realDiffPostfix(t, lists)
	msgs := []struct {
		name string
		msg  []byte
	}{
		{"clean", realMessage("Hello Bob.\n\nSee you on Monday.\n")},
		{"leading-space", realLeadingSpaceMsg},
		{"gtube", realMessage("Buy now.\n" + realmilter.GTUBE + "\n")},
	}
	for i, c := range chains {
		oursAddr, oursGot := realDiffOurs(t, c.addrs)
		for _, m := range msgs {
			t.Run(c.name+"/"+m.name, func(t *testing.T) {
				id := c.name + "." + m.name + "@example.test"
				msg := realSetID(t, m.msg, id)
				require.NoError(t, realDeliver(t, pfAddrs[i], msg), "Postfix")
				require.NoError(t, realDeliver(t, oursAddr, msg), "milter.Wrap")
				signed := slices.Contains(c.addrs, dkim.Addr)
				replaced := slices.Contains(c.addrs, spam.Addr) && m.name == "gtube" // SpamAssassin's report
				realCompare(t, realWaitID(t, pfGot, id), realWaitID(t, oursGot, id), dns.Addr, signed, !replaced)
			})
		}
	}
}

// realSetID returns msg with its Message-ID field's value replaced by <id>.
func realSetID(t *testing.T, msg []byte, id string) []byte {
	t.Helper()
	fs, body := realSplit(t, msg)
	var b bytes.Buffer
	for _, f := range fs {
		if strings.EqualFold(f.name, "Message-ID") {
			f.value = " <" + id + ">"
		}
		b.WriteString(f.name + ":" + f.value + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// realBoundary finds the MIME boundary SpamAssassin makes for its report
// ("----------=_" and random hex).
var realBoundary = regexp.MustCompile(`boundary="(----------=_[0-9A-F.]+)"`)

// realSpamassDate finds the time in the Received field spamass-milter makes
// for SpamAssassin, which its report quotes.
var realSpamassDate = regexp.MustCompile(`(\r\n\tby [^\r]* with SMTP id [^;\r]*;\r\n\t)[A-Z][a-z][a-z], [^\r]*`)

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
			fs = slices.DeleteFunc(fs, func(f realField) bool {
				return strings.EqualFold(f.name, "Received") && strings.Contains(f.value, "by "+realDiffHost+" (Postfix)")
			})
			require.Equal(t, n-1, len(fs), "one Received field of Postfix's in\n%s", msg)
		}
		var b strings.Builder
		for _, f := range fs {
			if strings.EqualFold(f.name, "DKIM-Signature") {
				// SpamAssassin's report quotes it in the body too.
				body = bytes.ReplaceAll(body, []byte(f.name+":"+f.value), []byte(f.name+":"+realDKIMTags(f.value)))
				f.value = realDKIMTags(f.value)
			}
			b.WriteString(f.name + ":" + f.value + "\r\n")
		}
		body = realSpamassDate.ReplaceAll(body, []byte("${1}(the time)"))
		texts[i] = b.String() + "\r\n" + string(body)
	}
	require.Equal(t, texts[0], texts[1], "Postfix's (expected) and milter.Wrap's (actual) messages differ")
}

// realDKIMTags returns a DKIM-Signature value as its tags without t= and b=
// (which change with the second), white space removed (RFC 6376 §3.2).
func realDKIMTags(v string) string {
	var tags []string
	for _, tag := range strings.Split(v, ";") {
		tag = strings.Join(strings.Fields(tag), "")
		if tag != "" && !strings.HasPrefix(tag, "t=") && !strings.HasPrefix(tag, "b=") {
			tags = append(tags, tag)
		}
	}
	return " " + strings.Join(tags, "; ") + " (t= and b= left out)"
}
