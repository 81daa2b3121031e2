package smtpd

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	bdatSender    = "sender@example.org"
	bdatRecipient = "rcpt@example.org"
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

// bdatInSync checks that the session is in sync and executed nothing of what it
// should not have: NOOP's 250 OK is the very next reply, then QUIT's 221, then
// the connection closes.
func (c *client) bdatInSync() {
	c.t.Helper()
	c.send("NOOP\r\n")
	require.Equal(c.t, bdatReply{250, protoTextOK}, c.bdatReplyOf(), "NOOP's reply must be the next one")
	c.send("QUIT\r\n")
	require.Equal(c.t, 221, c.bdatReplyOf().Code, "QUIT's reply must be the next one")
	c.expectClosed()
}

// bdatRetryDelivers is the step after a refused message: RSET, a new envelope and
// data as one LAST chunk, whose reply must be the final 250; the session is then in
// sync (bdatInSync) and the session greeted with helo delivered exactly that one
// message. msgAndArgs is the failure message of the count.
func (c *client) bdatRetryDelivers(h *bdatHandler, helo, data string, msgAndArgs ...any) {
	c.t.Helper()
	c.cmd("RSET", 250)
	c.cmd("MAIL FROM:<"+bdatSender+">", 250)
	c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
	c.send(bdatChunks(data))
	require.Equal(c.t, bdatReply{250, protoText250Data}, c.bdatReplyOf())
	c.bdatInSync()
	msgs := h.take(helo)
	require.Len(c.t, msgs, 1, msgAndArgs...)
	require.Equal(c.t, data, msgs[0].Data)
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
			out = append(out, bdatReply{250, protoText250Data})
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

// bdatTransaction greets, sends MAIL and RCPT and returns the client.
func bdatTransaction(t *testing.T, addr, helo string) *client {
	t.Helper()
	c := dialGreeted(t, addr)
	c.cmd("EHLO "+helo, 250)
	c.cmd("MAIL FROM:<"+bdatSender+">", 250)
	c.cmd("RCPT TO:<"+bdatRecipient+">", 250)
	return c
}
