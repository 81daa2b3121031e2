package milter_test

import (
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"testing"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
)

// This file checks the macros the milters get at each stage, and the connect
// event's client: the real client behind XCLIENT or a PROXY header.

// authRecorder accepts every login.
type authRecorder struct{ qRecorder }

func (*authRecorder) OnAuth(*smtpd.Session, string, string, string) (string, error) { return "", nil }

// wantMacros checks that an event had these macros (value "" : must be absent).
func wantMacros(t *testing.T, e mevent, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, ok := e.Macros[k]
		switch {
		case v == "" && ok:
			t.Errorf("%s: macro %s = %q, want none", e.Stage, k, got)
		case v != "" && got != v:
			t.Errorf("%s: macro %s = %q, want %q", e.Stage, k, got, v)
		}
	}
}

func TestMacrosPerStage(t *testing.T) {
	sc := startScripted(t, scriptedOpts{}, nil)
	h := &authRecorder{}
	ts := milterServer(t, h, milters(sc), func(s *smtpd.Server) {
		s.TLSMode, s.AuthMode = smtpd.TLSOptional, smtpd.AuthOptional
	})
	c := greeted(t, ts)
	c.StartTLS(nil)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret")), 235)
	c.Cmd("MAIL FROM:<a@Example.ORG> SIZE=100", 250)
	c.Cmd("RCPT TO:<b@example.net>", 250)
	c.Cmd("RCPT TO:<c@example.net>", 250)
	c.Cmd("DATA", 354)
	c.Send(testMessage + ".\r\n")
	c.Expect(250)
	c.Cmd("QUIT", 221)
	sc.waitStage(t, "quit")

	connect := sc.first(t, "connect")
	_, port, _ := strings.Cut(ts.Addr, ":")
	wantMacros(t, connect, map[string]string{
		"j": "mx.test", "{daemon_name}": "smtpd", "v": "midismtp smtpd", "{daemon_addr}": "127.0.0.1",
		"{daemon_port}": port, "{client_addr}": "127.0.0.1", "{client_name}": "unknown",
		"{client_ptr}": "unknown", "{client_resolve}": "FAIL", "_": "unknown [127.0.0.1]",
		"{tls_version}": "", "i": "", "{mail_addr}": "",
	})
	if p, _ := strconv.Atoi(connect.Macros["{client_port}"]); p == 0 || connect.Args[2] != connect.Macros["{client_port}"] {
		t.Errorf("client port: macro %q, connect event %q", connect.Macros["{client_port}"], connect.Args[2])
	}
	if connect.Args[0] != "[127.0.0.1]" || connect.Args[1] != "tcp4" || connect.Args[3] != "127.0.0.1" {
		t.Errorf("connect event %q, want [127.0.0.1] tcp4 PORT 127.0.0.1", connect.Args)
	}
	var helos []mevent
	for _, e := range sc.Events() {
		if e.Stage == "helo" {
			helos = append(helos, e)
		}
	}
	if len(helos) != 2 {
		t.Fatalf("%d helo events, want 2 (before and after STARTTLS)", len(helos))
	}
	wantMacros(t, helos[0], map[string]string{"{tls_version}": ""})
	wantMacros(t, helos[1], map[string]string{"{tls_version}": "TLSv1.3"})
	if c, b := helos[1].Macros["{cipher}"], helos[1].Macros["{cipher_bits}"]; !strings.HasPrefix(c, "TLS_") || b != "128" && b != "256" {
		t.Errorf("after STARTTLS: {cipher} %q {cipher_bits} %q", c, b)
	}
	mail := sc.first(t, "mail")
	if mail.Args[0] != "a@Example.ORG" || mail.Args[1] != "SIZE=100" {
		t.Errorf("mail event %q", mail.Args)
	}
	// Macro i comes once a recipient is accepted, as Postfix's queue ID.
	wantMacros(t, mail, map[string]string{"i": "", "{auth_type}": "PLAIN", "{auth_authen}": "alice",
		"{mail_addr}": "a@Example.ORG", "{mail_host}": "example.org", "{mail_mailer}": "smtp"})
	var rcpts []mevent
	for _, e := range sc.Events() {
		if e.Stage == "rcpt" {
			rcpts = append(rcpts, e)
		}
	}
	wantMacros(t, rcpts[0], map[string]string{"i": "", "{rcpt_addr}": "b@example.net", "{rcpt_host}": "example.net", "{rcpt_mailer}": "smtp"})
	id := rcpts[1].Macros["i"]
	if !strings.HasSuffix(id, "-1") {
		t.Errorf("macro i at the second RCPT = %q, want the message ID", id)
	}
	wantMacros(t, rcpts[1], map[string]string{"{rcpt_addr}": "c@example.net"})
	for _, st := range []string{"data", "eoh", "eom"} {
		wantMacros(t, sc.first(t, st), map[string]string{"i": id})
	}
}

func TestClientBehindXClientAndProxy(t *testing.T) {
	t.Run("XCLIENT", func(t *testing.T) {
		sc := startScripted(t, scriptedOpts{}, nil)
		ts := milterServer(t, &qRecorder{}, milters(sc), func(s *smtpd.Server) { s.XClientTrustedNetworks = "127.0.0.0/8" })
		c := ts.Dial(t)
		c.Expect(220)
		c.Cmd("EHLO proxy.test", 250)
		c.Cmd("XCLIENT ADDR=192.0.2.7 PORT=4242 NAME=client.example", 220)
		c.Cmd("EHLO client.example", 250)
		c.Cmd("MAIL FROM:<a@example.org>", 250)
		c.Cmd("QUIT", 221)
		sc.waitStage(t, "mail")
		var connects []mevent
		for _, e := range sc.Events() {
			if e.Stage == "connect" {
				connects = append(connects, e)
			}
		}
		if len(connects) != 2 {
			t.Fatalf("%d connect events, want 2 (the proxy's, then the client's): %v", len(connects), sc.Stages())
		}
		real := connects[1]
		if !slices.Equal(real.Args, []string{"client.example", "tcp4", "4242", "192.0.2.7"}) {
			t.Errorf("connect event after XCLIENT %q", real.Args)
		}
		wantMacros(t, real, map[string]string{"{client_addr}": "192.0.2.7", "{client_port}": "4242",
			"{client_name}": "client.example", "_": "client.example [192.0.2.7]", "{client_resolve}": "OK"})
		wantMacros(t, sc.first(t, "mail"), map[string]string{"{client_addr}": "192.0.2.7"})
		if sc.conns != 2 {
			t.Errorf("%d milter connections, want 2 (Postfix: a new milter session after XCLIENT)", sc.conns)
		}
	})
	t.Run("PROXY", func(t *testing.T) {
		sc := startScripted(t, scriptedOpts{}, nil)
		ts := milterServer(t, &qRecorder{}, milters(sc), func(s *smtpd.Server) { s.ProxyTrustedNetworks = "127.0.0.0/8" })
		c := ts.Dial(t)
		c.Send("PROXY TCP6 2001:db8::9 ::1 5555 25\r\n")
		c.Expect(220)
		c.Cmd("EHLO client.test", 250)
		c.Cmd("QUIT", 221)
		sc.waitStage(t, "helo")
		connect := sc.first(t, "connect")
		if !slices.Equal(connect.Args, []string{"[2001:db8::9]", "tcp6", "5555", "2001:db8::9"}) {
			t.Errorf("connect event behind PROXY %q", connect.Args)
		}
		wantMacros(t, connect, map[string]string{"{client_addr}": "IPv6:2001:db8::9", "{client_port}": "5555"})
	})
}

// TestMacrosRequestedByMilter checks that a milter's own macro lists (sent when
// it negotiates) are what it gets.
func TestMacrosRequestedByMilter(t *testing.T) {
	sc := startScripted(t, scriptedOpts{macros: map[gomilter.MacroStage][]string{
		gomilter.StageConnect: {"{client_addr}"},
		gomilter.StageMail:    {"{mail_addr}", "{daemon_port}"},
	}}, nil)
	ts := milterServer(t, &qRecorder{}, milters(sc))
	if r := transaction(t, ts, "MAIL FROM:<a@example.org>", []string{"RCPT TO:<b@example.net>"}, testMessage); r.Code != 250 {
		t.Fatalf("final reply %v", r)
	}
	wantMacros(t, sc.first(t, "connect"), map[string]string{"{client_addr}": "127.0.0.1", "j": "", "_": ""})
	mail := sc.first(t, "mail")
	wantMacros(t, mail, map[string]string{"{mail_addr}": "a@example.org", "{auth_type}": "", "i": ""})
	if mail.Macros["{daemon_port}"] == "" {
		t.Error("no {daemon_port} at mail: the milter asked for it")
	}
}
