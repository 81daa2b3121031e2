package milter_test

import (
	"context"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/milter"
	"github.com/midismtp/smtpd/smtptest"
)

// This file is the tests' milter: go-milter's server side (a protocol
// implementation we did not write) on loopback, whose answers each test scripts
// and which records every event it gets, with the macros that came with it.

// mevent is one event a scripted milter got.
type mevent struct {
	Stage  string            // connect, helo, mail, rcpt, data, header, eoh, body, eom, abort, unknown
	Args   []string          // the event's arguments (a header's name and value, a body chunk, ...)
	Macros map[string]string // the macros it could read then
}

// answer scripts a milter's reply to one event; nil answers continue. At "eom" it
// may also call the Modifier's changes.
type answer func(m gomilter.Modifier, ev mevent) (*gomilter.Response, error)

// scripted is a running scripted milter.
type scripted struct {
	Addr string // "inet:127.0.0.1:PORT"

	mu      sync.Mutex
	events  []mevent
	answers map[string]answer
	conns   int  // connections opened
	quiet   bool // record nothing
}

// scriptedOpts configure a scripted milter.
type scriptedOpts struct {
	leadSpace bool                 // negotiate SMFIP_HDR_LEADSPC
	protocol  gomilter.OptProtocol // more protocol options
	actions   gomilter.OptAction   // 0: every modification
	macros    map[gomilter.MacroStage][]string
	quiet     bool // record nothing (benchmarks)
}

// macroNames are the macros a scripted milter records.
var macroNames = []string{"j", "_", "v", "{daemon_name}", "{daemon_addr}", "{daemon_port}", "{client_addr}",
	"{client_port}", "{client_name}", "{client_ptr}", "{client_resolve}", "{tls_version}", "{cipher}",
	"{cipher_bits}", "{cert_subject}", "{cert_issuer}", "i", "{auth_type}", "{auth_authen}", "{auth_author}",
	"{mail_addr}", "{mail_host}", "{mail_mailer}", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"}

// startScripted starts a scripted milter on 127.0.0.1 for the test.
func startScripted(t testing.TB, o scriptedOpts, answers map[string]answer) *scripted {
	t.Helper()
	sc := &scripted{answers: answers, quiet: o.quiet}
	actions := o.actions
	if actions == 0 {
		actions = gomilter.AllClientSupportedActionMasks &^ gomilter.OptSetMacros
	}
	protocol := o.protocol
	if o.leadSpace {
		protocol |= gomilter.OptHeaderLeadingSpace
	}
	opts := []gomilter.Option{
		gomilter.WithMilter(func() gomilter.Milter {
			sc.mu.Lock()
			sc.conns++
			sc.mu.Unlock()
			return &scriptedBackend{sc: sc}
		}),
		gomilter.WithActions(actions),
		gomilter.WithProtocols(protocol),
	}
	for st, names := range o.macros {
		opts = append(opts, gomilter.WithMacroRequest(st, names))
	}
	srv := gomilter.NewServer(opts...)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
	})
	sc.Addr = "inet:" + l.Addr().String()
	return sc
}

// Events returns the events recorded so far.
func (sc *scripted) Events() []mevent {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return slices.Clone(sc.events)
}

// Stages returns the stages of the events recorded so far, in order.
func (sc *scripted) Stages() []string {
	var out []string
	for _, e := range sc.Events() {
		out = append(out, e.Stage)
	}
	return out
}

// waitStage waits until the milter got an event of the stage (events after the
// SMTP reply, as abort and quit, arrive a little later).
func (sc *scripted) waitStage(t testing.TB, stage string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if slices.Contains(sc.Stages(), stage) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("the milter got no %s event; it got %v", stage, sc.Stages())
}

// first returns the first event of the stage.
func (sc *scripted) first(t testing.TB, stage string) mevent {
	t.Helper()
	for _, e := range sc.Events() {
		if e.Stage == stage {
			return e
		}
	}
	t.Fatalf("the milter got no %s event; it got %v", stage, sc.Stages())
	return mevent{}
}

// scriptedBackend is one milter connection of a scripted milter.
type scriptedBackend struct{ sc *scripted }

func (b *scriptedBackend) event(m gomilter.Modifier, stage string, args ...string) (*gomilter.Response, error) {
	if b.sc.quiet {
		return gomilter.RespContinue, nil
	}
	ev := mevent{Stage: stage, Args: args, Macros: map[string]string{}}
	for _, name := range macroNames {
		if v, ok := m.GetEx(name); ok {
			ev.Macros[name] = v
		}
	}
	b.sc.mu.Lock()
	b.sc.events = append(b.sc.events, ev)
	a := b.sc.answers[stage]
	b.sc.mu.Unlock()
	if a == nil {
		return gomilter.RespContinue, nil
	}
	return a(m, ev)
}

func (b *scriptedBackend) NewConnection(gomilter.Modifier) error { return nil }

func (b *scriptedBackend) Connect(host, family string, port uint16, addr string, m gomilter.Modifier) (*gomilter.Response, error) {
	return b.event(m, "connect", host, family, strconv.Itoa(int(port)), addr)
}

func (b *scriptedBackend) Helo(name string, m gomilter.Modifier) (*gomilter.Response, error) {
	return b.event(m, "helo", name)
}

func (b *scriptedBackend) MailFrom(from, args string, m gomilter.Modifier) (*gomilter.Response, error) {
	return b.event(m, "mail", from, args)
}

func (b *scriptedBackend) RcptTo(to, args string, m gomilter.Modifier) (*gomilter.Response, error) {
	return b.event(m, "rcpt", to, args)
}

func (b *scriptedBackend) Data(m gomilter.Modifier) (*gomilter.Response, error) {
	return b.event(m, "data")
}

func (b *scriptedBackend) Header(name, value string, m gomilter.Modifier) (*gomilter.Response, error) {
	return b.event(m, "header", name, value)
}

func (b *scriptedBackend) Headers(m gomilter.Modifier) (*gomilter.Response, error) {
	return b.event(m, "eoh")
}

func (b *scriptedBackend) BodyChunk(chunk []byte, m gomilter.Modifier) (*gomilter.Response, error) {
	return b.event(m, "body", string(chunk))
}

func (b *scriptedBackend) EndOfMessage(m gomilter.Modifier) (*gomilter.Response, error) {
	return b.event(m, "eom")
}

func (b *scriptedBackend) Abort(m gomilter.Modifier) error {
	b.event(m, "abort")
	return nil
}

func (b *scriptedBackend) Unknown(cmd string, m gomilter.Modifier) (*gomilter.Response, error) {
	return b.event(m, "unknown", cmd)
}

func (b *scriptedBackend) Cleanup(m gomilter.Modifier) {
	b.sc.mu.Lock()
	b.sc.events = append(b.sc.events, mevent{Stage: "quit"})
	b.sc.mu.Unlock()
}

// respond answers every event of a stage with r.
func respond(r *gomilter.Response) answer {
	return func(gomilter.Modifier, mevent) (*gomilter.Response, error) { return r, nil }
}

// custom answers with a reply of the milter's own.
func custom(code uint16, text string) answer {
	return func(gomilter.Modifier, mevent) (*gomilter.Response, error) {
		return gomilter.RejectWithCodeAndReason(code, text)
	}
}

// milterServer starts an SMTP server whose handler h is wrapped with the milters
// (timeouts short, for the tests), with enhanced status codes on and XCLIENT
// trusted from loopback.
func milterServer(t testing.TB, h smtpd.Handler, cfg milter.Config, opts ...func(*smtpd.Server)) *smtptest.Server {
	t.Helper()
	for i := range cfg.Milters {
		m := &cfg.Milters[i]
		if m.ConnectTimeout == 0 {
			m.ConnectTimeout = 5 * time.Second
		}
		if m.CommandTimeout == 0 {
			m.CommandTimeout = 5 * time.Second
		}
		if m.EOMTimeout == 0 {
			m.EOMTimeout = 5 * time.Second
		}
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.test"
	}
	base := func(s *smtpd.Server) {
		s.EnhancedStatusCodes = true
	}
	return smtptest.NewServer(t, milter.Wrap(h, cfg), append([]func(*smtpd.Server){base}, opts...)...)
}

// milters is a Config for the scripted milters, in order.
func milters(ms ...*scripted) milter.Config {
	var c milter.Config
	for _, m := range ms {
		c.Milters = append(c.Milters, milter.Milter{Addr: m.Addr})
	}
	return c
}

// greeted dials the server and greets it with EHLO.
func greeted(t testing.TB, ts *smtptest.Server) *smtptest.Conn {
	t.Helper()
	c := ts.Dial(t)
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	return c
}

// inTransaction dials the server and begins a transaction from a@example.org to
// b@example.net.
func inTransaction(t testing.TB, ts *smtptest.Server) *smtptest.Conn {
	t.Helper()
	c := greeted(t, ts)
	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.net>", 250)
	return c
}
