package milter_test

import (
	"slices"
	"strings"
	"testing"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
)

// This file checks each modification a milter can make, byte for byte as
// Postfix's cleanup writes the message, on the buffered and the streaming path.

// modMessage has repeated and folded fields for the header changes.
const modMessage = "Received: from relay.test\r\n" +
	"Subject: test\r\n" +
	"X-Dup: 1\r\n" +
	"X-Dup: 2\r\n" +
	"X-Dup: 3\r\n" +
	"X-Fold: a\r\n b\r\n" +
	"\r\n" +
	"line one\r\nline two\r\n"

// transaction sends one message with the given MAIL and RCPT lines and returns
// the reply to its final dot (or to the first refused command).
func transaction(t *testing.T, ts *smtptest.Server, mail string, rcpts []string, msg string) reply {
	t.Helper()
	c := ts.Dial(t)
	defer c.Close()
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	for _, cmd := range append([]string{mail}, rcpts...) {
		c.Send(cmd + "\r\n")
		if code, text := c.Reply(); code != 250 {
			return reply{code, text}
		}
	}
	c.Send("DATA\r\n")
	if code, text := c.Reply(); code != 354 {
		return reply{code, text}
	}
	c.Send(msg + ".\r\n")
	code, text := c.Reply()
	c.Send("QUIT\r\n")
	c.Reply()
	return reply{code, text}
}

// eomDoes answers the end of the message after calling change.
func eomDoes(change func(m gomilter.Modifier) error) answer {
	return func(m gomilter.Modifier, _ mevent) (*gomilter.Response, error) {
		if err := change(m); err != nil {
			return nil, err
		}
		return gomilter.RespContinue, nil
	}
}

func TestModifications(t *testing.T) {
	body := "\r\nline one\r\nline two\r\n"
	head := strings.TrimSuffix(modMessage, body)
	cases := []struct {
		name      string
		change    func(m gomilter.Modifier) error
		leadSpace bool
		want      string // the message h gets
		from      string
		to        []string
		toParams  [][]string
	}{
		{"add header", func(m gomilter.Modifier) error { return m.AddHeader("X-Added", "yes") },
			false, head + "X-Added: yes\r\n" + body, "", nil, nil},
		{"add folded header", func(m gomilter.Modifier) error { return m.AddHeader("X-Multi", "a\n\tb\n c") },
			false, head + "X-Multi: a\r\n\tb\r\n c\r\n" + body, "", nil, nil},
		{"add header, continuation without blank gets a TAB", func(m gomilter.Modifier) error { return m.AddHeader("X-Multi", "a\nb") },
			false, head + "X-Multi: a\r\n\tb\r\n" + body, "", nil, nil},
		{"add header with leading space negotiated", func(m gomilter.Modifier) error { return m.AddHeader("X-Lead", " v") },
			true, head + "X-Lead: v\r\n" + body, "", nil, nil},
		{"add header without its space, leading space negotiated", func(m gomilter.Modifier) error { return m.AddHeader("X-Lead", "v") },
			true, head + "X-Lead:v\r\n" + body, "", nil, nil},
		{"insert at 0", func(m gomilter.Modifier) error { return m.InsertHeader(0, "X-Top", "1") },
			false, "X-Top: 1\r\n" + modMessage, "", nil, nil},
		{"insert at 1", func(m gomilter.Modifier) error { return m.InsertHeader(1, "X-Second", "2") },
			false, "Received: from relay.test\r\nX-Second: 2\r\n" + strings.TrimPrefix(modMessage, "Received: from relay.test\r\n"), "", nil, nil},
		{"insert past the end", func(m gomilter.Modifier) error { return m.InsertHeader(99, "X-End", "e") },
			false, head + "X-End: e\r\n" + body, "", nil, nil},
		{"change subject", func(m gomilter.Modifier) error { return m.ChangeHeader(1, "Subject", "changed") },
			false, strings.Replace(modMessage, "Subject: test", "Subject: changed", 1), "", nil, nil},
		{"change index 0 is 1", func(m gomilter.Modifier) error { return m.ChangeHeader(0, "Subject", "changed") },
			false, strings.Replace(modMessage, "Subject: test", "Subject: changed", 1), "", nil, nil},
		{"change the second of a name, any case", func(m gomilter.Modifier) error { return m.ChangeHeader(2, "x-dup", "two") },
			false, strings.Replace(modMessage, "X-Dup: 2\r\n", "x-dup: two\r\n", 1), "", nil, nil},
		{"delete the third", func(m gomilter.Modifier) error { return m.ChangeHeader(3, "X-Dup", "") },
			false, strings.Replace(modMessage, "X-Dup: 3\r\n", "", 1), "", nil, nil},
		{"delete a folded field", func(m gomilter.Modifier) error { return m.ChangeHeader(1, "X-Fold", "") },
			false, strings.Replace(modMessage, "X-Fold: a\r\n b\r\n", "", 1), "", nil, nil},
		{"change a missing field adds it", func(m gomilter.Modifier) error { return m.ChangeHeader(4, "X-Dup", "4") },
			false, head + "X-Dup: 4\r\n" + body, "", nil, nil},
		{"delete a missing field changes nothing", func(m gomilter.Modifier) error { return m.ChangeHeader(4, "X-Dup", "") },
			false, modMessage, "", nil, nil},
		{"deletes in reverse order", func(m gomilter.Modifier) error {
			if err := m.ChangeHeader(3, "X-Dup", ""); err != nil {
				return err
			}
			return m.ChangeHeader(1, "X-Dup", "")
		}, false, strings.Replace(strings.Replace(modMessage, "X-Dup: 3\r\n", "", 1), "X-Dup: 1\r\n", "", 1), "", nil, nil},
		{"replace body", func(m gomilter.Modifier) error { return m.ReplaceBody(strings.NewReader("new body\r\n")) },
			false, head + "\r\nnew body\r\n", "", nil, nil},
		{"replace body: LF and a last line without end", func(m gomilter.Modifier) error {
			return m.ReplaceBody(strings.NewReader("one\ntwo\r\nthree"))
		}, false, head + "\r\none\r\ntwo\r\nthree\r\n", "", nil, nil},
		{"replace body with nothing", func(m gomilter.Modifier) error { return m.ReplaceBody(strings.NewReader("")) },
			false, modMessage, "", nil, nil},
		{"add recipient with args", func(m gomilter.Modifier) error { return m.AddRecipient("c@example.com", "NOTIFY=NEVER") },
			false, modMessage, "a@example.org", []string{"b@example.net", "c@example.com"}, [][]string{{"NOTIFY=SUCCESS"}, {"NOTIFY=NEVER"}}},
		{"add an existing recipient again", func(m gomilter.Modifier) error { return m.AddRecipient("b@example.net", "NOTIFY=SUCCESS") },
			false, modMessage, "a@example.org", []string{"b@example.net"}, [][]string{{"NOTIFY=SUCCESS"}}},
		{"delete recipient", func(m gomilter.Modifier) error { return m.DeleteRecipient("<b@example.net>") },
			false, modMessage, "a@example.org", []string{}, [][]string{}},
		{"change sender with args", func(m gomilter.Modifier) error { return m.ChangeFrom("new@example.org", "RET=HDRS") },
			false, modMessage, "new@example.org", []string{"b@example.net"}, [][]string{{"NOTIFY=SUCCESS"}}},
	}
	for _, c := range cases {
		for _, streaming := range []bool{false, true} {
			name := c.name
			if streaming {
				name += "/stream"
			}
			t.Run(name, func(t *testing.T) {
				sc := startScripted(t, scriptedOpts{leadSpace: c.leadSpace}, map[string]answer{"eom": eomDoes(c.change)})
				var h smtpd.Handler = &qRecorder{}
				if streaming {
					h = &streamRecorder{}
				}
				ts := milterServer(t, h, milters(sc), func(s *smtpd.Server) { s.DSN = true })
				r := transaction(t, ts, "MAIL FROM:<a@example.org> RET=FULL", []string{"RCPT TO:<b@example.net> NOTIFY=SUCCESS"}, modMessage)
				if r.Code != 250 {
					t.Fatalf("final reply %v", r)
				}
				msgs, _, envs := deliveredAll(h)
				if len(msgs) != 1 {
					t.Fatalf("%d messages delivered", len(msgs))
				}
				if msgs[0] != c.want {
					t.Errorf("message\n%q\nwant\n%q", msgs[0], c.want)
				}
				env := envs[0]
				if c.from != "" && env.From != c.from {
					t.Errorf("From %q, want %q", env.From, c.from)
				}
				if c.to != nil && !slices.Equal(env.To, c.to) {
					t.Errorf("To %q, want %q", env.To, c.to)
				}
				if c.toParams != nil && !slices.EqualFunc(env.ToParams, c.toParams, slices.Equal) {
					t.Errorf("ToParams %q, want %q", env.ToParams, c.toParams)
				}
				if c.name == "change sender with args" && (env.DSNRet != "HDRS" || !slices.Equal(env.FromParams, []string{"RET=HDRS"})) {
					t.Errorf("DSNRet %q FromParams %q, want HDRS and [RET=HDRS]", env.DSNRet, env.FromParams)
				}
			})
		}
	}
}

// TestHeaderValuesSent checks the header values milters get: one leading space
// removed unless the milter negotiated SMFIP_HDR_LEADSPC (OpenDKIM does,
// spamass-milter does not: a wrong one breaks DKIM signatures), folded lines
// separated by a bare "\n", the field name without blanks before its colon.
func TestHeaderValuesSent(t *testing.T) {
	msg := "Subject:  two spaces\r\nX-Fold: a\r\n\tb\r\nX-Tab:\tt\r\nX-None:n\r\nX-Sp : v\r\n\r\nbody\r\n"
	for _, lead := range []bool{false, true} {
		sc := startScripted(t, scriptedOpts{leadSpace: lead}, nil)
		ts := milterServer(t, &qRecorder{}, milters(sc))
		if r := transaction(t, ts, "MAIL FROM:<a@example.org>", []string{"RCPT TO:<b@example.net>"}, msg); r.Code != 250 {
			t.Fatalf("final reply %v", r)
		}
		var got [][]string
		for _, e := range sc.Events() {
			if e.Stage == "header" {
				got = append(got, e.Args)
			}
		}
		want := [][]string{{"Subject", " two spaces"}, {"X-Fold", "a\n\tb"}, {"X-Tab", "\tt"}, {"X-None", "n"}, {"X-Sp", "v"}}
		if lead {
			want = [][]string{{"Subject", "  two spaces"}, {"X-Fold", " a\n\tb"}, {"X-Tab", "\tt"}, {"X-None", "n"}, {"X-Sp", " v"}}
		}
		if !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("leadSpace=%v: headers sent %q, want %q", lead, got, want)
		}
	}
}

// TestTooManyHeaderFields checks that a header section of more fields than the
// client tracks is refused rather than remembered.
func TestTooManyHeaderFields(t *testing.T) {
	for _, streaming := range []bool{false, true} {
		sc := startScripted(t, scriptedOpts{quiet: true}, nil)
		var h smtpd.Handler = &qRecorder{}
		if streaming {
			h = &streamRecorder{}
		}
		ts := milterServer(t, h, milters(sc))
		msg := strings.Repeat("X: y\r\n", 10001) + "\r\nbody\r\n"
		if r := transaction(t, ts, "MAIL FROM:<a@example.org>", []string{"RCPT TO:<b@example.net>"}, msg); r.Code != 552 || r.Text != "5.3.4 Message header too large" {
			t.Errorf("stream=%v: reply %v, want 552 5.3.4", streaming, r)
		}
		if msgs, _ := delivered(h); len(msgs) != 0 {
			t.Errorf("stream=%v: %d delivered", streaming, len(msgs))
		}
	}
}
