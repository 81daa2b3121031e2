package milter_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/milter"
)

// This file breaks milters: down, hanging, sending garbage, dying mid-message;
// each gets DefaultAction, is logged once, and the session survives.

// downAddr is the address of a port where nothing listens.
func downAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "inet:" + addr
}

// faultyMilter is a milter that speaks the protocol until a chosen command, and
// then does what it is told: hang, close, or write garbage. It answers the
// negotiation with version 6 and no actions, every command before the chosen one
// with SMFIR_CONTINUE. It is the tests' fault injector, not a milter.
type faultyMilter struct {
	Addr  string
	at    byte   // the command code at which it fails ('O' for the negotiation)
	fault string // "hang", "close" or "garbage"
	bytes []byte // the garbage
}

// startFaulty starts a faulty milter on 127.0.0.1.
func startFaulty(t *testing.T, at byte, fault string, garbage []byte) *faultyMilter {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fm := &faultyMilter{Addr: "inet:" + l.Addr().String(), at: at, fault: fault, bytes: garbage}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); fm.serve(c) }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return fm
}

// packet frames one milter packet.
func packet(code byte, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(b, code), data...)
}

func (fm *faultyMilter) serve(c net.Conn) {
	defer c.Close()
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		data := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(c, data); err != nil || len(data) == 0 {
			return
		}
		code := data[0]
		if code == fm.at {
			switch fm.fault {
			case "hang":
				io.Copy(io.Discard, c) // until the client gives up
			case "garbage":
				c.Write(fm.bytes)
				io.Copy(io.Discard, c)
			}
			return
		}
		switch code {
		case 'O':
			c.Write(packet('O', binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 6), 0), 0)))
		case 'D', 'A', 'Q': // macros, abort, quit: no reply
			if code == 'Q' {
				return
			}
		case 'E':
			c.Write(packet('c', nil))
		default:
			c.Write(packet('c', nil))
		}
	}
}

// logCount counts the log records whose message is msg.
type logCount struct {
	mu    sync.Mutex
	count map[string]int
}

func (l *logCount) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCount) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count == nil {
		l.count = map[string]int{}
	}
	l.count[r.Message]++
	return nil
}
func (l *logCount) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCount) WithGroup(string) slog.Handler      { return l }
func (l *logCount) n(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count[msg]
}

func TestFaultsGetDefaultAction(t *testing.T) {
	short := func(addr string) milter.Milter {
		return milter.Milter{Addr: addr, ConnectTimeout: 300 * time.Millisecond,
			CommandTimeout: 300 * time.Millisecond, EOMTimeout: 300 * time.Millisecond}
	}
	faults := []struct {
		name  string
		addr  func(t *testing.T) string
		stage string // where it fails: connect, mail or message
	}{
		{"down", downAddr, "connect"},
		{"hangs at negotiation", func(t *testing.T) string { return startFaulty(t, 'O', "hang", nil).Addr }, "connect"},
		{"garbage at negotiation", func(t *testing.T) string {
			return startFaulty(t, 'O', "garbage", []byte("HTTP/1.1 400 Bad Request\r\n\r\n")).Addr
		}, "connect"},
		{"zero-length packet at negotiation", func(t *testing.T) string {
			return startFaulty(t, 'O', "garbage", []byte{0, 0, 0, 0}).Addr
		}, "connect"},
		{"hangs at MAIL", func(t *testing.T) string { return startFaulty(t, 'M', "hang", nil).Addr }, "mail"},
		{"closes at MAIL", func(t *testing.T) string { return startFaulty(t, 'M', "close", nil).Addr }, "mail"},
		{"unknown reply at MAIL", func(t *testing.T) string { return startFaulty(t, 'M', "garbage", packet('z', nil)).Addr }, "mail"},
		{"huge packet at MAIL", func(t *testing.T) string {
			return startFaulty(t, 'M', "garbage", []byte{0x7f, 0xff, 0xff, 0xff, 'c'}).Addr
		}, "mail"},
		{"dies mid-body", func(t *testing.T) string { return startFaulty(t, 'B', "close", nil).Addr }, "message"},
		{"garbage mid-body", func(t *testing.T) string { return startFaulty(t, 'B', "garbage", []byte("\x00\x00\x00\x02y\x00")).Addr }, "message"},
		{"hangs at end of message", func(t *testing.T) string { return startFaulty(t, 'E', "hang", nil).Addr }, "message"},
	}
	want := map[string]map[milter.DefaultAction][]int{
		"connect": {milter.TempFail: {220, 250, 451, 503, 503, 0}, milter.Accept: allOK, milter.Reject: {554}},
		"mail":    {milter.TempFail: {220, 250, 451, 503, 503, 0}, milter.Accept: allOK, milter.Reject: {220, 250, 550, 503, 503, 0}},
		"message": {milter.TempFail: {220, 250, 250, 250, 354, 451, 221}, milter.Accept: allOK, milter.Reject: {220, 250, 250, 250, 354, 550, 221}},
	}
	for _, f := range faults {
		for _, da := range []milter.DefaultAction{milter.TempFail, milter.Accept, milter.Reject} {
			for _, streaming := range []bool{false, true} {
				name := f.name + "/" + da.String()
				if streaming {
					name += "/stream"
				}
				t.Run(name, func(t *testing.T) {
					logs := &logCount{}
					cfg := milter.Config{Milters: []milter.Milter{short(f.addr(t))}, DefaultAction: da, Logger: slog.New(logs)}
					var h smtpd.Handler = &qRecorder{}
					if streaming {
						h = &streamRecorder{}
					}
					ts := milterServer(t, h, cfg)
					got := converse(t, ts, testMessage)
					if !slices.Equal(codes(got), want[f.stage][da]) {
						t.Fatalf("replies %v, want %v", got, want[f.stage][da])
					}
					if r := firstRefusal(got); r.Code == 451 && r.Text != "4.7.1 Service unavailable - try again later" ||
						r.Code == 550 && r.Text != "5.5.0 Service unavailable" {
						t.Errorf("refusal %v", r)
					}
					msgs, _ := delivered(h)
					if len(msgs) != map[bool]int{true: 1, false: 0}[da == milter.Accept] {
						t.Errorf("%d messages delivered under %v", len(msgs), da)
					}
					if len(msgs) == 1 && msgs[0] != testMessage {
						t.Errorf("delivered %q", msgs[0])
					}
					if n := logs.n("milter failed"); n != 1 {
						t.Errorf("%d log lines for the failure, want 1", n)
					}
				})
			}
		}
	}
}

// TestFailureLoggedOnceAndSessionSurvives sends several transactions to a milter
// that is down: each MAIL gets 451, one line is logged, and the session goes on.
func TestFailureLoggedOnceAndSessionSurvives(t *testing.T) {
	logs := &logCount{}
	ts := milterServer(t, &qRecorder{}, milter.Config{Milters: []milter.Milter{{Addr: downAddr(t)}}, Logger: slog.New(logs)})
	c := greeted(t, ts)
	for range 3 {
		c.Cmd("MAIL FROM:<a@example.org>", 451)
		c.Cmd("RSET", 250)
		c.Cmd("NOOP", 250)
	}
	c.Cmd("QUIT", 221)
	if n := logs.n("milter failed"); n != 1 {
		t.Errorf("%d log lines, want 1", n)
	}
}

// TestMilterCrashReturnsError checks a milter whose handler fails mid-body (its
// connection closes): 451, nothing delivered, and the client can go on.
func TestMilterCrashMidBody(t *testing.T) {
	sc := startScripted(t, scriptedOpts{}, map[string]answer{"body": func(gomilter.Modifier, mevent) (*gomilter.Response, error) {
		return nil, io.ErrClosedPipe // go-milter's server closes the connection
	}})
	h := &qRecorder{}
	ts := milterServer(t, h, milters(sc))
	big := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 20000)
	got := converse(t, ts, big)
	if !slices.Equal(codes(got), []int{220, 250, 250, 250, 354, 451, 221}) {
		t.Fatalf("replies %v", got)
	}
	if msgs, _ := delivered(h); len(msgs) != 0 {
		t.Errorf("%d messages delivered", len(msgs))
	}
}

// TestReplyBudget checks that a milter that sends more than MaxReplyBytes at the
// end of a message has failed.
func TestReplyBudget(t *testing.T) {
	sc := startScripted(t, scriptedOpts{}, map[string]answer{"eom": eomDoes(func(m gomilter.Modifier) error {
		return m.ReplaceBody(bytes.NewReader(bytes.Repeat([]byte("x"), 300<<10)))
	})})
	cfg := milters(sc)
	cfg.MaxReplyBytes = 100 << 10
	h := &qRecorder{}
	ts := milterServer(t, h, cfg)
	if r := transaction(t, ts, "MAIL FROM:<a@example.org>", []string{"RCPT TO:<b@example.net>"}, testMessage); r.Code != 451 {
		t.Fatalf("final reply %v, want 451", r)
	}
	if msgs, _ := delivered(h); len(msgs) != 0 {
		t.Errorf("%d messages delivered", len(msgs))
	}
}
