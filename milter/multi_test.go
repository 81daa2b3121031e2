package milter_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
)

// This file checks several milters in order (smtpd_milters), and that the body
// reaches the milters as it arrives.

// headerNames returns the names of the header events a milter got.
func headerNames(sc *scripted) []string {
	var out []string
	for _, e := range sc.Events() {
		if e.Stage == "header" {
			out = append(out, e.Args[0])
		}
	}
	return out
}

func TestMiltersInOrder(t *testing.T) {
	t.Run("a later milter sees the earlier one's changes", func(t *testing.T) {
		first := startScripted(t, scriptedOpts{}, map[string]answer{"eom": eomDoes(func(m gomilter.Modifier) error {
			if err := m.AddHeader("X-First", "1"); err != nil {
				return err
			}
			if err := m.ChangeHeader(1, "Subject", "from first"); err != nil {
				return err
			}
			return m.ReplaceBody(strings.NewReader("first's body\r\n"))
		})})
		second := startScripted(t, scriptedOpts{}, map[string]answer{"eom": eomDoes(func(m gomilter.Modifier) error {
			return m.InsertHeader(0, "X-Second", "2")
		})})
		h := &qRecorder{}
		ts := milterServer(t, h, milters(first, second))
		if r := transaction(t, ts, "MAIL FROM:<a@example.org>", []string{"RCPT TO:<b@example.net>"}, testMessage); r.Code != 250 {
			t.Fatalf("final reply %v", r)
		}
		if got, want := headerNames(second), []string{"Subject", "From", "X-First"}; !slices.Equal(got, want) {
			t.Errorf("second milter's headers %q, want %q", got, want)
		}
		var body string
		for _, e := range second.Events() {
			if e.Stage == "header" && e.Args[0] == "Subject" && e.Args[1] != "from first" {
				t.Errorf("second milter's Subject %q, want the first's change", e.Args[1])
			}
			if e.Stage == "body" {
				body += e.Args[0]
			}
		}
		if body != "first's body\r\n" {
			t.Errorf("second milter's body %q, want the first's", body)
		}
		msgs, _ := delivered(h)
		want := "X-Second: 2\r\nSubject: from first\r\nFrom: <a@example.org>\r\nX-First: 1\r\n\r\nfirst's body\r\n"
		if len(msgs) != 1 || msgs[0] != want {
			t.Errorf("delivered %q, want %q", msgs, want)
		}
	})

	t.Run("a refusal stops the event for the milters after it", func(t *testing.T) {
		first := startScripted(t, scriptedOpts{}, map[string]answer{"rcpt": respond(gomilter.RespReject)})
		second := startScripted(t, scriptedOpts{}, nil)
		ts := milterServer(t, &qRecorder{}, milters(first, second))
		got := converse(t, ts, testMessage)
		if !slices.Equal(codes(got), []int{220, 250, 250, 550, 503, 0}) {
			t.Fatalf("replies %v", got)
		}
		second.waitStage(t, "quit")
		if slices.Contains(second.Stages(), "rcpt") || !slices.Contains(second.Stages(), "mail") {
			t.Errorf("second milter got %v, want mail and no rcpt", second.Stages())
		}
	})

	t.Run("a discard at the end stops the milters after it", func(t *testing.T) {
		first := startScripted(t, scriptedOpts{}, map[string]answer{"eom": respond(gomilter.RespDiscard)})
		second := startScripted(t, scriptedOpts{}, nil)
		h := &qRecorder{}
		ts := milterServer(t, h, milters(first, second))
		if r := transaction(t, ts, "MAIL FROM:<a@example.org>", []string{"RCPT TO:<b@example.net>"}, testMessage); r.Code != 250 {
			t.Fatalf("final reply %v", r)
		}
		second.waitStage(t, "quit")
		if msgs, _ := delivered(h); len(msgs) != 0 || slices.Contains(second.Stages(), "eom") {
			t.Errorf("delivered %d, second milter got %v", len(msgs), second.Stages())
		}
	})

	t.Run("milters that cannot change the content all get it live", func(t *testing.T) {
		// first may only refuse: second gets the content as it arrives too.
		first := startScripted(t, scriptedOpts{actions: gomilter.OptQuarantine}, nil)
		second := startScripted(t, scriptedOpts{}, nil)
		third := startScripted(t, scriptedOpts{}, nil)
		bodyArrives(t, []*scripted{first, second, third}, []bool{true, true, false})
	})
}

// bodyArrives sends a message in two parts and checks which milters got body
// chunks of the first part before the client sent the second.
func bodyArrives(t *testing.T, ms []*scripted, live []bool) {
	t.Helper()
	for _, streaming := range []bool{false, true} {
		var h smtpd.Handler = &qRecorder{}
		if streaming {
			h = &streamRecorder{}
		}
		ts := milterServer(t, h, milters(ms...))
		c := inTransaction(t, ts)
		c.Cmd("DATA", 354)
		line := strings.Repeat("x", 998) + "\r\n"
		// 200 KB: three full chunks, two at least past the server's own buffering
		part := "Subject: big\r\n\r\n" + strings.Repeat(line, 200)
		c.Send(part)
		deadline := time.Now().Add(5 * time.Second)
		for i, m := range ms {
			for live[i] && bodyChunks(m) < 2 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if got := bodyChunks(m) >= 2; got != live[i] {
				t.Errorf("stream=%v milter %d got body chunks before the end: %v, want %v", streaming, i, got, live[i])
			}
		}
		c.Send(strings.Repeat(line, 10) + ".\r\n")
		c.Expect(250)
		c.Cmd("QUIT", 221)
		for i, m := range ms {
			for _, e := range m.Events() {
				if e.Stage == "body" && len(e.Args[0]) > 65535 {
					t.Errorf("milter %d got a body chunk of %d bytes", i, len(e.Args[0]))
				}
			}
			if got, want := bodyBytes(m), len(part)-len("Subject: big\r\n\r\n")+10*len(line); got != want {
				t.Errorf("milter %d got %d body bytes, want %d", i, got, want)
			}
		}
		for _, m := range ms {
			m.mu.Lock()
			m.events = nil
			m.mu.Unlock()
		}
	}
}

// bodyChunks counts a milter's body events.
func bodyChunks(sc *scripted) int {
	n := 0
	for _, e := range sc.Events() {
		if e.Stage == "body" {
			n++
		}
	}
	return n
}

// bodyBytes counts the body bytes a milter got.
func bodyBytes(sc *scripted) int {
	n := 0
	for _, e := range sc.Events() {
		if e.Stage == "body" {
			n += len(e.Args[0])
		}
	}
	return n
}

func TestBodyArrivesLive(t *testing.T) {
	bodyArrives(t, []*scripted{startScripted(t, scriptedOpts{}, nil)}, []bool{true})
}
