package realmilter

import (
	"bytes"
	"strings"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
)

// These tests check the harness alone, with the daemons quick to start:
// each starts, answers the milter protocol, and gives the verdict it is
// configured for, talked to with go-milter's client directly (not with the
// package under test). spamd and rspamd, slow to start, are checked by the milter
// package's tests only (TestRealSpamAssassin, TestRealRspamd), which show the
// daemons' output when they fail.

// result is what one milter said at the end of a message.
type result struct {
	act  *gomilter.Action
	mods []gomilter.ModifyAction
	// leadingSpace is whether the milter asked for header values with their
	// leading space.
	leadingSpace bool
}

// send passes msg through the milter at addr as Postfix would, and returns its
// end-of-message result; the test fails on any earlier non-continue reply.
func send(t *testing.T, addr, msg string) result {
	t.Helper()
	c := gomilter.NewClient("tcp", strings.TrimPrefix(addr, "inet:"), gomilter.WithReadTimeout(time.Minute))
	macros := gomilter.NewMacroBag()
	macros.Set(gomilter.MacroMTAFQDN, "mx.test")
	macros.Set(gomilter.MacroDaemonName, "smtpd")
	macros.Set(gomilter.MacroQueueId, "HARNESS1")
	s, err := c.Session(macros)
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	defer s.Close()
	r := result{leadingSpace: s.ProtocolOption(gomilter.OptHeaderLeadingSpace)}
	step := func(what string) func(*gomilter.Action, error) {
		return func(act *gomilter.Action, err error) {
			t.Helper()
			if err != nil || act.Type != gomilter.ActionContinue {
				t.Fatalf("%s: %v %v", what, act, err)
			}
		}
	}
	step("connect")(s.Conn("localhost", gomilter.FamilyInet, 40000, "127.0.0.1"))
	step("helo")(s.Helo("client.test"))
	macros.Set(gomilter.MacroMailAddr, "alice@example.test")
	step("mail")(s.Mail("<alice@example.test>", ""))
	macros.Set(gomilter.MacroRcptAddr, "bob@dest.test")
	step("rcpt")(s.Rcpt("<bob@dest.test>", ""))
	step("data")(s.DataStart())
	hs, body, err := Split([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		v := h.Value
		if !r.leadingSpace {
			v = strings.TrimPrefix(v, " ")
		}
		step("header " + h.Name)(s.HeaderField(h.Name, v, nil))
	}
	step("eoh")(s.HeaderEnd())
	mods, act, err := s.BodyReadFrom(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("body/eom: %v", err)
	}
	r.act, r.mods = act, mods
	return r
}

func (r result) header(name string) (string, bool) {
	for _, m := range r.mods {
		if (m.Type == gomilter.ActionAddHeader || m.Type == gomilter.ActionInsertHeader) && strings.EqualFold(m.HeaderName, name) {
			return m.HeaderValue, true
		}
	}
	return "", false
}

const harnessMsg = "From: Alice <alice@example.test>\r\nTo: Bob <bob@dest.test>\r\nSubject: harness\r\n" +
	"Date: Mon, 07 Dec 2026 20:00:00 +0000\r\nMessage-ID: <harness@example.test>\r\n\r\nHello Bob.\r\n"

func TestHarnessOpenDKIM(t *testing.T) {
	t.Parallel()
	key := NewDKIMKey(t, "example.test", "sel1")
	dns := StartNSD(t, key.Zone())
	signer := StartOpenDKIM(t, OpenDKIM{Mode: "s", Key: key})
	r := send(t, signer.Addr, harnessMsg)
	sig, ok := r.header("DKIM-Signature")
	if !ok || !r.leadingSpace {
		t.Fatalf("signer: %v %v leading space %v", r.act, r.mods, r.leadingSpace)
	}
	signed := "DKIM-Signature:" + strings.ReplaceAll(sig, "\n", "\r\n") + "\r\n" + harnessMsg
	if ok, out := DKIMVerify(t, []byte(signed), dns.Addr); !ok {
		t.Fatalf("dkimpy: %s\n%s", out, signed)
	}
	verifier := StartOpenDKIM(t, OpenDKIM{Mode: "v", DNS: dns, OnBadSignature: "reject"})
	r = send(t, verifier.Addr, signed)
	if ar, _ := r.header("Authentication-Results"); !strings.Contains(ar, "opendkim.test;") || !strings.Contains(ar, "dkim=pass") {
		t.Fatalf("verifier: %v %+v", r.act, r.mods)
	}
	r = send(t, verifier.Addr, strings.Replace(signed, "Hello Bob", "Hello Eve", 1))
	if r.act.Type != gomilter.ActionRejectWithCode || r.act.SMTPCode != 550 {
		t.Fatalf("verifier, tampered: %v", r.act)
	}
}

func TestHarnessClamAV(t *testing.T) {
	t.Parallel()
	clamd := StartClamd(t)
	m := StartClamavMilter(t, ClamavMilter{Clamd: clamd, OnInfected: "Reject", AddHeader: "Replace"})
	r := send(t, m.Addr, harnessMsg)
	if st, _ := r.header("X-Virus-Status"); r.act.Type != gomilter.ActionAccept || st != "Clean" {
		t.Fatalf("clean: %v %+v", r.act, r.mods)
	}
	r = send(t, m.Addr, strings.Replace(harnessMsg, "Hello Bob.", string(EICAR()), 1))
	if r.act.Type != gomilter.ActionReject || r.act.SMTPCode != 550 {
		t.Fatalf("EICAR: %v %+v", r.act, r.mods)
	}
}

// TestOffLoopback shows the loopback check sees what it must: a process that
// listens on loopback passes, one with a UDP socket connected to a TEST-NET-1
// address (RFC 5737: connect sends nothing) is caught.
func TestOffLoopback(t *testing.T) {
	py := python(t)
	script := `
import socket, sys, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
if sys.argv[1] == "out":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("192.0.2.1", 9))
print("ready", flush=True)
time.sleep(60)
`
	for _, mode := range []string{"in", "out"} {
		p, err := spawn("python", t.TempDir(), nil, nil, py, "-c", script, mode)
		if err != nil {
			t.Fatal(err)
		}
		for !strings.Contains(p.Output(), "ready") && !p.Exited() {
			time.Sleep(10 * time.Millisecond)
		}
		bad := p.offLoopback()
		t.Logf("%s: %q", mode, bad)
		p.Stop()
		if got := len(bad) > 0; got != (mode == "out") {
			t.Errorf("%s: offLoopback = %q", mode, bad)
		}
	}
}

// TestSuiteShared: a shared daemon starts once whatever the number of tests
// asking for it, its cleanups wait for Close, and a start that failed fails (or
// skipped skips) every later test asking for it.
func TestSuiteShared(t *testing.T) {
	var s Suite
	starts, stops := 0, 0
	start := func(t T) *int {
		starts++
		t.Cleanup(func() { stops++ })
		return &starts
	}
	for range 3 {
		t.Run("user", func(t *testing.T) {
			if got := Shared(&s, t, "daemon", start); *got != 1 {
				t.Errorf("started %d times", *got)
			}
		})
	}
	if stops != 0 {
		t.Fatalf("stopped before Close")
	}
	if err := s.Close(); err != nil || stops != 1 {
		t.Fatalf("Close: %v, %d stops", err, stops)
	}

	var s2 Suite
	skipped := 0
	for range 2 {
		t.Run("skipped", func(t *testing.T) {
			defer func() { skipped++ }()
			Shared(&s2, t, "missing", func(t T) *int {
				t.Skipf("not installed")
				return nil
			})
			t.Errorf("Shared returned after a skip")
		})
	}
	if skipped != 2 {
		t.Fatalf("%d skipped", skipped)
	}
	s2.Close()
}
