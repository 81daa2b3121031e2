package milter_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/milter"
)

// This file checks the session around the messages: ABORT at every reset, QUIT
// at the end, unknown commands, refused recipients, the program's own header
// fields, BDAT and LMTP.

// after returns the stages that follow the first event of stage from.
func after(stages []string, from string) []string {
	if i := slices.Index(stages, from); i >= 0 {
		return stages[i+1:]
	}
	return nil
}

func TestAbortAndQuit(t *testing.T) {
	t.Run("RSET", func(t *testing.T) {
		sc := startScripted(t, scriptedOpts{}, nil)
		ts := milterServer(t, &qRecorder{}, milters(sc))
		c := inTransaction(t, ts)
		c.Cmd("RSET", 250)
		c.Cmd("MAIL FROM:<c@example.org>", 250)
		c.Cmd("QUIT", 221)
		sc.waitStage(t, "quit")
		want := []string{"connect", "helo", "mail", "rcpt", "abort", "mail", "abort", "quit"}
		if got := sc.Stages(); !slices.Equal(got, want) {
			t.Errorf("events %v, want %v", got, want)
		}
	})
	t.Run("client gone mid-message", func(t *testing.T) {
		for _, streaming := range []bool{false, true} {
			sc := startScripted(t, scriptedOpts{}, nil)
			var h smtpd.Handler = &qRecorder{}
			if streaming {
				h = &streamRecorder{}
			}
			ts := milterServer(t, h, milters(sc))
			c := inTransaction(t, ts)
			c.Cmd("DATA", 354)
			c.Send("Subject: half\r\n\r\n" + strings.Repeat("half a message\r\n", 2000)) // past the stream's 8 KiB hand-off
			sc.waitStage(t, "eoh")
			c.Close()
			sc.waitStage(t, "quit")
			if got := after(sc.Stages(), "eoh"); !slices.Equal(got, []string{"abort", "quit"}) {
				t.Errorf("stream=%v: after the headers %v, want abort, quit", streaming, got)
			}
			if msgs, _ := delivered(h); len(msgs) != 0 {
				t.Errorf("stream=%v: %d delivered", streaming, len(msgs))
			}
		}
	})
	t.Run("two messages in a session", func(t *testing.T) {
		sc := startScripted(t, scriptedOpts{}, nil)
		h := &qRecorder{}
		ts := milterServer(t, h, milters(sc))
		c := greeted(t, ts)
		for i := range 2 {
			c.Cmd("MAIL FROM:<a@example.org>", 250)
			c.Cmd("RCPT TO:<b@example.net>", 250)
			c.Cmd("DATA", 354)
			c.Send(fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n.\r\n", i))
			c.Expect(250)
		}
		c.Cmd("QUIT", 221)
		sc.waitStage(t, "quit")
		if n := strings.Count(strings.Join(sc.Stages(), " "), "eom abort"); n != 2 {
			t.Errorf("events %v: want eom then abort twice", sc.Stages())
		}
		if msgs, _ := delivered(h); len(msgs) != 2 {
			t.Errorf("%d delivered", len(msgs))
		}
	})
	t.Run("DATA refused twice", func(t *testing.T) {
		sc := startScripted(t, scriptedOpts{}, map[string]answer{"data": custom(451, "4.7.0 later")})
		ts := milterServer(t, &qRecorder{}, milters(sc))
		c := inTransaction(t, ts)
		c.Cmd("DATA", 451)
		c.Cmd("DATA", 451)
		c.Cmd("RSET", 250)
		c.Cmd("QUIT", 221)
		sc.waitStage(t, "quit")
		if n := strings.Count(strings.Join(sc.Stages(), " "), "data"); n != 1 {
			t.Errorf("events %v: want one data event", sc.Stages())
		}
	})
}

func TestUnknownCommands(t *testing.T) {
	cases := []struct {
		name   string
		answer answer
		want   int
	}{
		{"continue: the server's 500", nil, 500},
		{"4xx replaces it", custom(421, "4.7.0 go away"), 421},
		{"tempfail replaces it", respond(gomilter.RespTempFail), 451},
		{"5xx does not", respond(gomilter.RespReject), 500},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sc := startScripted(t, scriptedOpts{}, map[string]answer{"unknown": c.answer})
			ts := milterServer(t, &qRecorder{}, milters(sc))
			conn := greeted(t, ts)
			conn.Cmd("FROBNICATE now", c.want)
			if c.want == 421 {
				conn.ExpectClosed()
			} else {
				conn.Cmd("QUIT", 221)
			}
			if e := sc.first(t, "unknown"); e.Args[0] != "FROBNICATE now" {
				t.Errorf("unknown event %q", e.Args)
			}
		})
	}
}

// rcptChecker refuses one recipient.
type rcptChecker struct{ qRecorder }

func (*rcptChecker) OnRcptTo(_ *smtpd.Session, to string) (string, error) {
	if to == "nobody@example.net" {
		return "", &smtpd.SMTPError{Code: 550, EnhancedCode: "5.1.1", Message: "no such user"}
	}
	return "", nil
}

func TestRefusedRecipientsToMiltersThatAsk(t *testing.T) {
	asks := startScripted(t, scriptedOpts{protocol: gomilter.OptRcptRej}, nil)
	plain := startScripted(t, scriptedOpts{}, nil)
	ts := milterServer(t, &rcptChecker{}, milters(asks, plain))
	if r := transaction(t, ts, "MAIL FROM:<a@example.org>", []string{"RCPT TO:<nobody@example.net>", "RCPT TO:<b@example.net>"}, testMessage); r.Code != 550 {
		t.Fatalf("reply %v, want the refused RCPT's 550", r)
	}
	e := asks.first(t, "rcpt")
	if e.Args[0] != "nobody@example.net" {
		t.Fatalf("first rcpt event %q", e.Args)
	}
	wantMacros(t, e, map[string]string{"{rcpt_mailer}": "error", "{rcpt_host}": "5.1.1", "{rcpt_addr}": "no such user"})
	if slices.Contains(plain.Stages(), "rcpt") {
		t.Errorf("a milter that did not ask got the refused recipient: %v", plain.Stages())
	}
}

// receivedAdder adds its own Received: field, as a server does.
type receivedAdder struct{ qRecorder }

func (*receivedAdder) OnDataStart(s *smtpd.Session) error {
	s.Message.Data = append(s.Message.Data, "Received: from client.test by mx.test\r\n"...)
	return nil
}

// TestOwnHeaderHidden checks that the program's own fields (added in
// OnDataStart) are not shown to the milters, that a change's index skips them,
// and that an insert's index counts them (Postfix and its own Received:).
func TestOwnHeaderHidden(t *testing.T) {
	msg := "Received: from relay.test\r\nSubject: s\r\n\r\nbody\r\n"
	sc := startScripted(t, scriptedOpts{}, map[string]answer{"eom": eomDoes(func(m gomilter.Modifier) error {
		if err := m.ChangeHeader(1, "Received", "from changed.test"); err != nil {
			return err
		}
		if err := m.InsertHeader(0, "X-Top", "0"); err != nil {
			return err
		}
		return m.InsertHeader(2, "X-After-Two", "2")
	})})
	h := &receivedAdder{}
	ts := milterServer(t, h, milters(sc))
	if r := transaction(t, ts, "MAIL FROM:<a@example.org>", []string{"RCPT TO:<b@example.net>"}, msg); r.Code != 250 {
		t.Fatalf("reply %v", r)
	}
	if got := headerNames(sc); !slices.Equal(got, []string{"Received", "Subject"}) {
		t.Errorf("milter saw %q, want the client's fields only", got)
	}
	want := "X-Top: 0\r\nReceived: from client.test by mx.test\r\nX-After-Two: 2\r\nReceived: from changed.test\r\nSubject: s\r\n\r\nbody\r\n"
	if msgs, _ := delivered(h); len(msgs) != 1 || msgs[0] != want {
		t.Errorf("delivered %q, want %q", msgs, want)
	}
}

func TestBDAT(t *testing.T) {
	sc := startScripted(t, scriptedOpts{}, map[string]answer{"eom": eomDoes(func(m gomilter.Modifier) error {
		return m.AddHeader("X-Seen", "yes")
	})})
	h := &qRecorder{}
	ts := milterServer(t, h, milters(sc), func(s *smtpd.Server) { s.Chunking = true })
	c := inTransaction(t, ts)
	part1, part2 := "Subject: chunked\r\n\r\nfirst ", "part\r\n"
	c.Send(fmt.Sprintf("BDAT %d\r\n%s", len(part1), part1))
	c.Expect(250)
	c.Send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(part2), part2))
	c.Expect(250)
	c.Cmd("QUIT", 221)
	want := "Subject: chunked\r\nX-Seen: yes\r\n\r\nfirst part\r\n"
	if msgs, _ := delivered(h); len(msgs) != 1 || msgs[0] != want {
		t.Errorf("delivered %q, want %q", msgs, want)
	}
	if e := sc.first(t, "body"); e.Args[0] != "first part\r\n" {
		t.Errorf("body %q", e.Args[0])
	}
}

// lmtpRecorder answers each recipient and notes which it was asked about.
type lmtpRecorder struct {
	qRecorder
	asked []string
}

func (r *lmtpRecorder) OnMessageRecipient(_ *smtpd.Session, rcpt string) error {
	r.mu.Lock()
	r.asked = append(r.asked, rcpt)
	r.mu.Unlock()
	return nil
}

func TestLMTP(t *testing.T) {
	for _, action := range []string{"add", "discard"} {
		t.Run(action, func(t *testing.T) {
			a := eomDoes(func(m gomilter.Modifier) error { return m.AddRecipient("c@example.com", "") })
			if action == "discard" {
				a = respond(gomilter.RespDiscard)
			}
			sc := startScripted(t, scriptedOpts{}, map[string]answer{"eom": a})
			h := &lmtpRecorder{}
			ts := milterServer(t, h, milters(sc), func(s *smtpd.Server) { s.LMTP = true })
			c := ts.Dial(t)
			c.Expect(220)
			c.Cmd("LHLO client.test", 250)
			c.Cmd("MAIL FROM:<a@example.org>", 250)
			c.Cmd("RCPT TO:<b@example.net>", 250)
			c.Cmd("RCPT TO:<d@example.net>", 250)
			c.Cmd("DATA", 354)
			c.Send(testMessage + ".\r\n")
			c.Expect(250) // one reply per RCPT the client sent, whatever the milter did
			c.Expect(250)
			c.Cmd("QUIT", 221)
			_, _, envs := deliveredAll(h)
			h.mu.Lock()
			asked := slices.Clone(h.asked)
			h.mu.Unlock()
			switch action {
			case "add":
				if len(envs) != 1 || !slices.Equal(envs[0].To, []string{"b@example.net", "d@example.net", "c@example.com"}) {
					t.Errorf("OnMessage saw %v", envs)
				}
				if !slices.Equal(asked, []string{"b@example.net", "d@example.net"}) {
					t.Errorf("per-recipient hook asked for %q", asked)
				}
			case "discard":
				if len(envs) != 0 || len(asked) != 0 {
					t.Errorf("discarded message reached h: %v, %q", envs, asked)
				}
			}
		})
	}
}

// TestNoMilters checks that Wrap without milters is h itself.
func TestNoMilters(t *testing.T) {
	h := &qRecorder{}
	if milter.Wrap(h, milter.Config{}) != smtpd.Handler(h) {
		t.Error("Wrap with no milters did not return h")
	}
}

// TestBDATResetWhileStreaming resets a BDAT transfer between chunks while the
// stream hook waits for more: the milters get ABORT, nothing is delivered, and
// the session goes on.
func TestBDATResetWhileStreaming(t *testing.T) {
	sc := startScripted(t, scriptedOpts{}, nil)
	h := &streamRecorder{}
	ts := milterServer(t, h, milters(sc), func(s *smtpd.Server) { s.Chunking = true })
	c := inTransaction(t, ts)
	part := "Subject: chunked\r\n\r\n" + strings.Repeat("0123456789\r\n", 10000)
	c.Send(fmt.Sprintf("BDAT %d\r\n%s", len(part), part))
	c.Expect(250)
	sc.waitStage(t, "body")
	c.Cmd("RSET", 250)
	if r := transaction2(t, c); r != 250 {
		t.Fatalf("next message: %d", r)
	}
	c.Cmd("QUIT", 221)
	sc.waitStage(t, "quit")
	if n := strings.Count(strings.Join(sc.Stages(), " "), "abort"); n < 2 {
		t.Errorf("events %v: want an abort for the reset transfer", sc.Stages())
	}
	if msgs, _ := delivered(h); len(msgs) != 1 || msgs[0] != testMessage {
		t.Errorf("delivered %q, want only the second message", msgs)
	}
}

// transaction2 sends testMessage on an open, greeted connection.
func transaction2(t *testing.T, c interface {
	Cmd(string, int) string
	Send(string)
	Reply() (int, string)
}) int {
	t.Helper()
	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.net>", 250)
	c.Cmd("DATA", 354)
	c.Send(testMessage + ".\r\n")
	code, _ := c.Reply()
	return code
}

// TestServerCloseEndsMilterWaits closes the server while a milter takes its time
// at the end of a message (its timeout is long): the session ends at once, with
// nothing delivered.
func TestServerCloseEndsMilterWaits(t *testing.T) {
	fm := startFaulty(t, 'E', "hang", nil)
	h := &qRecorder{}
	cfg := milter.Config{Milters: []milter.Milter{{Addr: fm.Addr, EOMTimeout: time.Hour}}}
	ts := milterServer(t, h, cfg)
	c := inTransaction(t, ts)
	c.Cmd("DATA", 354)
	c.Send(testMessage + ".\r\n")
	time.Sleep(100 * time.Millisecond) // the session waits for the milter's end of message
	ts.Close()                         // fails the test if the session does not end within smtptest's bound
	if msgs, _ := delivered(h); len(msgs) != 0 {
		t.Errorf("%d delivered", len(msgs))
	}
}

// TestRefusalAnswersAuth checks that a refusal at connect that persists answers
// AUTH too (Postfix's milter_other_event), before the program is asked.
func TestRefusalAnswersAuth(t *testing.T) {
	sc := startScripted(t, scriptedOpts{}, map[string]answer{"connect": respond(gomilter.RespTempFail)})
	h := &authRecorder{}
	ts := milterServer(t, h, milters(sc), func(s *smtpd.Server) { s.AuthMode = smtpd.AuthOptional })
	c := greeted(t, ts)
	c.Cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", 451)
	c.Cmd("QUIT", 221)
}
