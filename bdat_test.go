package smtpd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BDAT (RFC 3030 CHUNKING): the twins of smuggling_test.go for counted chunks —
// whatever a chunk's octets hold, they are message data and never commands: accepted,
// refused, with CHUNKING off, cut into any TCP writes, pipelined or not — and the
// protocol of BDAT itself (replies, data hooks, CRLF modes, BINARYMIME, errors).

const (
	bdatSender    = "sender@example.org"
	bdatRecipient = "rcpt@example.org"
	bdatTextFinal = "Requested mail action okay, completed"
	bdatTextCRLF  = "Bad input, Lines must be terminated by CRLF sequence"
	bdatTextNoCh  = "Command not implemented"
	bdatTextSize  = "Syntax error, BDAT needs a size and an optional LAST, closing transmission channel"
	// bdatEvil is what a smuggler hides behind a fake end of data: a second
	// transaction, and a QUIT that would end the session if it ran.
	bdatEvil = "MAIL FROM:<evil@x>\r\nRCPT TO:<v@x>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n"
	bdatHead = "Subject: one\r\n\r\nfirst"
)

// bdatFakes are the fake ends of data a chunk may hold: the real DATA terminator
// first (a chunk has none), then smuggling_test.go's bare-CR/LF variants.
var bdatFakes = []string{"\r\n.\r\n", "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r\n.\r\r\n"}

// bdatPayload is a chunk's octets with fake after its first line.
func bdatPayload(fake string) string { return bdatHead + fake + bdatEvil + "last\r\n" }

// bdatMsg is a message as OnMessage saw it.
type bdatMsg struct {
	From string
	To   []string
	Data string
	Nil  bool // Message.Data was nil
	Body string
	Size int
	Env  Envelope
}

// bdatHandler records, per HELO name (so parallel subtests can share a server), the
// messages and the data-hook events; its hooks can be replaced per test. OnAuth
// accepts authUser/authPass only.
type bdatHandler struct {
	BaseHandler
	mu     sync.Mutex
	msgs   map[string][]bdatMsg
	events map[string][]string

	mail      func(s *Session, from string) (string, error)
	rcpt      func(s *Session, to string) (string, error)
	dataStart func(s *Session) error
	dataRecv  func(s *Session) error
	dataHdrs  func(s *Session) error
	message   func(s *Session) error
}

// bdatQuote quotes the message so far for an event; a big one only by its size
// (quoting it at every line would be quadratic).
func bdatQuote(data []byte) string {
	if len(data) > 512 {
		return fmt.Sprintf("<%d bytes>", len(data))
	}
	return strconv.Quote(string(data))
}

func newBdatHandler() *bdatHandler {
	return &bdatHandler{msgs: map[string][]bdatMsg{}, events: map[string][]string{}}
}

func (h *bdatHandler) event(s *Session, e string) {
	h.mu.Lock()
	h.events[s.Helo] = append(h.events[s.Helo], e)
	h.mu.Unlock()
}

func (h *bdatHandler) OnAuth(_ *Session, _, authc, pass string) (string, error) {
	if authc == authUser && pass == authPass {
		return "", nil
	}
	return "", SMTPError535
}

func (h *bdatHandler) OnMailFrom(s *Session, from string) (string, error) {
	if h.mail != nil {
		return h.mail(s, from)
	}
	return "", nil
}

func (h *bdatHandler) OnRcptTo(s *Session, to string) (string, error) {
	if h.rcpt != nil {
		return h.rcpt(s, to)
	}
	return "", nil
}

func (h *bdatHandler) OnDataStart(s *Session) error {
	h.event(s, "start "+bdatQuote(s.Message.Data))
	if h.dataStart != nil {
		return h.dataStart(s)
	}
	return nil
}

func (h *bdatHandler) OnDataReceiving(s *Session) error {
	h.event(s, "line "+bdatQuote(s.Message.Data))
	if h.dataRecv != nil {
		return h.dataRecv(s)
	}
	return nil
}

func (h *bdatHandler) OnDataHeaders(s *Session) error {
	h.event(s, "headers "+bdatQuote(s.Message.Data))
	if h.dataHdrs != nil {
		return h.dataHdrs(s)
	}
	return nil
}

func (h *bdatHandler) OnMessage(s *Session) error {
	h.event(s, "message")
	if h.message != nil {
		if err := h.message(s); err != nil {
			return err
		}
	}
	m := bdatMsg{From: s.Envelope.From, To: append([]string(nil), s.Envelope.To...), Data: string(s.Message.Data),
		Nil: s.Message.Data == nil, Body: s.Envelope.EncodingBody, Size: s.Envelope.Size, Env: s.Envelope}
	h.mu.Lock()
	h.msgs[s.Helo] = append(h.msgs[s.Helo], m)
	h.mu.Unlock()
	return nil
}

func (h *bdatHandler) OnDisconnect(s *Session) { h.event(s, "disconnect") }

// take returns and forgets the messages of the session greeted with helo.
func (h *bdatHandler) take(helo string) []bdatMsg {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.msgs[helo]
	delete(h.msgs, helo)
	return m
}

// eventsOf returns the hook events of the session greeted with helo.
func (h *bdatHandler) eventsOf(helo string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events[helo]...)
}

// bdatWaitEvent waits until the session greeted with helo has had event e.
func (h *bdatHandler) waitEvent(t *testing.T, helo, e string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, got := range h.eventsOf(helo) {
			if got == e {
				return
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	require.Failf(t, "event", "session %s never had %q (events %q)", helo, e, h.eventsOf(helo))
}

// bdatCmd is a BDAT command line for a chunk of n octets.
func bdatCmd(n int, last bool) string {
	if last {
		return "BDAT " + strconv.Itoa(n) + " LAST\r\n"
	}
	return "BDAT " + strconv.Itoa(n) + "\r\n"
}

// bdatChunks renders chunks as BDAT commands and their octets, the last one LAST.
func bdatChunks(chunks ...string) string {
	var b strings.Builder
	for i, c := range chunks {
		b.WriteString(bdatCmd(len(c), i == len(chunks)-1))
		b.WriteString(c)
	}
	return b.String()
}

// bdatReply is a reply as the client reads it.
type bdatReply struct {
	Code int
	Text string
}

func (r bdatReply) String() string { return strconv.Itoa(r.Code) + " " + r.Text }

// bdatReplyOf reads one reply.
func (c *client) bdatReplyOf() bdatReply {
	c.t.Helper()
	code, text := c.reply()
	return bdatReply{code, text}
}

// bdatWrite writes pieces one by one with a gap between them, so that the server
// reads them apart (the test client's connection has TCP_NODELAY, Go's default).
func (c *client) bdatWrite(pieces []string) {
	c.t.Helper()
	require.NoError(c.t, c.bdatWriteErr(pieces))
}

// bdatWriteErr is bdatWrite for a server that may close the connection meanwhile:
// it returns the first write error.
func (c *client) bdatWriteErr(pieces []string) error {
	gap := 300 * time.Microsecond
	if len(pieces) > 20 {
		gap = 50 * time.Microsecond
	}
	for i, p := range pieces {
		if i > 0 {
			bdatPause(gap)
		}
		c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.conn.Write([]byte(p)); err != nil {
			return err
		}
	}
	return nil
}

// bdatPause waits d, yielding: time.Sleep sleeps at least about a millisecond,
// which would make byte-by-byte writes slow.
func bdatPause(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
		runtime.Gosched()
	}
}

// bdatQuiet checks that nothing arrives from the server for d.
func (c *client) bdatQuiet(d time.Duration) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	b, err := c.r.Peek(1)
	var ne net.Error
	require.True(c.t, errors.As(err, &ne) && ne.Timeout(), "expected silence, read %q (err %v)", b, err)
}

// bdatInSync checks that the session is in sync and executed nothing of what it
// should not have: NOOP's 250 OK is the very next reply, then QUIT's 221, then
// the connection closes.
func (c *client) bdatInSync() {
	c.t.Helper()
	c.send("NOOP\r\n")
	require.Equal(c.t, bdatReply{250, "OK"}, c.bdatReplyOf(), "NOOP's reply must be the next one")
	c.send("QUIT\r\n")
	require.Equal(c.t, 221, c.bdatReplyOf().Code, "QUIT's reply must be the next one")
	c.expectClosed()
}

// bdatEnsureRef is the reference of CRLFEnsure on a whole octet string: a bare LF
// becomes CRLF, every other byte (a bare CR too) is kept.
func bdatEnsureRef(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' && (i == 0 || s[i-1] != '\r') {
			b.WriteByte('\r')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// bdatStrictChunk is the index of the chunk whose reply refuses the message under
// CRLFStrict: the one in which the first bare CR or LF becomes known (a CR at the
// end of a chunk is known to be bare only at the next byte, or at the LAST end);
// -1 when there is none.
func bdatStrictChunk(chunks []string) int {
	first := -1
	all := strings.Join(chunks, "")
	chunkOf := func(pos int) int {
		n := 0
		for i, c := range chunks {
			n += len(c)
			if pos < n {
				return i
			}
		}
		return len(chunks) - 1
	}
	for i := 0; i < len(all); i++ {
		at := -1
		switch {
		case all[i] == '\n' && (i == 0 || all[i-1] != '\r'):
			at = chunkOf(i)
		case all[i] == '\r' && (i+1 == len(all) || all[i+1] != '\n'):
			at = chunkOf(i + 1)
		}
		if at >= 0 && (first < 0 || at < first) {
			first = at
		}
	}
	return first
}

// bdatWantReplies is what the chunks of one message get: "<n> octets received" for
// each but the last, the final reply for the LAST one; under CRLFStrict the chunk
// that shows a bare line end gets 500 and the later ones 503.
func bdatWantReplies(chunks []string, mode CRLFMode) []bdatReply {
	bad := -1
	if mode == CRLFStrict {
		bad = bdatStrictChunk(chunks)
	}
	var out []bdatReply
	for i, c := range chunks {
		switch {
		case bad >= 0 && i == bad:
			out = append(out, bdatReply{500, bdatTextCRLF})
		case bad >= 0 && i > bad:
			out = append(out, bdatReply{503, protoText503})
		case i == len(chunks)-1:
			out = append(out, bdatReply{250, bdatTextFinal})
		default:
			out = append(out, bdatReply{250, strconv.Itoa(len(c)) + " octets received"})
		}
	}
	return out
}

// bdatSplit is a way of cutting what the client sends into TCP writes.
type bdatSplit struct {
	name string
	cut  func(s string, fakeAt int) []string
}

var bdatSplits = []bdatSplit{
	{"one write", func(s string, _ int) []string { return []string{s} }},
	{"byte by byte", func(s string, _ int) []string { return bdatPieces(s, 1) }},
	{"pieces of 7", func(s string, _ int) []string { return bdatPieces(s, 7) }},
	{"pieces of 13", func(s string, _ int) []string { return bdatPieces(s, 13) }},
	{"cut around the fake", func(s string, at int) []string { return smugCut(s, at, at+1, at+3) }},
}

// bdatPieces cuts s into pieces of n bytes.
func bdatPieces(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

// bdatHelo is a HELO name unique in the test binary.
func bdatHelo() string { return "bdat-" + smugHelo() }

// bdatServe serves a Server with CHUNKING on (unless off is set by mut).
func bdatServe(t *testing.T, h Handler, mut func(*Server)) (string, *Server) {
	t.Helper()
	srv := &Server{Handler: h, Chunking: true}
	if mut != nil {
		mut(srv)
	}
	return serve(t, srv), srv
}

// bdatTableLine logs one row of the BDAT smuggling table.
func bdatTableLine(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("BDAT smuggling table: %s → %s", t.Name(), fmt.Sprintf(format, args...))
}

// TestBdatSmugglingAccepted is the twin of TestSmuggling: a chunk holding a fake end
// of data (the real DATA terminator among them) and a whole second transaction is
// data, in every CRLF mode, pipelined or not, however it is cut into TCP writes and
// into chunks: one message, byte-exact, and nothing executed.
func TestBdatSmugglingAccepted(t *testing.T) {
	for _, mode := range smugModes {
		for _, pipelining := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/pipelining=%v", mode, pipelining), func(t *testing.T) {
				t.Parallel()
				h := newBdatHandler()
				addr, _ := bdatServe(t, h, func(s *Server) { s.CRLFMode = mode; s.Pipelining = pipelining })
				for _, fake := range bdatFakes {
					payload := bdatPayload(fake)
					k := len(bdatHead)
					chunkings := map[string][]string{
						"one chunk":                {payload},
						"two chunks at the fake":   {payload[:k], payload[k:]},
						"two chunks inside fake":   {payload[:k+1], payload[k+1:]},
						"chunk boundary after CR":  {payload[:k+len(fake)-1], payload[k+len(fake)-1:]},
						"three chunks, empty last": {payload[:k+2], payload[k+2:], ""},
					}
					for cname, chunks := range chunkings {
						for _, sp := range bdatSplits {
							if sp.name == "byte by byte" && fake != bdatFakes[0] && fake != bdatFakes[1] {
								continue // byte by byte is slow: the first two fakes are enough
							}
							name := fmt.Sprintf("fake=%q/%s/%s", fake, cname, sp.name)
							t.Run(name, func(t *testing.T) {
								bdatAcceptedCase(t, h, addr, mode, pipelining, chunks, sp)
							})
						}
					}
				}
			})
		}
	}
}

// bdatAcceptedCase runs one transaction of TestBdatSmugglingAccepted.
func bdatAcceptedCase(t *testing.T, h *bdatHandler, addr string, mode CRLFMode, pipelining bool, chunks []string, sp bdatSplit) {
	helo := bdatHelo()
	c := dialGreeted(t, addr)
	c.cmd("EHLO "+helo, 250)
	raw := bdatChunks(chunks...)
	envelope := "MAIL FROM:<" + bdatSender + ">\r\nRCPT TO:<" + bdatRecipient + ">\r\n"
	if pipelining {
		raw = envelope + raw
	} else {
		c.cmd("MAIL FROM:<"+bdatSender+">", 250)
		c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
	}
	fakeAt := strings.Index(raw, bdatHead) + len(bdatHead)
	c.bdatWrite(sp.cut(raw, fakeAt))
	if pipelining {
		c.expect(250)
		c.expect(250)
	}
	var got []bdatReply
	for range chunks {
		got = append(got, c.bdatReplyOf())
	}
	want := bdatWantReplies(chunks, mode)
	require.Equal(t, want, got, "the replies to the chunks")
	c.bdatInSync()
	msgs := h.take(helo)
	payload := strings.Join(chunks, "")
	if want[len(want)-1].Code != 250 {
		require.Empty(t, msgs, "nothing delivered")
		bdatTableLine(t, "%v, nothing delivered, nothing executed (NOOP next)", got)
		return
	}
	require.Len(t, msgs, 1, "exactly one message")
	stored := payload
	if mode == CRLFEnsure {
		stored = bdatEnsureRef(payload)
	}
	require.Equal(t, stored, msgs[0].Data, "Message.Data byte-exact")
	require.Equal(t, bdatSender, msgs[0].From)
	require.Equal(t, []string{bdatRecipient}, msgs[0].To, "the smuggled RCPT is data")
	require.Contains(t, msgs[0].Data, "MAIL FROM:<evil@x>")
	bdatTableLine(t, "%v, one message (the evil transaction is data), nothing executed (NOOP next)", got)
}

// bdatRefusal is a case of TestBdatSmugglingRefused: the chunk (the smuggling
// payload with the real DATA terminator) is refused, its octets read and discarded.
type bdatRefusal struct {
	name    string
	srv     func(s *Server)
	handler func(h *bdatHandler)
	pre     []bdatStep // commands after EHLO, pipelined with the BDAT when pipelining
	line    string     // the BDAT command line ("%d": the payload's size), CRLF added unless it ends with "\n"
	code    int
	text    string
	closes  bool // the reply closes the connection (a size that does not parse)
}

type bdatStep struct {
	line string
	code int
}

var bdatEnvelopeSteps = []bdatStep{{"MAIL FROM:<" + bdatSender + ">", 250}, {"RCPT TO:<" + bdatRecipient + ">", 250}}

var bdatRefusals = []bdatRefusal{
	{name: "CHUNKING off", srv: func(s *Server) { s.Chunking = false }, pre: bdatEnvelopeSteps,
		line: "BDAT %d LAST", code: 502, text: bdatTextNoCh},
	{name: "CHUNKING off, not LAST", srv: func(s *Server) { s.Chunking = false }, pre: bdatEnvelopeSteps,
		line: "BDAT %d", code: 502, text: bdatTextNoCh},
	{name: "CHUNKING off, no transaction", srv: func(s *Server) { s.Chunking = false },
		line: "BDAT %d LAST", code: 502, text: bdatTextNoCh},
	{name: "before MAIL", line: "BDAT %d LAST", code: 503, text: protoText503},
	{name: "before RCPT", pre: bdatEnvelopeSteps[:1], line: "BDAT %d LAST", code: 503, text: protoText503},
	{name: "RCPT refused by its hook", handler: func(h *bdatHandler) {
		h.rcpt = func(*Session, string) (string, error) { return "", SMTPError550 }
	}, pre: []bdatStep{bdatEnvelopeSteps[0], {bdatEnvelopeSteps[1].line, 550}}, line: "BDAT %d LAST", code: 503, text: protoText503},
	{name: "530 AuthRequired (de-authenticated at RCPT)", srv: func(s *Server) { s.AuthMode = AuthRequired },
		handler: func(h *bdatHandler) {
			h.rcpt = func(s *Session, _ string) (string, error) { s.AuthenticatedAt = time.Time{}; return "", nil }
		},
		pre:  append([]bdatStep{{"AUTH PLAIN " + plainResp("", authUser, authPass), 235}}, bdatEnvelopeSteps...),
		line: "BDAT %d LAST", code: 530, text: protoText530Auth},
	{name: "AuthRequired, not authenticated (MAIL 530, so BDAT 503)", srv: func(s *Server) { s.AuthMode = AuthRequired },
		pre: []bdatStep{{bdatEnvelopeSteps[0].line, 530}}, line: "BDAT %d LAST", code: 503, text: protoText503},
	{name: "530 TLSRequired before STARTTLS", srv: func(s *Server) { s.TLSMode = TLSRequired },
		line: "BDAT %d LAST", code: 530, text: protoText530TLS},
	{name: "552 chunk over MaxMessageSize", srv: func(s *Server) { s.MaxMessageSize = 64 }, pre: bdatEnvelopeSteps,
		line: "BDAT %d LAST", code: 552, text: protoText552},
	{name: "552 chunk over MaxMessageSize, not LAST", srv: func(s *Server) { s.MaxMessageSize = 64 }, pre: bdatEnvelopeSteps,
		line: "BDAT %d", code: 552, text: protoText552},
	{name: "OnDataStart refuses", handler: func(h *bdatHandler) { h.dataStart = func(*Session) error { return SMTPError554 } },
		pre: bdatEnvelopeSteps, line: "BDAT %d LAST", code: 554, text: "Transaction failed"},
	{name: "OnDataHeaders refuses, not LAST", handler: func(h *bdatHandler) { h.dataHdrs = func(*Session) error { return SMTPError554 } },
		pre: bdatEnvelopeSteps, line: "BDAT %d", code: 554, text: "Transaction failed"},
	{name: "OnMessage refuses", handler: func(h *bdatHandler) { h.message = func(*Session) error { return SMTPError550 } },
		pre: bdatEnvelopeSteps, line: "BDAT %d LAST", code: 550, text: "Requested action not taken: mailbox unavailable"},
	{name: "BDAT line with a bare LF (CRLFStrict)", srv: func(s *Server) { s.CRLFMode = CRLFStrict }, pre: bdatEnvelopeSteps,
		line: "BDAT %d LAST\n", code: 500, text: bdatTextCRLF},
	{name: "size x", pre: bdatEnvelopeSteps, line: "BDAT x", code: 501, text: bdatTextSize, closes: true},
	{name: "size -1", pre: bdatEnvelopeSteps, line: "BDAT -1", code: 501, text: bdatTextSize, closes: true},
	{name: "size +5", pre: bdatEnvelopeSteps, line: "BDAT +5", code: 501, text: bdatTextSize, closes: true},
	{name: "size 0x10", pre: bdatEnvelopeSteps, line: "BDAT 0x10", code: 501, text: bdatTextSize, closes: true},
	{name: "LASTX", pre: bdatEnvelopeSteps, line: "BDAT 1 LASTX", code: 501, text: bdatTextSize, closes: true},
	{name: "LAST twice", pre: bdatEnvelopeSteps, line: "BDAT 1 LAST LAST", code: 501, text: bdatTextSize, closes: true},
	{name: "LAST with a Unicode long s", pre: bdatEnvelopeSteps, line: "BDAT %d LA\u017fT", code: 501, text: bdatTextSize, closes: true},
	{name: "no size", pre: bdatEnvelopeSteps, line: "BDAT", code: 501, text: bdatTextSize, closes: true},
	{name: "size 99999999999999999999", pre: bdatEnvelopeSteps, line: "BDAT 99999999999999999999", code: 501, text: bdatTextSize, closes: true},
	{name: "size 1000000000000000000 (19 digits)", pre: bdatEnvelopeSteps, line: "BDAT 1000000000000000000 LAST", code: 501, text: bdatTextSize, closes: true},
	{name: "size x, CHUNKING off", srv: func(s *Server) { s.Chunking = false }, pre: bdatEnvelopeSteps,
		line: "BDAT x", code: 501, text: bdatTextSize, closes: true},
}

// TestBdatSmugglingRefused: a refused BDAT (CHUNKING off, out of sequence, AUTH or
// TLS required, over MaxMessageSize, a hook's error, a bad command line) still has
// its announced octets read and discarded: the smuggled transaction behind the fake
// terminator never runs, the next real command gets exactly one reply, and no
// message ever appears. A size that does not parse cannot be resynchronised: 501 and
// the connection closes, nothing after it executed.
func TestBdatSmugglingRefused(t *testing.T) {
	for _, mode := range smugModes {
		for _, pipelining := range []bool{false, true} {
			for _, rc := range bdatRefusals {
				t.Run(fmt.Sprintf("%v/pipelining=%v/%s", mode, pipelining, rc.name), func(t *testing.T) {
					if strings.HasSuffix(rc.line, "\n") && mode != CRLFStrict {
						t.Skip("a bare LF ends a command line outside CRLFStrict")
					}
					t.Parallel()
					h := newBdatHandler()
					if rc.handler != nil {
						rc.handler(h)
					}
					addr, _ := bdatServe(t, h, func(s *Server) {
						s.CRLFMode, s.Pipelining = mode, pipelining
						if rc.srv != nil {
							rc.srv(s)
						}
					})
					for _, sp := range bdatSplits {
						if sp.name == "pieces of 13" {
							continue
						}
						t.Run(sp.name, func(t *testing.T) { bdatRefusedCase(t, h, addr, pipelining, rc, sp) })
					}
				})
			}
		}
	}
}

// bdatRefusedCase runs one session of TestBdatSmugglingRefused.
func bdatRefusedCase(t *testing.T, h *bdatHandler, addr string, pipelining bool, rc bdatRefusal, sp bdatSplit) {
	payload := bdatPayload("\r\n.\r\n")
	helo := bdatHelo()
	c := dialGreeted(t, addr)
	c.cmd("EHLO "+helo, 250)
	line := rc.line
	if strings.Contains(line, "%d") {
		line = fmt.Sprintf(line, len(payload))
	}
	if !strings.HasSuffix(line, "\n") {
		line += "\r\n"
	}
	raw := line + payload
	if pipelining {
		var pre strings.Builder
		for _, st := range rc.pre {
			pre.WriteString(st.line + "\r\n")
		}
		raw = pre.String() + raw
	} else {
		for _, st := range rc.pre {
			c.cmd(st.line, st.code)
		}
	}
	pieces := sp.cut(raw, strings.Index(raw, bdatHead)+len(bdatHead))
	if rc.closes {
		c.bdatWriteErr(pieces) // the server closes at the BDAT line: later writes may fail
	} else {
		c.bdatWrite(pieces)
	}
	if pipelining {
		for _, st := range rc.pre {
			c.expect(st.code)
		}
	}
	got := c.bdatReplyOf()
	require.Equal(t, bdatReply{rc.code, rc.text}, got)
	if rc.closes {
		c.expectClosed()
		require.Empty(t, h.take(helo))
		bdatTableLine(t, "%v and the connection closes; nothing after it executed, nothing delivered", got)
		return
	}
	c.bdatInSync()
	require.Empty(t, h.take(helo), "no message, not even the smuggled one")
	bdatTableLine(t, "%v, octets discarded, nothing executed (NOOP next), nothing delivered", got)
}

// TestBdatSmugglingLaterChunks: after a refused chunk the transaction is over: the
// following chunks (smuggling payloads too) get 503 with their octets discarded,
// RSET is 250 and a new transaction delivers exactly its own message.
func TestBdatSmugglingLaterChunks(t *testing.T) {
	for _, mode := range smugModes {
		for _, pipelining := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/pipelining=%v", mode, pipelining), func(t *testing.T) {
				t.Parallel()
				h := newBdatHandler()
				addr, _ := bdatServe(t, h, func(s *Server) { s.CRLFMode, s.Pipelining, s.MaxMessageSize = mode, pipelining, 200 })
				helo := bdatHelo()
				c := dialGreeted(t, addr)
				c.cmd("EHLO "+helo, 250)
				payload := bdatPayload("\r\n.\r\n") // 126 octets
				raw := "MAIL FROM:<" + bdatSender + ">\r\nRCPT TO:<" + bdatRecipient + ">\r\n" +
					bdatCmd(len(payload), false) + payload + // 126: within 200
					bdatCmd(len(payload), false) + payload + // 252: over, 552
					bdatCmd(len(payload), false) + payload + // 503
					bdatCmd(len(payload), true) + payload // 503
				if !pipelining {
					c.cmd("MAIL FROM:<"+bdatSender+">", 250)
					c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
					raw = raw[strings.Index(raw, "BDAT"):]
				}
				c.bdatWrite(bdatPieces(raw, 61))
				if pipelining {
					c.expect(250)
					c.expect(250)
				}
				got := []bdatReply{c.bdatReplyOf(), c.bdatReplyOf(), c.bdatReplyOf(), c.bdatReplyOf()}
				require.Equal(t, []bdatReply{
					{250, fmt.Sprintf("%d octets received", len(payload))},
					{552, protoText552}, {503, protoText503}, {503, protoText503},
				}, got)
				c.cmd("RSET", 250)
				c.cmd("MAIL FROM:<"+bdatSender+">", 250)
				c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
				c.send(bdatChunks("fresh\r\n"))
				require.Equal(t, bdatReply{250, bdatTextFinal}, c.bdatReplyOf())
				c.bdatInSync()
				msgs := h.take(helo)
				require.Len(t, msgs, 1)
				require.Equal(t, "fresh\r\n", msgs[0].Data)
				bdatTableLine(t, "%v; RSET 250; next transaction delivers only its own message", got)
			})
		}
	}
}

// TestBdatSmugglingDisconnectMidChunk: the client leaves in the middle of a chunk
// holding a smuggling payload: no message is delivered, the session ends cleanly
// (OnDisconnect, its buffered data released) and the server serves the next client.
func TestBdatSmugglingDisconnectMidChunk(t *testing.T) {
	for _, mode := range smugModes {
		for _, pipelining := range []bool{false, true} {
			for _, last := range []bool{false, true} {
				t.Run(fmt.Sprintf("%v/pipelining=%v/last=%v", mode, pipelining, last), func(t *testing.T) {
					t.Parallel()
					h := newBdatHandler()
					addr, srv := bdatServe(t, h, func(s *Server) { s.CRLFMode, s.Pipelining = mode, pipelining })
					helo := bdatHelo()
					c := dialGreeted(t, addr)
					c.cmd("EHLO "+helo, 250)
					c.cmd("MAIL FROM:<"+bdatSender+">", 250)
					c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
					payload := bdatPayload("\r\n.\r\n")
					c.send(bdatCmd(4, false) + "ab\r\n")
					require.Equal(t, bdatReply{250, "4 octets received"}, c.bdatReplyOf())
					c.bdatWrite([]string{bdatCmd(len(payload)+100, last) + payload[:40], payload[40:]})
					c.bdatQuiet(50 * time.Millisecond) // the chunk is not complete: no reply
					c.conn.Close()
					h.waitEvent(t, helo, "disconnect")
					require.Empty(t, h.take(helo), "nothing delivered")
					require.NotContains(t, h.eventsOf(helo), "message")
					require.Zero(t, srv.buffered.used.Load(), "the session's buffered data was released")

					// The server is fine: the next client delivers.
					helo2 := bdatHelo()
					c2 := dialGreeted(t, addr)
					c2.cmd("EHLO "+helo2, 250)
					c2.cmd("MAIL FROM:<"+bdatSender+">", 250)
					c2.cmd("RCPT TO:<"+bdatRecipient+">", 250)
					c2.send(bdatChunks("after\r\n"))
					require.Equal(t, bdatReply{250, bdatTextFinal}, c2.bdatReplyOf())
					c2.bdatInSync()
					require.Len(t, h.take(helo2), 1)
					bdatTableLine(t, "no reply to the unfinished chunk; disconnect: nothing delivered, buffers released; next client delivers")
				})
			}
		}
	}
}

// TestBdatOverMaxMessageSizeAcrossChunks: chunks that together pass MaxMessageSize
// get 552 at the chunk that passes it, its octets read and discarded in bounded
// memory (nothing of them stored, the buffered-data budget given back); later chunks
// get 503 and the session stays in sync.
func TestBdatOverMaxMessageSizeAcrossChunks(t *testing.T) {
	const mib = 1 << 20
	var mu sync.Mutex
	peak := int64(0)
	h := newBdatHandler()
	// MaxBufferedData above what a 2 MiB message needs while its buffer grows (both
	// buffers count during a copy), far below what storing the refused octets would.
	srv := &Server{Handler: h, Chunking: true, MaxMessageSize: 2 * mib, MaxBufferedData: 5 * mib}
	h.dataRecv = func(s *Session) error {
		mu.Lock()
		peak = max(peak, srv.buffered.used.Load(), int64(cap(s.Message.Data)))
		mu.Unlock()
		return nil
	}
	addr := serve(t, srv)
	line := strings.Repeat("x", 1022) + "\r\n"
	chunk := strings.Repeat(line, mib/len(line)) // 1 MiB of whole lines
	require.Len(t, chunk, mib)

	for _, tc := range []struct {
		name   string
		chunks int
		want   []int
	}{
		{"4 chunks of 1 MiB, limit 2 MiB", 4, []int{250, 250, 552, 503}},
		{"3 chunks of 1 MiB, third LAST", 3, []int{250, 250, 552}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			helo := bdatHelo()
			c := dialGreeted(t, addr)
			c.cmd("EHLO "+helo, 250)
			c.cmd("MAIL FROM:<"+bdatSender+">", 250)
			c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
			done := make(chan struct{})
			go func() { // write while the replies are read
				defer close(done)
				for i := 0; i < tc.chunks; i++ {
					c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.conn.Write([]byte(bdatCmd(mib, i == tc.chunks-1) + chunk)); err != nil {
						return
					}
				}
			}()
			var got []int
			for range tc.want {
				got = append(got, c.bdatReplyOf().Code)
			}
			<-done
			require.Equal(t, tc.want, got)
			require.Zero(t, srv.buffered.used.Load(), "the refused message's buffer was given back")
			c.cmd("RSET", 250)
			c.cmd("MAIL FROM:<"+bdatSender+">", 250)
			c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
			c.send(bdatChunks("small\r\n"))
			require.Equal(t, bdatReply{250, bdatTextFinal}, c.bdatReplyOf())
			c.bdatInSync()
			msgs := h.take(helo)
			require.Len(t, msgs, 1, "only the small message")
			require.Equal(t, "small\r\n", msgs[0].Data)
		})
	}
	mu.Lock()
	defer mu.Unlock()
	require.LessOrEqual(t, peak, int64(5*mib), "memory held for a message stays near MaxMessageSize")
}

// TestBdatExpandingChunkOverMaxMessageSize: under CRLFEnsure a chunk of bare LFs
// grows when stored; a chunk whose announced size fits but whose stored size passes
// MaxMessageSize is refused with 552 at that chunk, and the session stays in sync.
func TestBdatExpandingChunkOverMaxMessageSize(t *testing.T) {
	h := newBdatHandler()
	addr, _ := bdatServe(t, h, func(s *Server) { s.MaxMessageSize = 30 })
	helo := bdatHelo()
	c := dialGreeted(t, addr)
	c.cmd("EHLO "+helo, 250)
	c.cmd("MAIL FROM:<"+bdatSender+">", 250)
	c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
	lf := strings.Repeat("\n", 20) // 20 octets, 40 stored
	c.send(bdatCmd(len(lf), false) + lf + bdatCmd(3, true) + "x\r\n")
	require.Equal(t, bdatReply{552, protoText552}, c.bdatReplyOf())
	require.Equal(t, bdatReply{503, protoText503}, c.bdatReplyOf())
	c.bdatInSync()
	require.Empty(t, h.take(helo))
}

// bdatTransaction greets, sends MAIL and RCPT and returns the client.
func bdatTransaction(t *testing.T, addr, helo string) *client {
	t.Helper()
	c := dialGreeted(t, addr)
	c.cmd("EHLO "+helo, 250)
	c.cmd("MAIL FROM:<"+bdatSender+">", 250)
	c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
	return c
}

// TestBdatChunks: the replies to chunks, and the message they make, byte-exact.
func TestBdatChunks(t *testing.T) {
	h := newBdatHandler()
	addr, _ := bdatServe(t, h, nil)
	tests := []struct {
		name   string
		chunks []string
	}{
		{"one LAST chunk", []string{"Subject: a\r\n\r\nbody\r\n"}},
		{"three chunks", []string{"Subject: a\r\n", "\r\nbo", "dy\r\n"}},
		{"chunks cut inside CRLF", []string{"Subject: a\r", "\n\r", "\nbody\r", "\n"}},
		{"zero-size chunks between", []string{"", "Subject: a\r\n\r\n", "", "body\r\n", ""}},
		{"no final line end", []string{"Subject: a\r\n\r\nbody"}},
		{"8-bit and NUL octets", []string{"a\x00b\xff\r\n", "\x80\r\n"}},
		{"stuffed-looking dots kept", []string{"..\r\n.\r\n", "..x\r\n"}},
		{"case of LAST", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			helo := bdatHelo()
			c := bdatTransaction(t, addr, helo)
			if tt.chunks == nil {
				c.send("bdat 3\r\nab\nbDaT 2 lAsT\r\ncd")
				require.Equal(t, bdatReply{250, "3 octets received"}, c.bdatReplyOf())
				require.Equal(t, bdatReply{250, bdatTextFinal}, c.bdatReplyOf())
				c.bdatInSync()
				require.Equal(t, "ab\r\ncd", h.take(helo)[0].Data)
				return
			}
			for i, ch := range tt.chunks {
				last := i == len(tt.chunks)-1
				c.send(bdatCmd(len(ch), last) + ch)
				if last {
					require.Equal(t, bdatReply{250, bdatTextFinal}, c.bdatReplyOf())
				} else {
					require.Equal(t, bdatReply{250, fmt.Sprintf("%d octets received", len(ch))}, c.bdatReplyOf())
				}
			}
			c.bdatInSync()
			msgs := h.take(helo)
			require.Len(t, msgs, 1)
			require.Equal(t, strings.Join(tt.chunks, ""), msgs[0].Data)
			require.Equal(t, bdatSender, msgs[0].From)
			require.Equal(t, []string{bdatRecipient}, msgs[0].To)
		})
	}
}

// TestBdatEmptyMessage: BDAT 0 LAST is an empty message: OnDataStart still runs
// (once), OnMessage gets empty Data.
func TestBdatEmptyMessage(t *testing.T) {
	for _, chunks := range [][]string{{"BDAT 0 LAST\r\n"}, {"BDAT 0\r\n", "BDAT 0 LAST\r\n"}} {
		t.Run(fmt.Sprintf("%q", chunks), func(t *testing.T) {
			h := newBdatHandler()
			addr, _ := bdatServe(t, h, nil)
			helo := bdatHelo()
			c := bdatTransaction(t, addr, helo)
			for i, ch := range chunks {
				c.send(ch)
				if i < len(chunks)-1 {
					require.Equal(t, bdatReply{250, "0 octets received"}, c.bdatReplyOf())
				}
			}
			require.Equal(t, bdatReply{250, bdatTextFinal}, c.bdatReplyOf())
			c.bdatInSync()
			msgs := h.take(helo)
			require.Len(t, msgs, 1)
			require.Empty(t, msgs[0].Data)
			require.Equal(t, []string{`start ""`, "message"}, h.eventsOf(helo)[:2])
		})
	}
}

// TestBdatDataHooks: the data hooks fire for BDAT as for DATA: OnDataStart once
// before anything is stored, OnDataHeaders at the empty line — also when that line's
// CR and LF arrive in different chunks — OnDataReceiving once per complete line,
// however the line is cut into chunks.
func TestBdatDataHooks(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		events []string
	}{
		{"one chunk", []string{"A: 1\r\nB: 2\r\n\r\nbody\r\n"}, []string{
			`start ""`, `line "A: 1\r\n"`, `line "A: 1\r\nB: 2\r\n"`, `headers "A: 1\r\nB: 2\r\n"`,
			`line "A: 1\r\nB: 2\r\n\r\n"`, `line "A: 1\r\nB: 2\r\n\r\nbody\r\n"`, "message"}},
		{"empty line cut between CR and LF", []string{"A: 1\r\n\r", "\nbody\r\n"}, []string{
			`start ""`, `line "A: 1\r\n"`, `headers "A: 1\r\n"`, `line "A: 1\r\n\r\n"`, `line "A: 1\r\n\r\nbody\r\n"`, "message"}},
		{"empty line alone in a chunk", []string{"A: 1\r\n", "\r\n", "body"}, []string{
			`start ""`, `line "A: 1\r\n"`, `headers "A: 1\r\n"`, `line "A: 1\r\n\r\n"`, "message"}},
		{"lines cut across chunks", []string{"A:", " 1\r", "\n", "\r", "\nbo", "dy\r\n"}, []string{
			`start ""`, `line "A: 1\r\n"`, `headers "A: 1\r\n"`, `line "A: 1\r\n\r\n"`, `line "A: 1\r\n\r\nbody\r\n"`, "message"}},
		{"bare LF empty line (ensure)", []string{"A: 1\n", "\n", "b\n"}, []string{
			`start ""`, `line "A: 1\r\n"`, `headers "A: 1\r\n"`, `line "A: 1\r\n\r\n"`, `line "A: 1\r\n\r\nb\r\n"`, "message"}},
		{"no empty line", []string{"A: 1\r\n", "B: 2\r\n"}, []string{
			`start ""`, `line "A: 1\r\n"`, `line "A: 1\r\nB: 2\r\n"`, "message"}},
		{"a CR before CRLF is no empty line", []string{"A: 1\r\n\r", "\r\nb\r\n"}, []string{
			`start ""`, `line "A: 1\r\n"`, `line "A: 1\r\n\r\r\n"`, `line "A: 1\r\n\r\r\nb\r\n"`, "message"}},
	}
	h := newBdatHandler()
	addr, _ := bdatServe(t, h, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			helo := bdatHelo()
			c := bdatTransaction(t, addr, helo)
			c.send(bdatChunks(tt.chunks...))
			for range tt.chunks {
				require.Equal(t, 250, c.bdatReplyOf().Code)
			}
			c.bdatInSync()
			require.Len(t, h.take(helo), 1)
			h.waitEvent(t, helo, "disconnect")
			events := h.eventsOf(helo)
			require.Equal(t, tt.events, events[:len(events)-1])
		})
	}
}

// TestBdatHeadersHookAppends: what OnDataHeaders appends lands before the empty line
// (README's hook table), also when the empty line's CR and LF arrive apart.
func TestBdatHeadersHookAppends(t *testing.T) {
	h := newBdatHandler()
	h.dataHdrs = func(s *Session) error {
		s.Message.Data = append(s.Message.Data, "X-Added: 1\r\n"...)
		return nil
	}
	addr, _ := bdatServe(t, h, nil)
	for _, chunks := range [][]string{
		{"A: 1\r\n\r\nbody\r\n"},
		{"A: 1\r\n", "\r\nbody\r\n"},
		{"A: 1\r\n\r", "\nbody\r\n"},
		{"A: 1\r", "\n\r", "\nbody\r\n"},
	} {
		t.Run(fmt.Sprintf("%q", chunks), func(t *testing.T) {
			helo := bdatHelo()
			c := bdatTransaction(t, addr, helo)
			c.send(bdatChunks(chunks...))
			for range chunks {
				require.Equal(t, 250, c.bdatReplyOf().Code)
			}
			c.bdatInSync()
			msgs := h.take(helo)
			require.Len(t, msgs, 1)
			require.Equal(t, "A: 1\r\nX-Added: 1\r\n\r\nbody\r\n", msgs[0].Data)
		})
	}
}

// TestBdatCRLFModes: the CRLF mode applies to BDAT data as to DATA's: CRLFEnsure
// turns a bare LF into CRLF and keeps a bare CR, CRLFLeave keeps every byte,
// CRLFStrict refuses the message with 500 at the chunk where a bare CR or LF shows
// (later chunks 503). A CRLF cut between two chunks is one line end.
func TestBdatCRLFModes(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		ensure string // "" with leave: as sent
	}{
		{"clean", []string{"a\r\nb\r\n"}, "a\r\nb\r\n"},
		{"CRLF split across chunks", []string{"abc\r", "\ndef\r\n"}, "abc\r\ndef\r\n"},
		{"CRLF split, three chunks", []string{"abc\r", "\n", "def\r\n"}, "abc\r\ndef\r\n"},
		{"bare LF", []string{"a\nb\r\n"}, "a\r\nb\r\n"},
		{"bare LF at chunk start", []string{"a", "\nb\r\n"}, "a\r\nb\r\n"},
		{"bare LF in a middle chunk", []string{"a\r\n", "b\nc", "\r\n"}, "a\r\nb\r\nc\r\n"},
		{"bare CR kept", []string{"a\rb\r\n"}, "a\rb\r\n"},
		{"bare CR at chunk end", []string{"a\r", "b\r\n"}, "a\rb\r\n"},
		{"bare CR at the very end", []string{"a\r\n", "b\r"}, "a\r\nb\r"},
		{"CR CR LF across chunks", []string{"a\r", "\r\n"}, "a\r\r\n"},
		{"LF CR across chunks", []string{"a\n", "\rb\r\n"}, "a\r\n\rb\r\n"},
		{"bare LF in the first of three", []string{"a\n", "b\r\n", "c\r\n"}, "a\r\nb\r\nc\r\n"},
		{"only LFs", []string{"\n\n", "\n"}, "\r\n\r\n\r\n"},
	}
	for _, mode := range smugModes {
		for _, pipelining := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/pipelining=%v", mode, pipelining), func(t *testing.T) {
				t.Parallel()
				h := newBdatHandler()
				addr, _ := bdatServe(t, h, func(s *Server) { s.CRLFMode, s.Pipelining = mode, pipelining })
				for _, tt := range tests {
					helo := bdatHelo()
					c := bdatTransaction(t, addr, helo)
					if pipelining {
						c.send(bdatChunks(tt.chunks...))
					} else {
						for i, ch := range tt.chunks {
							c.send(bdatCmd(len(ch), i == len(tt.chunks)-1) + ch)
							time.Sleep(time.Millisecond)
						}
					}
					var got []bdatReply
					for range tt.chunks {
						got = append(got, c.bdatReplyOf())
					}
					require.Equal(t, bdatWantReplies(tt.chunks, mode), got, tt.name)
					c.bdatInSync()
					msgs := h.take(helo)
					sent := strings.Join(tt.chunks, "")
					if mode == CRLFStrict && smugHasBare(sent) {
						require.Empty(t, msgs, tt.name)
						continue
					}
					require.Len(t, msgs, 1, tt.name)
					want := sent
					if mode == CRLFEnsure {
						want = tt.ensure
						require.Equal(t, bdatEnsureRef(sent), want, "the test's own table: %s", tt.name)
					}
					require.Equal(t, want, msgs[0].Data, tt.name)
				}
			})
		}
	}
}

// TestBdatBinaryMIME: BODY=BINARYMIME needs CHUNKING; its data is stored as sent in
// every CRLF mode (no line-end rules), and DATA after it is 503 (RFC 3030 3).
func TestBdatBinaryMIME(t *testing.T) {
	bin := "\x00\x01\r\r\n\n\x80\xff\r.\r\n\n.\n"
	for _, mode := range smugModes {
		t.Run(mode.String(), func(t *testing.T) {
			h := newBdatHandler()
			addr, _ := bdatServe(t, h, func(s *Server) { s.CRLFMode = mode })
			helo := bdatHelo()
			c := dialGreeted(t, addr)
			ehlo := c.cmd("EHLO "+helo, 250)
			require.Contains(t, strings.Split(ehlo, "\n"), "CHUNKING")
			require.Contains(t, strings.Split(ehlo, "\n"), "BINARYMIME")
			c.cmd("MAIL FROM:<"+bdatSender+"> BODY=BINARYMIME", 250)
			c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
			c.cmd("DATA", 503)
			c.send(bdatChunks(bin[:5], bin[5:]))
			require.Equal(t, bdatReply{250, "5 octets received"}, c.bdatReplyOf())
			require.Equal(t, bdatReply{250, bdatTextFinal}, c.bdatReplyOf())
			c.cmd("MAIL FROM:<"+bdatSender+"> body=binarymime", 250)
			c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
			c.protoCmd("DATA", 503, protoText503)
			c.cmd("RSET", 250)
			c.bdatInSync()
			msgs := h.take(helo)
			require.Len(t, msgs, 1)
			require.Equal(t, bin, msgs[0].Data, "stored as sent")
			require.Equal(t, "binarymime", msgs[0].Body)
		})
	}
	t.Run("CHUNKING off", func(t *testing.T) {
		addr := serve(t, &Server{})
		c := dialGreeted(t, addr)
		c.cmd("EHLO client.example", 250)
		c.cmd("MAIL FROM:<"+bdatSender+"> BODY=BINARYMIME", 501)
	})
	t.Run("CHUNKING off, Internationalization on", func(t *testing.T) {
		addr := serve(t, &Server{Internationalization: true})
		c := dialGreeted(t, addr)
		ehlo := c.cmd("EHLO client.example", 250)
		require.NotContains(t, ehlo, "BINARYMIME")
		c.cmd("MAIL FROM:<"+bdatSender+"> BODY=BINARYMIME", 501)
		c.cmd("MAIL FROM:<"+bdatSender+"> BODY=8BITMIME", 250)
	})
	t.Run("CHUNKING on, 8BITMIME needs Internationalization", func(t *testing.T) {
		addr, _ := bdatServe(t, newBdatHandler(), nil)
		c := dialGreeted(t, addr)
		c.cmd("EHLO client.example", 250)
		c.cmd("MAIL FROM:<"+bdatSender+"> BODY=8BITMIME", 501)
		c.cmd("MAIL FROM:<"+bdatSender+"> BODY=7BIT", 250)
	})
}

// TestBdatPipelined: chunks pipelined back to back, with PIPELINING on and off:
// BDAT is never refused as "pipelining not allowed", and its octets are not lines
// (a chunk without a line end, or one holding command lines, is data).
func TestBdatPipelined(t *testing.T) {
	for _, pipelining := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelining=%v", pipelining), func(t *testing.T) {
			h := newBdatHandler()
			addr, _ := bdatServe(t, h, func(s *Server) { s.Pipelining = pipelining })
			helo := bdatHelo()
			c := bdatTransaction(t, addr, helo)
			chunks := []string{"abc", "NOOP\r\nRSET\r\n", "QUIT", "\r\n"}
			c.send(bdatChunks(chunks...))
			for i, ch := range chunks[:len(chunks)-1] {
				require.Equal(t, bdatReply{250, fmt.Sprintf("%d octets received", len(ch))}, c.bdatReplyOf(), "chunk %d", i)
			}
			require.Equal(t, bdatReply{250, bdatTextFinal}, c.bdatReplyOf())
			c.bdatInSync()
			msgs := h.take(helo)
			require.Len(t, msgs, 1)
			require.Equal(t, "abcNOOP\r\nRSET\r\nQUIT\r\n", msgs[0].Data)
			if pipelining {
				// The whole transaction in one write.
				helo := bdatHelo()
				c := dialGreeted(t, addr)
				c.send("EHLO " + helo + "\r\nMAIL FROM:<" + bdatSender + ">\r\nRCPT TO:<" + bdatRecipient + ">\r\n" +
					bdatChunks("x\r\n", "y\r\n") + "MAIL FROM:<" + bdatSender + ">\r\nRCPT TO:<" + bdatRecipient + ">\r\n" + bdatChunks("z\r\n"))
				for _, want := range []int{250, 250, 250, 250, 250, 250, 250, 250} {
					require.Equal(t, want, c.bdatReplyOf().Code)
				}
				c.bdatInSync()
				msgs := h.take(helo)
				require.Len(t, msgs, 2)
				require.Equal(t, "x\r\ny\r\n", msgs[0].Data)
				require.Equal(t, "z\r\n", msgs[1].Data)
			}
		})
	}
}

// TestBdatHookErrorMiddleChunk: a data hook's error in a middle chunk is answered at
// that chunk (its octets read); later chunks get 503; OnMessage never runs; RSET 250
// and the next transaction works.
func TestBdatHookErrorMiddleChunk(t *testing.T) {
	refusal := &SMTPError{Code: 554, Message: "No bad words"}
	for _, hook := range []string{"OnDataReceiving", "OnDataHeaders"} {
		for _, pipelining := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/pipelining=%v", hook, pipelining), func(t *testing.T) {
				h := newBdatHandler()
				refuse := func(s *Session) error {
					if strings.Contains(string(s.Message.Data), "bad") {
						return refusal
					}
					return nil
				}
				if hook == "OnDataReceiving" {
					h.dataRecv = refuse
				} else {
					h.dataHdrs = refuse
				}
				addr, _ := bdatServe(t, h, func(s *Server) { s.Pipelining = pipelining })
				helo := bdatHelo()
				c := bdatTransaction(t, addr, helo)
				chunks := []string{"A: ok\r\n", "B: bad\r\n\r\nmore\r\n", "C: 3\r\n", "end\r\n"}
				if pipelining {
					c.send(bdatChunks(chunks...))
				} else {
					for i, ch := range chunks {
						c.send(bdatCmd(len(ch), i == len(chunks)-1) + ch)
						time.Sleep(time.Millisecond)
					}
				}
				got := []bdatReply{c.bdatReplyOf(), c.bdatReplyOf(), c.bdatReplyOf(), c.bdatReplyOf()}
				require.Equal(t, []bdatReply{{250, "7 octets received"}, {554, "No bad words"},
					{503, protoText503}, {503, protoText503}}, got)
				c.cmd("RSET", 250)
				c.cmd("MAIL FROM:<"+bdatSender+">", 250)
				c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
				c.send(bdatChunks("fine\r\n"))
				require.Equal(t, bdatReply{250, bdatTextFinal}, c.bdatReplyOf())
				c.bdatInSync()
				msgs := h.take(helo)
				require.Len(t, msgs, 1)
				require.Equal(t, "fine\r\n", msgs[0].Data)
			})
		}
	}
}

// TestBdatThenData: after a BDAT transaction, DATA works again in the same session.
func TestBdatThenData(t *testing.T) {
	h := newBdatHandler()
	addr, _ := bdatServe(t, h, nil)
	helo := bdatHelo()
	c := bdatTransaction(t, addr, helo)
	c.send(bdatCmd(4, false) + "one\n")
	require.Equal(t, bdatReply{250, "4 octets received"}, c.bdatReplyOf())
	c.cmd("RSET", 250)
	c.cmd("MAIL FROM:<"+bdatSender+">", 250)
	c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
	c.cmd("DATA", 354)
	c.send("two\r\n.\r\n")
	c.expect(250)
	c.bdatInSync()
	msgs := h.take(helo)
	require.Len(t, msgs, 1)
	require.Equal(t, "two\r\n", msgs[0].Data)
}

// TestBdatSmugglingMalformedCommandLine: a BDAT command line with a NUL or a CR in
// it must not let its announced octets run as commands (DESIGN: "its announced octets
// are never executed as commands"). The size cannot be trusted, so, like a size that
// does not parse, the connection must close after the reply. (It once got a plain
// 500 before cmdBdat saw it, and its octets ran as commands.)
func TestBdatSmugglingMalformedCommandLine(t *testing.T) {
	payload := bdatPayload("\r\n.\r\n")
	for _, line := range []string{"BDAT %d\x00 LAST\r\n", "BDAT %d\r LAST\r\n", "BDAT %d LAST\x00\r\n"} {
		for _, pipelining := range []bool{false, true} {
			t.Run(fmt.Sprintf("%q/pipelining=%v", line, pipelining), func(t *testing.T) {
				h := newBdatHandler()
				addr, _ := bdatServe(t, h, func(s *Server) { s.Pipelining = pipelining })
				helo := bdatHelo()
				c := bdatTransaction(t, addr, helo)
				c.bdatWriteErr([]string{fmt.Sprintf(line, len(payload)) + payload})
				got := c.bdatReplyOf()
				require.Equal(t, 501, got.Code, "%v", got)
				c.expectClosed()
				require.Empty(t, h.take(helo), "nothing delivered, the smuggled message least of all")
			})
		}
	}
}

// bdatStreamer is a MessageStreamer that records what its reader gave and how it ended.
type bdatStreamer struct {
	bdatHandler
	ended chan string
}

func (h *bdatStreamer) OnMessageStream(s *Session, r io.Reader) error {
	b, err := io.ReadAll(r)
	h.ended <- fmt.Sprintf("%q, %v", b, err)
	return err
}

// TestBdatStreamChunkOverMaxMessageSize: with a MessageStreamer, a chunk whose
// announced size takes the streamed message past MaxMessageSize is refused 552 at
// once, and the stream hook's reader fails with an error wrapping SMTPError552 (the
// hook is not left waiting for data that never comes).
func TestBdatStreamChunkOverMaxMessageSize(t *testing.T) {
	h := &bdatStreamer{bdatHandler: *newBdatHandler(), ended: make(chan string, 4)}
	addr, _ := bdatServe(t, h, func(s *Server) { s.MaxMessageSize = 100 })
	for _, tc := range []struct {
		name   string
		chunks []string
		want   []int
	}{
		{"second chunk alone over the limit", []string{strings.Repeat("a", 48) + "\r\n", strings.Repeat("b", 200)}, []int{250, 552}},
		{"second chunk passes the total", []string{strings.Repeat("a", 58) + "\r\n", strings.Repeat("b", 58) + "\r\n", "c"}, []int{250, 552, 503}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			helo := bdatHelo()
			c := bdatTransaction(t, addr, helo)
			c.send(bdatChunks(tc.chunks...))
			var got []int
			for range tc.want {
				got = append(got, c.bdatReplyOf().Code)
			}
			require.Equal(t, tc.want, got)
			select {
			case ended := <-h.ended:
				require.Contains(t, ended, "exceeded storage allocation", "the reader fails with the 552")
			case <-time.After(5 * time.Second):
				require.Fail(t, "OnMessageStream never returned")
			}
			c.bdatInSync()
		})
	}
}
