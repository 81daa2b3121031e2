package interop

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// postfixTraceEntry is a protocol line of the server's Debug trace.
type postfixTraceEntry struct {
	Session string
	Dir     string // "recv" or "send"
	Line    string // as sent or received (a multi-line reply: its lines joined by CRLF)
}

// postfixTrace keeps the server's log: the trace entries and every record as text.
type postfixTrace struct {
	mu      sync.Mutex
	entries []postfixTraceEntry
	text    strings.Builder
}

// postfixLogHandler is the slog.Handler that feeds a postfixTrace.
type postfixLogHandler struct {
	tr    *postfixTrace
	attrs []slog.Attr
}

func (h *postfixLogHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *postfixLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &postfixLogHandler{tr: h.tr, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *postfixLogHandler) WithGroup(string) slog.Handler { return h }

func (h *postfixLogHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	var session, line string
	b.WriteString(r.Level.String() + " " + r.Message)
	each := func(a slog.Attr) bool {
		switch a.Key {
		case "session":
			session = a.Value.String()
		case "line":
			line = a.Value.String()
		}
		fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		each(a)
	}
	r.Attrs(each)
	h.tr.mu.Lock()
	defer h.tr.mu.Unlock()
	h.tr.text.WriteString(b.String() + "\n")
	if r.Message == "recv" || r.Message == "send" {
		// The trace escapes the line as a Go string literal without its quotes
		// (and may add "... (N bytes)" when it cut it).
		if u, err := strconv.Unquote(`"` + line + `"`); err == nil {
			line = u
		}
		h.tr.entries = append(h.tr.entries, postfixTraceEntry{Session: session, Dir: r.Message, Line: line})
	}
	return nil
}

func (tr *postfixTrace) logger() *slog.Logger { return slog.New(&postfixLogHandler{tr: tr}) }

func (tr *postfixTrace) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.text.String()
}

func (tr *postfixTrace) all() []postfixTraceEntry {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.entries)
}

// received returns the received command lines whose verb is one of verbs.
func (tr *postfixTrace) received(verbs ...string) []string {
	var out []string
	for _, e := range tr.all() {
		if e.Dir != "recv" {
			continue
		}
		verb, _, _ := strings.Cut(e.Line, " ")
		if slices.ContainsFunc(verbs, func(v string) bool { return strings.EqualFold(v, verb) }) {
			out = append(out, e.Line)
		}
	}
	return out
}

// replyTo returns the first reply the server sent after the first received line
// starting with prefix, in the same session.
func (tr *postfixTrace) replyTo(t *testing.T, prefix string) string {
	t.Helper()
	entries := tr.all()
	for i, e := range entries {
		if e.Dir != "recv" || !strings.HasPrefix(strings.ToUpper(e.Line), strings.ToUpper(prefix)) {
			continue
		}
		for _, r := range entries[i+1:] {
			if r.Dir == "send" && r.Session == e.Session {
				return r.Line
			}
		}
	}
	require.Failf(t, "trace", "no reply to %q in the trace:\n%s", prefix, tr.String())
	return ""
}

// postfixParam returns the value of an ESMTP parameter of a MAIL or RCPT line.
func postfixParam(line, key string) (string, bool) {
	for _, f := range strings.Fields(line)[2:] {
		if k, v, ok := strings.Cut(f, "="); ok && strings.EqualFold(k, key) {
			return v, true
		}
	}
	return "", false
}

// postfixMessage is what postfixHandler stored of one message.
type postfixMessage struct {
	Envelope smtpd.Envelope
	Data     string
}

// postfixHandler records every message with its whole Envelope, counts OnDataStart,
// and (LMTP) refuses each recipient whose local part is "bad".
type postfixHandler struct {
	smtpd.BaseHandler
	mu         sync.Mutex
	dataStarts int
	msgs       []postfixMessage
}

func (h *postfixHandler) OnDataStart(*smtpd.Session) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dataStarts++
	return nil
}

func (h *postfixHandler) OnMessage(s *smtpd.Session) error {
	env := s.Envelope
	env.To = slices.Clone(env.To)
	env.DSNRecipients = slices.Clone(env.DSNRecipients)
	for i := range env.DSNRecipients {
		env.DSNRecipients[i].Notify = slices.Clone(env.DSNRecipients[i].Notify)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, postfixMessage{Envelope: env, Data: string(s.Message.Data)})
	return nil
}

// OnMessageRecipient is RecipientHandler's hook (LMTP).
func (h *postfixHandler) OnMessageRecipient(_ *smtpd.Session, rcpt string) error {
	if strings.HasPrefix(rcpt, "bad@") {
		return &smtpd.SMTPError{Code: 550, EnhancedCode: "5.1.1", Message: "no such user"}
	}
	return nil
}

var _ smtpd.RecipientHandler = (*postfixHandler)(nil)

func (h *postfixHandler) messages() []postfixMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.msgs)
}

func (h *postfixHandler) starts() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dataStarts
}

// postfixServe serves a postfixHandler with a trace as its logger on a fresh
// loopback port (smtptest.NewServer), the options set by opts, and returns them
// and the port.
func postfixServe(t *testing.T, opts func(*smtpd.Server)) (*postfixHandler, *postfixTrace, int) {
	t.Helper()
	h := &postfixHandler{}
	tr := &postfixTrace{}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) {
		opts(s)
		s.Logger = tr.logger()
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", tr.String())
		}
	})
	_, port, err := net.SplitHostPort(ts.Addr)
	require.NoError(t, err)
	n, err := strconv.Atoi(port)
	require.NoError(t, err)
	return h, tr, n
}

// postfixBody returns a message (LF line ends, as sendmail reads it) with its own
// Message-Id and Date, so that Postfix adds a Received header only, and a body of
// about size bytes: lines of many lengths (up to 990 octets, under Postfix's
// smtp_line_length_limit), lines that need dot-stuffing, a lone dot, white space.
func postfixBody(id string, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Sender <sender@sender.test>\n"+
		"To: rcpt@x.test\n"+
		"Subject: Postfix delivers %s\n"+
		"Message-Id: <%s@sender.test>\n"+
		"Date: Mon, 01 Jan 2024 00:00:00 +0000\n"+
		"X-Folded: a header\n\tfolded once\n"+
		"\n"+
		"first line\n"+
		".leading dot\n"+
		"..two dots\n"+
		".\n"+
		"\n"+
		"   leading spaces, trailing spaces   \n"+
		"\ttab\t\n"+
		"From the start of a line\n", id, id)
	for i := 0; b.Len() < size; i++ {
		n := (i * 37) % 991
		fmt.Fprintf(&b, "%s\n", strings.Repeat(string(rune('a'+i%26)), n))
		if i%50 == 0 {
			b.WriteString(".dot line " + strconv.Itoa(i) + "\n")
		}
	}
	b.WriteString("last line\n")
	return b.String()
}

// postfixCRLF turns LF line ends into CRLF: the message as it must be stored.
func postfixCRLF(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// postfixStripReceived cuts the one header Postfix prepends, Received: with its
// continuation lines, and returns it and the rest.
func postfixStripReceived(t *testing.T, data string) (string, string) {
	t.Helper()
	require.True(t, strings.HasPrefix(data, "Received: "), "the message does not start with Postfix's Received header: %q", data[:min(len(data), 200)])
	i := 0
	for {
		j := strings.Index(data[i:], "\r\n")
		require.GreaterOrEqual(t, j, 0, "unended header")
		i += j + 2
		if i >= len(data) || (data[i] != ' ' && data[i] != '\t') {
			return data[:i], data[i:]
		}
	}
}

// postfixOnlyMessage waits until the handler has one message and returns it.
func postfixOnlyMessage(t *testing.T, h *postfixHandler) postfixMessage {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second) // it is stored before the reply Postfix logs
	for len(h.messages()) == 0 {
		require.True(t, time.Now().Before(deadline), "no message reached the handler")
		time.Sleep(10 * time.Millisecond)
	}
	msgs := h.messages()
	require.Len(t, msgs, 1)
	return msgs[0]
}
