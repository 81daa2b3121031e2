package milter_test

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/milter"
	"github.com/midismtp/smtpd/smtptest"
)

// This file drives one milter's every action at every stage through a real SMTP
// conversation, and checks each reply the client gets, what the program's handler
// got, and which events the milter got, against what Postfix does.

// qRecorder records messages with their quarantine.
type qRecorder struct {
	smtptest.Recorder
	mu          sync.Mutex
	quarantined []string         // per message: its reason, or "-" when not quarantined
	envelopes   []smtpd.Envelope // per message
}

func (r *qRecorder) rec() *qRecorder { return r }

func (r *qRecorder) OnMessage(s *smtpd.Session) error {
	reason, ok := milter.Quarantined(s)
	if !ok {
		reason = "-"
	}
	r.mu.Lock()
	r.quarantined = append(r.quarantined, reason)
	r.envelopes = append(r.envelopes, cloneEnvelope(s.Envelope))
	r.mu.Unlock()
	return r.Recorder.OnMessage(s)
}

// testMessage is the message the conversations send.
const testMessage = "Subject: test\r\nFrom: <a@example.org>\r\n\r\nline one\r\nline two\r\n"

// reply is one SMTP reply: its code and its text (lines joined by "\n").
type reply struct {
	Code int
	Text string
}

func (r reply) String() string { return fmt.Sprintf("%d %q", r.Code, r.Text) }

// converse runs banner, EHLO, MAIL, RCPT, DATA, the message and QUIT, and returns
// the reply to each (its Code 0 when it was not sent: DATA refused, or the
// connection closed).
func converse(t *testing.T, ts *smtptest.Server, msg string) []reply {
	t.Helper()
	c := ts.Dial(t)
	defer c.Close()
	var out []reply
	get := func() reply {
		code, text := c.Reply()
		r := reply{code, text}
		out = append(out, r)
		return r
	}
	if r := get(); r.Code != 220 {
		c.ExpectClosed()
		return out
	}
	for _, cmd := range []string{"EHLO client.test", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>", "DATA"} {
		c.Send(cmd + "\r\n")
		if r := get(); r.Code == 421 {
			return out
		}
	}
	if out[len(out)-1].Code != 354 {
		return append(out, reply{})
	}
	c.Send(msg + ".\r\n")
	get()
	c.Send("QUIT\r\n")
	get()
	return out
}

// codes returns the codes of replies.
func codes(rs []reply) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.Code)
	}
	return out
}

// Replies of a whole conversation.
var (
	allOK        = []int{220, 250, 250, 250, 354, 250, 221}
	multiLine550 = "5.7.1 first line\n5.7.1 second line"
	multiLine450 = "4.7.2 busy\n4.7.2 retry later"
)

func TestStageActions(t *testing.T) {
	type tc struct {
		stage, action string
		answer        answer
		codes         []int
		text          string // the text of the first refusal, when checked
		delivered     bool
		quarantine    string   // the reason h saw ("-": none)
		noEvents      []string // events the milter must not have got
	}
	cases := []tc{
		// connect: 5xx refuses with 554, 421 with 421; other 4xx answer MAIL (Postfix's smtpd_proto)
		{"connect", "continue", nil, allOK, "", true, "-", nil},
		{"connect", "accept", respond(gomilter.RespAccept), allOK, "", true, "-", []string{"helo", "mail", "eom"}},
		// At connect the refusal is the greeting: no enhanced code (RFC 2034 3), as Postfix.
		{"connect", "reject", respond(gomilter.RespReject), []int{554}, "mx.test ESMTP not accepting connections", false, "", nil},
		{"connect", "tempfail", respond(gomilter.RespTempFail), []int{220, 250, 451, 503, 503, 0}, "4.7.1 Service unavailable - try again later", false, "", []string{"helo", "mail"}},
		{"connect", "discard", respond(gomilter.RespDiscard), allOK, "", true, "-", nil},
		{"connect", "custom5xx", custom(550, "5.7.1 first line\nsecond line"), []int{554}, "", false, "", nil},
		{"connect", "custom4xx", custom(450, "4.7.2 busy\nretry later"), []int{220, 250, 450, 503, 503, 0}, multiLine450, false, "", nil},
		{"connect", "custom421", custom(421, "4.3.2 going down"), []int{421}, "mx.test Service unavailable - try again later", false, "", nil},
		// HELO: a refusal does not refuse EHLO; it answers MAIL
		{"helo", "continue", nil, allOK, "", true, "-", nil},
		{"helo", "accept", respond(gomilter.RespAccept), allOK, "", true, "-", []string{"mail", "eom"}},
		{"helo", "reject", respond(gomilter.RespReject), []int{220, 250, 550, 503, 503, 0}, "5.7.1 Command rejected", false, "", []string{"mail"}},
		{"helo", "tempfail", respond(gomilter.RespTempFail), []int{220, 250, 451, 503, 503, 0}, "4.7.1 Service unavailable - try again later", false, "", nil},
		{"helo", "discard", respond(gomilter.RespDiscard), allOK, "", true, "-", nil},
		{"helo", "custom", custom(550, "5.7.1 first line\nsecond line"), []int{220, 250, 550, 503, 503, 0}, multiLine550, false, "", nil},
		// MAIL
		{"mail", "continue", nil, allOK, "", true, "-", nil},
		{"mail", "accept", respond(gomilter.RespAccept), allOK, "", true, "-", []string{"rcpt", "data", "header", "eom"}},
		{"mail", "reject", respond(gomilter.RespReject), []int{220, 250, 550, 503, 503, 0}, "5.7.1 Command rejected", false, "", []string{"rcpt"}},
		{"mail", "tempfail", respond(gomilter.RespTempFail), []int{220, 250, 451, 503, 503, 0}, "4.7.1 Service unavailable - try again later", false, "", nil},
		{"mail", "discard", respond(gomilter.RespDiscard), allOK, "", false, "", []string{"rcpt", "data", "eom"}},
		{"mail", "custom", custom(550, "5.7.1 first line\nsecond line"), []int{220, 250, 550, 503, 503, 0}, multiLine550, false, "", nil},
		{"mail", "custom4xx", custom(450, "4.7.2 busy\nretry later"), []int{220, 250, 450, 503, 503, 0}, multiLine450, false, "", nil},
		// RCPT: a refusal refuses that recipient
		{"rcpt", "continue", nil, allOK, "", true, "-", nil},
		{"rcpt", "accept", respond(gomilter.RespAccept), allOK, "", true, "-", []string{"data", "header", "eom"}},
		{"rcpt", "reject", respond(gomilter.RespReject), []int{220, 250, 250, 550, 503, 0}, "5.7.1 Command rejected", false, "", []string{"data"}},
		{"rcpt", "tempfail", respond(gomilter.RespTempFail), []int{220, 250, 250, 451, 503, 0}, "4.7.1 Service unavailable - try again later", false, "", nil},
		{"rcpt", "discard", respond(gomilter.RespDiscard), allOK, "", false, "", []string{"data", "eom"}},
		{"rcpt", "custom", custom(550, "5.7.1 first line\nsecond line"), []int{220, 250, 250, 550, 503, 0}, multiLine550, false, "", nil},
		// DATA
		{"data", "continue", nil, allOK, "", true, "-", nil},
		{"data", "accept", respond(gomilter.RespAccept), allOK, "", true, "-", []string{"header", "eom"}},
		{"data", "reject", respond(gomilter.RespReject), []int{220, 250, 250, 250, 550, 0}, "5.7.1 Command rejected", false, "", []string{"header"}},
		{"data", "tempfail", respond(gomilter.RespTempFail), []int{220, 250, 250, 250, 451, 0}, "4.7.1 Service unavailable - try again later", false, "", nil},
		{"data", "discard", respond(gomilter.RespDiscard), allOK, "", false, "", []string{"header", "eom"}},
		{"data", "custom", custom(550, "5.7.1 first line\nsecond line"), []int{220, 250, 250, 250, 550, 0}, multiLine550, false, "", nil},
	}
	// The content stages answer at the end of the message.
	for _, st := range []string{"header", "eoh", "body", "eom"} {
		next := map[string]string{"header": "eoh", "eoh": "body", "body": "eom", "eom": ""}[st]
		var noMore []string
		if next != "" && st != "eom" {
			noMore = []string{next}
		}
		if st == "header" {
			noMore = []string{"eoh", "body", "eom"}
		}
		cases = append(cases,
			tc{st, "continue", nil, allOK, "", true, "-", nil},
			tc{st, "accept", respond(gomilter.RespAccept), allOK, "", true, "-", noMore},
			tc{st, "reject", respond(gomilter.RespReject), []int{220, 250, 250, 250, 354, 550, 221}, "5.7.1 Command rejected", false, "", noMore},
			tc{st, "tempfail", respond(gomilter.RespTempFail), []int{220, 250, 250, 250, 354, 451, 221}, "4.7.1 Service unavailable - try again later", false, "", noMore},
			tc{st, "discard", respond(gomilter.RespDiscard), allOK, "", false, "", noMore},
			tc{st, "custom", custom(550, "5.7.1 first line\nsecond line"), []int{220, 250, 250, 250, 354, 550, 221}, multiLine550, false, "", noMore},
		)
	}
	cases = append(cases, tc{"eom", "quarantine", func(m gomilter.Modifier, _ mevent) (*gomilter.Response, error) {
		return gomilter.RespContinue, m.Quarantine("looks like a virus")
	}, allOK, "", true, "looks like a virus", nil})

	for _, c := range cases {
		for _, streaming := range []bool{false, true} {
			name := c.stage + "/" + c.action
			if streaming {
				name += "/stream"
			}
			t.Run(name, func(t *testing.T) {
				sc := startScripted(t, scriptedOpts{}, map[string]answer{c.stage: c.answer})
				var h smtpd.Handler = &qRecorder{}
				rec := h.(*qRecorder)
				if streaming {
					h = &streamRecorder{}
				}
				ts := milterServer(t, h, milters(sc))
				got := converse(t, ts, testMessage)
				if !slices.Equal(codes(got), c.codes) {
					t.Fatalf("replies %v, want codes %v", got, c.codes)
				}
				if c.text != "" {
					if r := firstRefusal(got); r.Text != c.text {
						t.Errorf("refusal text %q, want %q", r.Text, c.text)
					}
				}
				msgs, quarantines := delivered(h)
				if (len(msgs) == 1) != c.delivered || len(msgs) > 1 {
					t.Fatalf("delivered %d messages, want delivered=%v", len(msgs), c.delivered)
				}
				if c.delivered {
					if msgs[0] != testMessage {
						t.Errorf("delivered %q, want %q", msgs[0], testMessage)
					}
					if quarantines[0] != c.quarantine {
						t.Errorf("Quarantined: %q, want %q", quarantines[0], c.quarantine)
					}
				}
				if c.codes[0] == 220 {
					sc.waitStage(t, "quit")
				}
				for _, st := range c.noEvents {
					if slices.Contains(sc.Stages(), st) {
						t.Errorf("the milter got a %s event after %s at %s: %v", st, c.action, c.stage, sc.Stages())
					}
				}
				_ = rec
			})
		}
	}
}

// firstRefusal is the first 4xx or 5xx reply.
func firstRefusal(rs []reply) reply {
	for _, r := range rs {
		if r.Code >= 400 {
			return r
		}
	}
	return reply{}
}

// delivered returns the messages h delivered and their quarantine reasons.
func delivered(h smtpd.Handler) ([]string, []string) {
	msgs, qs, _ := deliveredAll(h)
	return msgs, qs
}

// deliveredAll returns the messages h delivered, their quarantine reasons and
// their envelopes as h saw them.
func deliveredAll(h smtpd.Handler) (msgs, qs []string, envs []smtpd.Envelope) {
	switch r := h.(type) {
	case interface{ rec() *qRecorder }:
		q := r.rec()
		for _, m := range q.Messages() {
			msgs = append(msgs, string(m.Data))
		}
		q.mu.Lock()
		qs, envs = slices.Clone(q.quarantined), slices.Clone(q.envelopes)
		q.mu.Unlock()
	case *streamRecorder:
		r.mu.Lock()
		for _, m := range r.msgs {
			msgs = append(msgs, m.data)
			qs = append(qs, m.quarantine)
			envs = append(envs, m.env)
		}
		r.mu.Unlock()
	}
	return msgs, qs, envs
}

// streamRecorder is a MessageStreamer that records what it read.
type streamRecorder struct {
	smtpd.BaseHandler
	mu   sync.Mutex
	msgs []streamed
}

// streamed is one message a streamRecorder read.
type streamed struct {
	data, quarantine string
	env              smtpd.Envelope
}

func (r *streamRecorder) OnMessageStream(s *smtpd.Session, rd io.Reader) error {
	data, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	reason, ok := milter.Quarantined(s)
	if !ok {
		reason = "-"
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, streamed{data: string(data), quarantine: reason, env: cloneEnvelope(s.Envelope)})
	r.mu.Unlock()
	return nil
}

// cloneEnvelope copies an envelope's slices.
func cloneEnvelope(e smtpd.Envelope) smtpd.Envelope {
	e.To = slices.Clone(e.To)
	e.ToParams = slices.Clone(e.ToParams)
	e.FromParams = slices.Clone(e.FromParams)
	return e
}
