package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/mailauth"
	"github.com/midismtp/smtpd/milter"
	"github.com/midismtp/smtpd/smtptest"
)

// deadMilter returns a milter address where nothing listens.
func deadMilter(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "inet:" + addr
}

// forgedMessage has two Authentication-Results fields claiming mx.test (the
// tests' authserv-id), in two spellings, and one of another server.
var forgedMessage = crlf(`Authentication-Results: mx.test; spf=pass smtp.mailfrom=example.test
Received: from relay.example.test by hop.example.test; Mon, 7 Dec 2026 09:59:00 +0000
Authentication-Results: other.example; dkim=pass header.d=example.test
Authentication-Results: (forged) MX.Test;
 dmarc=pass
From: Alice <alice@example.test>
To: bob@dest.test
Subject: hello
Message-ID: <2@example.test>

Hello Bob.
`)

// forgedStripped is forgedMessage as received without the forged fields.
var forgedStripped = crlf(`Received: from relay.example.test by hop.example.test; Mon, 7 Dec 2026 09:59:00 +0000
Authentication-Results: other.example; dkim=pass header.d=example.test
From: Alice <alice@example.test>
To: bob@dest.test
Subject: hello
Message-ID: <2@example.test>

Hello Bob.
`)

// ourField splits a stored .eml into its first field (which must be our
// Authentication-Results, authserv-id mx.test) and the rest.
func ourField(t testing.TB, eml []byte) (field string, rest []byte) {
	t.Helper()
	fs := fieldsOf(eml)
	if len(fs) == 0 || !strings.HasPrefix(fs[0], "Authentication-Results: mx.test;") {
		t.Fatalf("the .eml does not begin with our field:\n%s", eml)
	}
	return fs[0], eml[len(fs[0])+2:]
}

// TestForgedAuthResultsRemoved: on each path through the chain, the .eml is our
// field, then exactly the message as received without the fields claiming our
// authserv-id; another server's field stays.
func TestForgedAuthResultsRemoved(t *testing.T) {
	down := deadMilter(t)
	for _, c := range []struct {
		name string
		args func(t *testing.T) []string
	}{
		{"no milter: live stream", func(*testing.T) []string { return nil }},
		{"a milter: spooled by milter.Wrap", func(t *testing.T) []string {
			return []string{"-milter", startTestMilter(t, 0, nil).Addr}
		}},
		{"a milter down, accept: live stream", func(*testing.T) []string {
			return []string{"-milter", down, "-milter-default-action", "accept"}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			mx := startMX(t, c.args(t)...)
			if code, text := deliver(t, mx, forgedMessage); code != 250 {
				t.Fatalf("reply %d %s", code, text)
			}
			m := only(t, mx.Out)
			field, rest := ourField(t, m.EML)
			if string(rest) != forgedStripped {
				t.Errorf("after our field:\n%q\nwant\n%q", rest, forgedStripped)
			}
			if strings.Contains(field, "spf=pass") || strings.Contains(field, "dmarc=pass") {
				t.Errorf("our field took the forged results: %q", field)
			}
			if want := fieldValue(field + "\r\n"); m.Rec.AuthResults != want {
				t.Errorf("auth_results %q, want %q", m.Rec.AuthResults, want)
			}
		})
	}
}

// TestMilterSeesStrippedMessage: the milters get the message without the forged
// fields (and without our field); the other server's field reaches them.
func TestMilterSeesStrippedMessage(t *testing.T) {
	tm := startTestMilter(t, 0, nil)
	mx := startMX(t, "-milter", tm.Addr)
	if code, text := deliver(t, mx, forgedMessage); code != 250 {
		t.Fatalf("reply %d %s", code, text)
	}
	var names []string
	for _, h := range tm.Headers() {
		names = append(names, h[0]+": "+h[1])
		if strings.EqualFold(h[0], "Authentication-Results") && !strings.HasPrefix(h[1], "other.example;") {
			t.Errorf("the milter got %s: %s", h[0], h[1])
		}
	}
	if len(names) != 6 {
		t.Errorf("the milter got %d fields, want the 6 of the stripped message: %q", len(names), names)
	}
}

// TestMilterChangesAfterOurStripping: fields a milter adds, one claiming our
// authserv-id included, are kept where the milter put them; its header indexes
// count the message as received (our field not among them); the body it
// replaces is stored; our field stays first.
func TestMilterChangesAfterOurStripping(t *testing.T) {
	tm := startTestMilter(t, 0, func(m gomilter.Modifier) (*gomilter.Response, error) {
		if err := m.AddHeader("Authentication-Results", "mx.test; dkim=pass header.d=milter.test"); err != nil {
			return nil, err
		}
		if err := m.InsertHeader(1, "X-Inserted", "at index 1"); err != nil {
			return nil, err
		}
		if err := m.ChangeHeader(1, "Subject", "changed"); err != nil {
			return nil, err
		}
		return gomilter.RespContinue, m.ReplaceBody(strings.NewReader("New body.\r\n"))
	})
	mx := startMX(t, "-milter", tm.Addr)
	if code, text := deliver(t, mx, forgedMessage); code != 250 {
		t.Fatalf("reply %d %s", code, text)
	}
	_, rest := ourField(t, only(t, mx.Out).EML)
	want := crlf(`Received: from relay.example.test by hop.example.test; Mon, 7 Dec 2026 09:59:00 +0000
X-Inserted: at index 1
Authentication-Results: other.example; dkim=pass header.d=example.test
From: Alice <alice@example.test>
To: bob@dest.test
Subject: changed
Message-ID: <2@example.test>
Authentication-Results: mx.test; dkim=pass header.d=milter.test

New body.
`)
	if string(rest) != want {
		t.Errorf("after our field:\n%s\nwant\n%s", rest, want)
	}
}

// TestVerdictOnMessageAsReceived: a milter that rewrites From and adds a
// DKIM-Signature does not change the verdict: our field names the From domain
// received and no DKIM signature, while the stored message has the milter's.
func TestVerdictOnMessageAsReceived(t *testing.T) {
	tm := startTestMilter(t, 0, func(m gomilter.Modifier) (*gomilter.Response, error) {
		if err := m.ChangeHeader(1, "From", "Mallory <m@rewritten.test>"); err != nil {
			return nil, err
		}
		return gomilter.RespContinue, m.InsertHeader(0, "DKIM-Signature", "v=1; a=rsa-sha256; d=rewritten.test; s=x; h=from; bh=AAAA; b=AAAA")
	})
	mx := startMX(t, "-milter", tm.Addr)
	if code, text := deliver(t, mx, plainMessage); code != 250 {
		t.Fatalf("reply %d %s", code, text)
	}
	field, rest := ourField(t, only(t, mx.Out).EML)
	for _, want := range []string{"dkim=none", "header.from=example.test"} {
		if !strings.Contains(field, want) {
			t.Errorf("our field lacks %q: %s", want, field)
		}
	}
	if strings.Contains(field, "rewritten.test") {
		t.Errorf("our field saw the milter's changes: %s", field)
	}
	if !bytes.HasPrefix(rest, []byte("DKIM-Signature: v=1; a=rsa-sha256; d=rewritten.test")) ||
		!bytes.Contains(rest, []byte("\r\nFrom: Mallory <m@rewritten.test>\r\n")) {
		t.Errorf("the milter's changes are not stored:\n%s", rest)
	}
}

// TestMilterQuarantine: a milter's quarantine stores the message with
// quarantine: true and its reason; without it quarantine is false.
func TestMilterQuarantine(t *testing.T) {
	tm := startTestMilter(t, 0, func(m gomilter.Modifier) (*gomilter.Response, error) {
		return gomilter.RespContinue, m.Quarantine("looks odd")
	})
	mx := startMX(t, "-milter", tm.Addr)
	if code, text := deliver(t, mx, plainMessage); code != 250 {
		t.Fatalf("reply %d %s", code, text)
	}
	m := only(t, mx.Out)
	if !m.Rec.Quarantine || m.Rec.QuarantineReason != "milter: looks odd" {
		t.Errorf("quarantine %v %q", m.Rec.Quarantine, m.Rec.QuarantineReason)
	}

	plain := startMX(t)
	deliver(t, plain, plainMessage)
	if m := only(t, plain.Out); m.Rec.Quarantine || m.JSON["quarantine"] != false {
		t.Errorf("a plain message: quarantine %v", m.JSON["quarantine"])
	}
}

// TestMilterRefusals: a milter's reject, tempfail and discard answer the final
// dot; nothing is stored (a discard gets 250 and is dropped), no file is left.
func TestMilterRefusals(t *testing.T) {
	for _, c := range []struct {
		name string
		resp *gomilter.Response
		code int
	}{
		{"reject", gomilter.RespReject, 550},
		{"tempfail", gomilter.RespTempFail, 451},
		{"discard", gomilter.RespDiscard, 250},
	} {
		t.Run(c.name, func(t *testing.T) {
			tm := startTestMilter(t, 0, func(gomilter.Modifier) (*gomilter.Response, error) { return c.resp, nil })
			mx := startMX(t, "-milter", tm.Addr)
			if code, text := deliver(t, mx, plainMessage); code != c.code {
				t.Errorf("reply %d %s, want %d", code, text, c.code)
			}
			if ms := messages(t, mx.Out); len(ms) != 0 {
				t.Errorf("stored %d messages", len(ms))
			}
		})
	}
}

// TestMilterDown: a milter that is not there gets -milter-default-action:
// tempfail (the default) answers 451 to MAIL and stores nothing, accept stores
// the message unfiltered, reject refuses the connection (554, as milter.Wrap
// answers a 5xx at connect).
func TestMilterDown(t *testing.T) {
	down := deadMilter(t)
	for _, c := range []struct {
		action       string
		banner, mail int
	}{
		{"", 220, 451},
		{"tempfail", 220, 451},
		{"accept", 220, 250},
		{"reject", 554, 0},
	} {
		t.Run(c.action, func(t *testing.T) {
			args := []string{"-milter", down}
			if c.action != "" {
				args = append(args, "-milter-default-action", c.action)
			}
			mx := startMX(t, args...)
			conn := (&smtptest.Server{Addr: mx.Addr}).Dial(t)
			if code, text := conn.Reply(); code != c.banner {
				t.Fatalf("banner %d %s, want %d", code, text, c.banner)
			}
			if c.mail == 0 {
				return
			}
			conn.Cmd("EHLO client.test", 250)
			conn.Send("MAIL FROM:<alice@example.test>\r\n")
			if code, text := conn.Reply(); code != c.mail {
				t.Fatalf("MAIL: %d %s, want %d", code, text, c.mail)
			}
			if c.mail != 250 {
				return
			}
			conn.Cmd("RCPT TO:<bob@dest.test>", 250)
			conn.Cmd("DATA", 354)
			conn.Send(plainMessage + ".\r\n")
			conn.Expect(250)
			if _, rest := ourField(t, only(t, mx.Out).EML); string(rest) != plainMessage {
				t.Errorf("not stored unfiltered: %q", rest)
			}
		})
	}
}

// TestOptionalInterfacesForwarded: authStage has every optional interface the
// milters' Handler has, so wrapping it hides none of the milters' stages.
func TestOptionalInterfacesForwarded(t *testing.T) {
	inner := milter.Wrap(&mailbox{}, milter.Config{Milters: []milter.Milter{{Addr: "inet:127.0.0.1:1"}}})
	outer := smtpd.Handler(&authStage{Handler: inner, v: &mailauth.Verifier{}})
	checks := map[string]func(smtpd.Handler) bool{
		"MessageStreamer":     func(h smtpd.Handler) bool { _, ok := h.(smtpd.MessageStreamer); return ok },
		"DataCommandHandler":  func(h smtpd.Handler) bool { _, ok := h.(smtpd.DataCommandHandler); return ok },
		"ResetHandler":        func(h smtpd.Handler) bool { _, ok := h.(smtpd.ResetHandler); return ok },
		"RecipientHandler":    func(h smtpd.Handler) bool { _, ok := h.(smtpd.RecipientHandler); return ok },
		"TokenAuthHandler":    func(h smtpd.Handler) bool { _, ok := h.(smtpd.TokenAuthHandler); return ok },
		"ExternalAuthHandler": func(h smtpd.Handler) bool { _, ok := h.(smtpd.ExternalAuthHandler); return ok },
	}
	for name, has := range checks {
		if has(inner) && !has(outer) {
			t.Errorf("milter.Wrap's Handler is a %s, authStage is not", name)
		}
	}
	if !checks["MessageStreamer"](inner) {
		t.Error("milter.Wrap dropped the mailbox's MessageStreamer: messages would be buffered")
	}
}

// TestNoVerdictRefused: a mailbox called without authStage (no verdict) answers
// 451 and stores nothing: a message is never stored without our field.
func TestNoVerdictRefused(t *testing.T) {
	st, err := newStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := smtptest.NewSession(t)
	err = (&mailbox{store: st}).OnMessageStream(s, strings.NewReader(plainMessage))
	if err != errNoVerdict {
		t.Errorf("err %v, want errNoVerdict", err)
	}
	if ms := messages(t, st.dir); len(ms) != 0 {
		t.Errorf("stored %d", len(ms))
	}
}

// TestForgedVariants: spellings of a field claiming our authserv-id that a
// reader of the stored message might take for ours are all removed; a
// different authserv-id stays.
func TestForgedVariants(t *testing.T) {
	mx := startMX(t)
	for _, c := range []struct {
		field string
		kept  bool
	}{
		{"Authentication-Results : mx.test; spf=pass", false}, // obsolete syntax: WSP before the colon
		{"authentication-results:mx.test; spf=pass", false},
		{"AUTHENTICATION-RESULTS:\r\n\tmx.test;\r\n\tspf=pass", false},
		{"Authentication-Results: \"mx.test\"; spf=pass", false},
		{"Authentication-Results: (" + strings.Repeat("c", 70<<10) + ") mx.test; spf=pass", false},
		{"Authentication-Results: mx.test", false},
		{"Authentication-Results: mx.test.example; spf=pass", true},
	} {
		msg := c.field + "\r\n" + plainMessage
		if code, text := deliver(t, mx, msg); code != 250 {
			t.Fatalf("%.60q: %d %s", c.field, code, text)
		}
		ms := messages(t, mx.Out)
		for id, m := range ms {
			_, rest := ourField(t, m.EML)
			want := plainMessage
			if c.kept {
				want = msg
			}
			if string(rest) != want {
				t.Errorf("%.60q: stored %.200q", c.field, rest)
			}
			os.Remove(filepath.Join(mx.Out, id+".eml"))
			os.Remove(filepath.Join(mx.Out, id+".json"))
		}
	}
}
