package realmilter

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// The differential against Postfix: the same milters behind a private Postfix
// and behind our server, the same message sent to both, and what each delivered
// compared byte for byte, but for what each server adds itself and what changes
// from one second to the next.

// Chain is a list of milters called in order, as smtpd_milters and our
// server's list call them.
type Chain struct {
	Name    string   // for subtests: "opendkim+spamass"
	Milters []string // their addresses: "inet:127.0.0.1:PORT"
}

// DifferentialPostfix is the configuration of a Postfix to compare with:
// listener i calls the milters of chains[i], host is myhostname (the milters'
// macro j), every message is relayed to relayTo (a capturing server, which
// should take 8-bit mail as it is, so that Postfix's client converts nothing).
// Like our server, it looks up no client host name, so that the milters'
// connect host name and macro _ are the same.
func DifferentialPostfix(relayTo, host string, chains []Chain) Postfix {
	c := Postfix{RelayTo: relayTo, Hostname: host, Main: map[string]string{"smtpd_peername_lookup": "no"}}
	for _, ch := range chains {
		c.Listeners = append(c.Listeners, PostfixListener{Milters: strings.Join(ch.Milters, ",")})
	}
	return c
}

// Differential says how Compare tells apart two deliveries of one message:
// Postfix's and our server's.
type Differential struct {
	// Ours names our server in failure messages: "milter.Wrap", "examples/mx".
	Ours string
	// PostfixHost is Postfix's myhostname. Its own Received field, the one
	// "by PostfixHost (Postfix)", is left out (the milters see it too, but
	// none of the compared ones quote it).
	PostfixHost string
	// DNS is the NSD that publishes the signing keys ("127.0.0.1:PORT").
	DNS string
	// Signed is set when both messages must have a DKIM-Signature. dkimpy must
	// then find both good when Verifies is set, and both bad otherwise (a body
	// replaced after signing). Their tags are compared without t= and b=, which
	// change with the second.
	Signed, Verifies bool
	// MTAVersions, when set, are the milter macro v of Postfix ("Postfix
	// 3.7.11") and of our server, when they differ. spamass-milter writes it in
	// the Received line it makes up for SpamAssassin ("by HOST (v/Z) with
	// SMTP id"), which SpamAssassin's report quotes: there, and only there,
	// each is replaced by "MTA version".
	MTAVersions [2]string
}

// differentialBoundary finds the MIME boundary SpamAssassin makes for its
// report ("----------=_" and random hex).
var differentialBoundary = regexp.MustCompile(`boundary="(----------=_[0-9A-F.]+)"`)

// differentialSpamassDate finds the time in the Received line spamass-milter
// makes for SpamAssassin, which its report quotes.
var differentialSpamassDate = regexp.MustCompile(`(\r\n\tby [^\r]* with SMTP id [^\r]*\r\n\t)[A-Z][a-z][a-z], \d+ [A-Z][a-z][a-z] \d{4} \d\d:\d\d:\d\d [-+]\d{4}`)

// Compare fails t unless pf (what Postfix delivered) and ours (what our server
// delivered of the same message; without the fields it adds itself) have the
// same header fields in the same order, with the same bytes and folding, and
// the same body bytes, but for what d leaves out. On failure it shows the first
// line that differs and both messages as compared.
func (d Differential) Compare(t T, pf, ours []byte) {
	t.Helper()
	names := [2]string{"Postfix", d.Ours}
	var texts [2]string
	for i, msg := range [][]byte{pf, ours} {
		text, err := d.normalize(t, i, msg)
		if err != nil {
			t.Fatalf("%s's message: %v\n%s", names[i], err, msg)
		}
		texts[i] = text
	}
	if texts[0] != texts[1] {
		t.Fatalf("Postfix's and %s's messages differ: %s\n--- Postfix's, as compared:\n%s\n--- %s's, as compared:\n%s",
			d.Ours, firstDifference(texts[0], texts[1]), texts[0], d.Ours, texts[1])
	}
}

// normalize returns message i (0: Postfix's) with what Compare leaves out
// replaced or removed.
func (d Differential) normalize(t T, i int, msg []byte) (string, error) {
	t.Helper()
	if d.Signed {
		if ok, out := DKIMVerify(t, msg, d.DNS); ok != d.Verifies {
			return "", fmt.Errorf("dkimpy says %s of its DKIM-Signature (want good: %v)", strings.TrimSpace(out), d.Verifies)
		}
	}
	if m := differentialBoundary.FindSubmatch(msg); m != nil {
		msg = bytes.ReplaceAll(msg, m[1], []byte("BOUNDARY"))
	}
	fs, body, err := Split(msg)
	if err != nil {
		return "", err
	}
	if i == 0 {
		if fs, err = d.withoutPostfixReceived(fs); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	for _, f := range fs {
		if strings.EqualFold(f.Name, "DKIM-Signature") {
			// SpamAssassin's report quotes it in the body too.
			body = bytes.ReplaceAll(body, []byte(f.Name+":"+f.Value), []byte(f.Name+":"+DKIMTags(f.Value)))
			f.Value = DKIMTags(f.Value)
		}
		b.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	body = differentialSpamassDate.ReplaceAll(body, []byte("${1}(the time)"))
	if v := d.MTAVersions[i]; v != "" {
		body = bytes.ReplaceAll(body, []byte("\r\n\tby "+d.PostfixHost+" ("+v+"/"),
			[]byte("\r\n\tby "+d.PostfixHost+" (MTA version/"))
	}
	return b.String() + "\r\n" + string(body), nil
}

// withoutPostfixReceived removes Postfix's own Received field from fs: there
// must be exactly one.
func (d Differential) withoutPostfixReceived(fs []Field) ([]Field, error) {
	var out []Field
	for _, f := range fs {
		if strings.EqualFold(f.Name, "Received") && strings.Contains(f.Value, "by "+d.PostfixHost+" (Postfix)") {
			continue
		}
		out = append(out, f)
	}
	if len(out) != len(fs)-1 {
		return nil, fmt.Errorf("%d Received fields by %s (Postfix), want 1", len(fs)-len(out), d.PostfixHost)
	}
	return out, nil
}

// firstDifference describes the first line where a and b differ.
func firstDifference(a, b string) string {
	al, bl := strings.SplitAfter(a, "\n"), strings.SplitAfter(b, "\n")
	for n := 0; ; n++ {
		switch {
		case n >= len(al) && n >= len(bl):
			return "no difference"
		case n >= len(al):
			return fmt.Sprintf("line %d: Postfix's ends, the other has %q", n+1, bl[n])
		case n >= len(bl):
			return fmt.Sprintf("line %d: Postfix's has %q, the other ends", n+1, al[n])
		case al[n] != bl[n]:
			return fmt.Sprintf("line %d: Postfix's %q, the other's %q", n+1, al[n], bl[n])
		}
	}
}

// WithMessageID returns msg with the value of its Message-ID field replaced by
// <id>: one message sent to several servers, told apart by its copies' id.
func WithMessageID(msg []byte, id string) ([]byte, error) {
	fs, body, err := Split(msg)
	if err != nil {
		return nil, err
	}
	for i, f := range fs {
		if strings.EqualFold(f.Name, "Message-ID") {
			fs[i].Value = " <" + id + ">"
		}
	}
	return Join(fs, body), nil
}

// WaitMessageID waits up to timeout until one of the messages that messages
// returns has the Message-ID <id>, and returns it; it fails t after timeout.
func WaitMessageID(t T, timeout time.Duration, messages func() [][]byte, id string) []byte {
	t.Helper()
	needle := []byte("\r\nMessage-ID: <" + id + ">\r\n")
	deadline := time.Now().Add(timeout)
	for {
		for _, m := range messages() {
			if bytes.Contains(m, needle) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message <%s> after %v", id, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
