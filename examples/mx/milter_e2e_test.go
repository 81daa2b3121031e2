package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd/internal/testenv/realmilter"
)

// This file runs mx with the real milters (internal/testenv/realmilter starts
// Debian's OpenDKIM, spamass-milter with spamd, NSD, each a private instance on
// loopback): what they do reaches the stored message, after our stripping and
// without touching our verdict.

// suite holds the daemons this test binary shares (spamd); TestMain stops them.
var suite realmilter.Suite

// sharedSpamd is the binary's spamd.
func sharedSpamd(t *testing.T) *realmilter.Spamd {
	return realmilter.Shared(&suite, t, "spamd", realmilter.StartSpamd)
}

// TestRealOpenDKIMSigns: OpenDKIM signs (mode s) what mx passes it; the stored
// .eml, our field first, verifies with dkimpy; our verdict is on the message as
// received, which had no signature.
func TestRealOpenDKIMSigns(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	dns := realmilter.StartNSD(t, key.Zone())
	dkim := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key})
	mx := startMX(t, "-milter", dkim.Addr, "-resolver", dns.Addr)
	msg := realmilter.Message("Hello Bob.\n")
	if code, text := deliver(t, mx, string(msg)); code != 250 {
		t.Fatalf("%d %s", code, text)
	}
	m := only(t, mx.Out)
	field, rest := ourField(t, m.EML)
	if !strings.Contains(field, "dkim=none") {
		t.Errorf("our verdict saw OpenDKIM's signature: %s", field)
	}
	if !bytes.HasPrefix(rest, []byte("DKIM-Signature:")) || !bytes.HasSuffix(rest, msg) {
		t.Errorf("want OpenDKIM's signature, then the message as sent:\n%s", rest)
	}
	if ok, out := realmilter.DKIMVerify(t, m.EML, dns.Addr); !ok {
		t.Errorf("dkimpy refuses the stored message's signature: %s\n%s", out, m.EML)
	}
}

// TestRealOpenDKIMVerifies: OpenDKIM verifying (mode v) under our own
// authserv-id: the forged field of the same id the client sent is gone before
// OpenDKIM sees the message, the field OpenDKIM adds is kept, and ours is first.
// Both say the dkimpy signature passes.
func TestRealOpenDKIMVerifies(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	dns := realmilter.StartNSD(t, key.Zone())
	dkim := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "v", DNS: dns, AuthservID: "mx.test"})
	mx := startMX(t, "-milter", dkim.Addr, "-resolver", dns.Addr)
	signed := realmilter.DKIMSign(t, key, "relaxed/relaxed", []string{"From", "To", "Subject", "Date", "Message-ID"},
		realmilter.Message("Hello Bob.\n"))
	forged := append([]byte("Authentication-Results: mx.test; dkim=pass header.d=forged.test\r\n"), signed...)
	if code, text := deliver(t, mx, string(forged)); code != 250 {
		t.Fatalf("%d %s", code, text)
	}
	eml := only(t, mx.Out).EML
	field, rest := ourField(t, eml)
	if !strings.Contains(field, "dkim=pass") {
		t.Errorf("our verdict: %s", field)
	}
	fs, _, err := realmilter.Split(rest)
	if err != nil {
		t.Fatal(err)
	}
	ars := realmilter.Values(fs, "Authentication-Results")
	if len(ars) != 1 || !strings.Contains(ars[0], "mx.test") || !strings.Contains(ars[0], "dkim=pass") ||
		strings.Contains(ars[0], "forged.test") {
		t.Errorf("after our field, want OpenDKIM's field only: %q\n%s", ars, eml)
	}
	if !bytes.HasSuffix(rest, signed) {
		t.Errorf("the message as received does not follow:\n%s", rest)
	}
}

// TestRealSpamAssassin: spamass-milter with spamd marks GTUBE (the X-Spam
// fields, SpamAssassin's report for a body) and the stored message keeps our
// field first; configured to reject, GTUBE is refused and nothing is stored.
func TestRealSpamAssassin(t *testing.T) {
	t.Parallel()
	spamd := sharedSpamd(t)
	mark := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: spamd})
	reject := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: spamd, RejectScore: 15})
	gtube := realmilter.Message("Buy now.\n" + realmilter.GTUBE + "\n")

	mx := startMX(t, "-milter", mark.Addr)
	if code, text := deliver(t, mx, string(gtube)); code != 250 {
		t.Fatalf("%d %s", code, text)
	}
	_, rest := ourField(t, only(t, mx.Out).EML)
	fs, body, err := realmilter.Split(rest)
	if err != nil {
		t.Fatal(err)
	}
	if flag := realmilter.Values(fs, "X-Spam-Flag"); len(flag) != 1 || flag[0] != " YES" {
		t.Errorf("X-Spam-Flag %q", flag)
	}
	if st := realmilter.Values(fs, "X-Spam-Status"); len(st) != 1 || !strings.Contains(st[0], "GTUBE") {
		t.Errorf("X-Spam-Status %q", st)
	}
	if !bytes.Contains(body, []byte("Spam detection software")) || !bytes.Contains(body, []byte(realmilter.GTUBE)) {
		t.Errorf("want SpamAssassin's report with the original attached:\n%s", body)
	}

	mx = startMX(t, "-milter", reject.Addr)
	if code, text := deliver(t, mx, string(gtube)); code != 550 || !strings.Contains(text, "Blocked by SpamAssassin") {
		t.Errorf("reject: %d %s", code, text)
	}
	if ms := messages(t, mx.Out); len(ms) != 0 {
		t.Errorf("%d stored", len(ms))
	}
}

// TestRealMilterDown: spamass-milter stopped: with -milter-default-action
// tempfail the client gets 451 and nothing is stored; with accept the message is
// stored unfiltered (no X-Spam fields).
func TestRealMilterDown(t *testing.T) {
	t.Parallel()
	m := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: sharedSpamd(t)})
	tempfail := startMX(t, "-milter", m.Addr)
	accept := startMX(t, "-milter", m.Addr, "-milter-default-action", "accept")
	m.Proc.Stop()
	if !m.Proc.Wait(10 * time.Second) {
		t.Fatal("spamass-milter did not stop")
	}

	c := tempfail.dial(t)
	c.Cmd("EHLO client.test", 250)
	if text := c.Cmd("MAIL FROM:<alice@example.test>", 451); !strings.HasPrefix(text, "4.7.1") {
		t.Errorf("tempfail: %q", text)
	}
	if ms := messages(t, tempfail.Out); len(ms) != 0 {
		t.Errorf("tempfail: %d stored", len(ms))
	}

	msg := realmilter.Message("Buy now.\n" + realmilter.GTUBE + "\n")
	if code, text := deliver(t, accept, string(msg)); code != 250 {
		t.Fatalf("accept: %d %s", code, text)
	}
	if _, rest := ourField(t, only(t, accept.Out).EML); !bytes.Equal(rest, msg) {
		t.Errorf("accept: not stored unfiltered:\n%s", rest)
	}
}
