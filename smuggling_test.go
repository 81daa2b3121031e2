package smtpd

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// SMTP smuggling (CVE-2023-51764 class): DATA ends only on <CRLF>.<CRLF>, in every
// CRLF mode, however the bytes are cut into TCP writes and read buffers.

const (
	smugSender    = "sender@example.org"
	smugRecipient = "rcpt@example.org"
	smugEnvelope  = "MAIL FROM:<" + smugSender + ">\r\nRCPT TO:<" + smugRecipient + ">\r\nDATA\r\n"
	smugReplyOK   = "Requested mail action okay, completed"
	smugReplyCRLF = "Bad input, Lines must be terminated by CRLF sequence"
	smugWriteGap  = 3 * time.Millisecond // lets the server read a chunk before the next one arrives
)

// smugHandler keeps the messages of each session apart, by HELO name, so parallel
// subtests can share a server and each count its own messages exactly.
type smugHandler struct {
	BaseHandler
	mu     sync.Mutex
	byHelo map[string][]recorded
}

func newSmugHandler() *smugHandler { return &smugHandler{byHelo: map[string][]recorded{}} }

func (h *smugHandler) OnMessage(s *Session) error {
	m := recorded{From: s.Envelope.From, To: append([]string(nil), s.Envelope.To...), Data: string(s.Message.Data), Helo: s.Helo}
	h.mu.Lock()
	h.byHelo[s.Helo] = append(h.byHelo[s.Helo], m)
	h.mu.Unlock()
	return nil
}

// take returns and forgets the messages of the session greeted with helo.
func (h *smugHandler) take(helo string) []recorded {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.byHelo[helo]
	delete(h.byHelo, helo)
	return m
}

var smugHeloSeq struct {
	sync.Mutex
	n int
}

func smugHelo() string {
	smugHeloSeq.Lock()
	defer smugHeloSeq.Unlock()
	smugHeloSeq.n++
	return fmt.Sprintf("client%d.example", smugHeloSeq.n)
}

// smugTransaction greets with helo, sends one transaction whose message (with its
// final dot) is given as chunks written separately with a gap between them, and
// returns the reply that follows 354. It then sends QUIT and checks that 221 is the
// very next reply and that nothing follows it: the end of data got exactly one reply
// and nothing the client sent was run as a command.
func smugTransaction(t *testing.T, addr, helo string, pipelining bool, chunks []string) (int, string) {
	t.Helper()
	c := dialGreeted(t, addr)
	c.cmd("EHLO "+helo, 250)
	if pipelining {
		chunks = append([]string(nil), chunks...)
		chunks[0] = smugEnvelope + chunks[0]
	} else {
		c.cmd("MAIL FROM:<"+smugSender+">", 250)
		c.cmd("RCPT TO:<"+smugRecipient+">", 250)
		c.cmd("DATA", 354)
	}
	for i, chunk := range chunks {
		if i > 0 {
			time.Sleep(smugWriteGap)
		}
		c.send(chunk)
	}
	if pipelining {
		c.expect(250)
		c.expect(250)
		c.expect(354)
	}
	code, text := c.reply()
	c.send("QUIT\r\n")
	require.Equal(t, 221, func() int { got, _ := c.reply(); return got }(), "the reply after the end of data must be QUIT's")
	c.expectClosed()
	return code, text
}

// smugCut cuts s at the given offsets (sorted, duplicates and out-of-range ignored).
func smugCut(s string, cuts ...int) []string {
	sort.Ints(cuts)
	var chunks []string
	prev := 0
	for _, c := range cuts {
		if c <= prev || c >= len(s) {
			continue
		}
		chunks = append(chunks, s[prev:c])
		prev = c
	}
	return append(chunks, s[prev:])
}

// smugHasBare reports whether s has a CR not followed by LF or an LF not preceded by CR.
func smugHasBare(s string) bool {
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\r' && (i+1 == len(s) || s[i+1] != '\n'):
			return true
		case s[i] == '\n' && (i == 0 || s[i-1] != '\r'):
			return true
		}
	}
	return false
}

var smugModes = []CRLFMode{CRLFEnsure, CRLFLeave, CRLFStrict}

func TestSmuggling(t *testing.T) {
	const (
		head  = "Subject: one\r\n\r\nfirst"
		tail  = "MAIL FROM:<admin@example.net>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nSubject: two\r\n\r\nsmuggled\r\n"
		final = ".\r\n"
	)
	// ensure/leave: what the fake terminator becomes in the stored message. A line
	// that is a lone "." but no terminator is kept as "."; a line ".<CR>..." is
	// dot-unstuffed (RFC 5321 4.5.2: a leading period with other characters after it).
	tests := []struct {
		fake, ensure, leave string
	}{
		{"\n.\n", "\r\n.\r\n", "\n.\n"},
		{"\n.\r\n", "\r\n.\r\n", "\n.\r\n"},
		{"\r\n.\n", "\r\n.\r\n", "\r\n.\n"},
		{"\r.\r", "\r.\r", "\r.\r"},
		{"\r.\r\n", "\r.\r\n", "\r.\r\n"},
		{"\n.\r", "\r\n\r", "\n\r"},
		{"\r.\n", "\r.\r\n", "\r.\n"},
		{"\r\n.\r", "\r\n\r", "\r\n\r"},
		{"\r\n.\r\r\n", "\r\n\r\r\n", "\r\n\r\r\n"},
		{"\r\r\n.\r\r\n", "\r\r\n\r\r\n", "\r\r\n\r\r\n"},
	}
	for _, mode := range smugModes {
		for _, pipelining := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/pipelining=%v", mode, pipelining), func(t *testing.T) {
				t.Parallel()
				h := newSmugHandler()
				addr := serve(t, &Server{Handler: h, CRLFMode: mode, Pipelining: pipelining})
				for _, tt := range tests {
					msg := head + tt.fake + tail + final
					// The message's only real terminator is its last five bytes, also
					// counting the CRLF of the DATA line before it.
					require.Equal(t, 1, strings.Count("\r\n"+msg, "\r\n.\r\n"), "test message %q", msg)
					require.True(t, strings.HasSuffix(msg, "\r\n.\r\n"))
					require.True(t, smugHasBare(msg), "every fake terminator has a bare CR or LF")

					k := len(head) // the fake terminator's offset
					splits := map[string][]int{
						"one write":          nil,
						"around fake":        {k, k + len(tt.fake)},
						"elsewhere":          {5, k + len(tt.fake) + 10, len(msg) - 5, len(msg) - 3},
						"fake byte by byte":  nil,
						"before final CRLF.": {len(msg) - 5},
					}
					for i := 1; i < len(tt.fake); i++ {
						splits[fmt.Sprintf("inside fake at %d", i)] = []int{k + i}
					}
					for i := 0; i <= len(tt.fake); i++ {
						splits["fake byte by byte"] = append(splits["fake byte by byte"], k+i)
					}
					for name, cuts := range splits {
						desc := fmt.Sprintf("fake %q, %s", tt.fake, name)
						helo := smugHelo()
						code, text := smugTransaction(t, addr, helo, pipelining, smugCut(msg, cuts...))
						got := h.take(helo)
						if mode == CRLFStrict {
							require.Equal(t, 500, code, desc)
							require.Equal(t, smugReplyCRLF, text, desc)
							require.Empty(t, got, "%s: nothing delivered in strict mode", desc)
							continue
						}
						require.Equal(t, 250, code, "%s: %s", desc, text)
						require.Equal(t, smugReplyOK, text, desc)
						require.Len(t, got, 1, "%s: exactly one message", desc)
						want := head + tt.leave + tail
						if mode == CRLFEnsure {
							want = head + tt.ensure + tail
						}
						require.Equal(t, want, got[0].Data, desc)
						require.Contains(t, got[0].Data, "smuggled", desc)
						require.Equal(t, smugSender, got[0].From, desc)
						require.Equal(t, []string{smugRecipient}, got[0].To, "%s: the smuggled RCPT is data", desc)
					}
				}
			})
		}
	}
}

// TestSmugglingRealTerminatorSplit: the real <CRLF>.<CRLF> cut across TCP writes
// (and so across reads) still ends the message, in every mode.
func TestSmugglingRealTerminatorSplit(t *testing.T) {
	const body = "Subject: split\r\n\r\nbody"
	splits := [][]string{
		{body, "\r", "\n.", "\r\n"},
		{body + "\r", "\n", ".", "\r", "\n"},
		{body + "\r\n", ".\r\n"},
		{body + "\r\n.", "\r\n"},
		{body + "\r\n.\r", "\n"},
		{body, "\r\n.\r\n"},
	}
	for _, mode := range smugModes {
		for _, pipelining := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/pipelining=%v", mode, pipelining), func(t *testing.T) {
				t.Parallel()
				h := newSmugHandler()
				addr := serve(t, &Server{Handler: h, CRLFMode: mode, Pipelining: pipelining})
				for _, chunks := range splits {
					helo := smugHelo()
					code, text := smugTransaction(t, addr, helo, pipelining, chunks)
					require.Equal(t, 250, code, "chunks %q: %s", chunks, text)
					got := h.take(helo)
					require.Len(t, got, 1, "chunks %q", chunks)
					require.Equal(t, body+"\r\n", got[0].Data, "chunks %q", chunks)
				}
			})
		}
	}
}

// TestSmugglingStoredBytes checks Message.Data byte for byte in each mode: CRLFEnsure
// turns a bare LF into CRLF and keeps a bare CR, CRLFLeave keeps every byte, and
// CRLFStrict refuses the message at its real end.
func TestSmugglingStoredBytes(t *testing.T) {
	tests := []struct {
		name, sent, ensure, leave string
	}{
		{"crlf clean", "a\r\nb\r\n", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"bare lf", "a\nb\r\n", "a\r\nb\r\n", "a\nb\r\n"},
		{"bare lf everywhere", "Subject: x\n\nbody\n\r\n", "Subject: x\r\n\r\nbody\r\n\r\n", "Subject: x\n\nbody\n\r\n"},
		{"bare cr kept", "a\rb\r\n", "a\rb\r\n", "a\rb\r\n"},
		{"cr before crlf", "a\r\r\n", "a\r\r\n", "a\r\r\n"},
		{"lone cr line", "\r\r\n", "\r\r\n", "\r\r\n"},
		{"cr lf reversed", "a\n\rb\r\n", "a\r\n\rb\r\n", "a\n\rb\r\n"},
		{"stuffed dots", "..\r\n..x\r\n.y\n...\r\n", ".\r\n.x\r\ny\r\n..\r\n", ".\r\n.x\r\ny\n..\r\n"},
		{"lone dot after bare lf kept", "a\n.\r\nb\r\n", "a\r\n.\r\nb\r\n", "a\n.\r\nb\r\n"},
		{"empty message", "", "", ""},
		{"only empty line", "\r\n", "\r\n", "\r\n"},
		{"nul and 8-bit bytes", "a\x00b\xff\r\n", "a\x00b\xff\r\n", "a\x00b\xff\r\n"},
	}
	for _, mode := range smugModes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			h := newSmugHandler()
			addr := serve(t, &Server{Handler: h, CRLFMode: mode})
			for _, tt := range tests {
				helo := smugHelo()
				code, text := smugTransaction(t, addr, helo, false, []string{tt.sent + ".\r\n"})
				got := h.take(helo)
				if mode == CRLFStrict && smugHasBare(tt.sent) {
					require.Equal(t, 500, code, tt.name)
					require.Equal(t, smugReplyCRLF, text, tt.name)
					require.Empty(t, got, tt.name)
					continue
				}
				require.Equal(t, 250, code, "%s: %s", tt.name, text)
				require.Len(t, got, 1, tt.name)
				want := tt.leave
				if mode == CRLFEnsure {
					want = tt.ensure
				}
				require.Equal(t, want, got[0].Data, tt.name)
			}
		})
	}
}

// smugBoundaryLine is a line of n bytes (no line end) that shows where bytes went
// missing or were repeated if a test fails.
func smugBoundaryLine(n int) string {
	const pattern = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(pattern)
	}
	return b.String()[:n]
}

// TestSmugglingTerminatorAtBufferBoundary puts the terminator, and a stuffed lone
// dot, at every offset around the read buffer's boundaries: the message is sent in
// one write after 354, so it starts at offset 0 of the session's read buffer.
func TestSmugglingTerminatorAtBufferBoundary(t *testing.T) {
	lengths := map[int]bool{}
	for n := 510; n <= 4097; n += 97 {
		lengths[n] = true
	}
	for _, r := range [][2]int{{505, 516}, {1018, 1028}, {2042, 2052}, {4085, 4100}, {8185, 8196}} {
		for n := r[0]; n <= r[1]; n++ {
			lengths[n] = true
		}
	}
	var sorted []int
	for n := range lengths {
		sorted = append(sorted, n)
	}
	sort.Ints(sorted)

	type msgCase struct{ name, sent, want string }
	var cases []msgCase
	for _, n := range sorted {
		line := smugBoundaryLine(n)
		cases = append(cases,
			msgCase{fmt.Sprintf("line %d", n), line + "\r\n.\r\n", line + "\r\n"},
			// "..\r\n" is the stuffed form of a data line ".": never a terminator.
			msgCase{fmt.Sprintf("line %d + stuffed dot", n), line + "\r\n..\r\n.\r\n", line + "\r\n.\r\n"},
			// a stuffed line whose leading dot sits at the boundary.
			msgCase{fmt.Sprintf("line %d + stuffed text", n), line + "\r\n..x\r\n.\r\n", line + "\r\n.x\r\n"})
	}
	for _, mode := range smugModes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			h := newSmugHandler()
			addr := serve(t, &Server{Handler: h, CRLFMode: mode})
			helo := smugHelo()
			c := dialGreeted(t, addr)
			c.cmd("EHLO "+helo, 250)
			for _, mc := range cases {
				c.cmd("MAIL FROM:<"+smugSender+">", 250)
				c.cmd("RCPT TO:<"+smugRecipient+">", 250)
				c.cmd("DATA", 354)
				c.send(mc.sent)
				require.Equal(t, smugReplyOK, c.expect(250), mc.name)
				got := h.take(helo)
				require.Len(t, got, 1, mc.name)
				require.Equal(t, mc.want, got[0].Data, mc.name)
			}
			c.cmd("QUIT", 221)
			c.expectClosed()
		})
	}

	// Smaller read buffers (IOBufferMaxSize below 4096 sizes the buffer): the
	// terminator straddles the first boundary at each of its offsets. Lines stay
	// within IOBufferMaxSize.
	for _, size := range []int{512, 1024, 2048} {
		t.Run(fmt.Sprintf("buffer %d", size), func(t *testing.T) {
			t.Parallel()
			h := newSmugHandler()
			addr := serve(t, &Server{Handler: h, IOBufferMaxSize: size})
			helo := smugHelo()
			c := dialGreeted(t, addr)
			c.cmd("EHLO "+helo, 250)
			first := smugBoundaryLine(100) + "\r\n"
			for before := size - 8; before <= size+3; before++ { // bytes before the final "\r\n.\r\n"
				data := first + smugBoundaryLine(before-len(first))
				for _, tail := range []struct{ sent, want string }{
					{"\r\n.\r\n", "\r\n"},
					{"\r\n..\r\n.\r\n", "\r\n.\r\n"},
				} {
					name := fmt.Sprintf("%d bytes then %q", before, tail.sent)
					c.cmd("MAIL FROM:<"+smugSender+">", 250)
					c.cmd("RCPT TO:<"+smugRecipient+">", 250)
					c.cmd("DATA", 354)
					c.send(data + tail.sent)
					require.Equal(t, smugReplyOK, c.expect(250), name)
					got := h.take(helo)
					require.Len(t, got, 1, name)
					require.Equal(t, data+tail.want, got[0].Data, name)
				}
			}
			c.cmd("QUIT", 221)
			c.expectClosed()
		})
	}
}

// TestSmugglingDataPipelinedWithoutPipelining: with pipelining off, DATA followed in
// the same write by the message is refused (the client did not wait for 354); the
// message lines that follow are not data, and no message is delivered, not even the
// one hidden behind a fake terminator.
func TestSmugglingDataPipelinedWithoutPipelining(t *testing.T) {
	tests := []struct {
		name  string
		lines []string // after "DATA", each sent with CRLF
	}{
		{"plain message", []string{"Subject: x", "", "body", "."}},
		{"smuggled message", []string{"Subject: one", "", "first\n.\nMAIL FROM:<admin@example.net>",
			"RCPT TO:<victim@example.net>", "DATA", "Subject: two", "", "smuggled", "."}},
	}
	for _, mode := range smugModes {
		for _, tt := range tests {
			t.Run(mode.String()+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				h := newSmugHandler()
				addr := serve(t, &Server{Handler: h, CRLFMode: mode})
				helo := smugHelo()
				c := dialGreeted(t, addr)
				c.cmd("EHLO "+helo, 250)
				c.cmd("MAIL FROM:<"+smugSender+">", 250)
				c.cmd("RCPT TO:<"+smugRecipient+">", 250)
				c.send("DATA\r\n" + strings.Join(tt.lines, "\r\n") + "\r\n")
				code, text := c.reply()
				require.Equal(t, 500, code, text)
				require.Equal(t, "Bad input, PIPELINING is not allowed", text)
				// Every other line gets one reply, none of them accepts anything.
				// (A line with a bare LF inside is two lines for the server.)
				n := strings.Count(strings.Join(tt.lines, "\r\n")+"\r\n", "\n")
				for i := 0; i < n; i++ {
					code, text := c.reply()
					require.GreaterOrEqual(t, code, 500, "reply %d: %d %s", i+1, code, text)
				}
				c.cmd("QUIT", 221)
				c.expectClosed()
				require.Empty(t, h.take(helo))
			})
		}
	}
}

// smugRefuser refuses every message at its header/body boundary (OnDataHeaders).
type smugRefuser struct{ smugHandler }

func (h *smugRefuser) OnDataHeaders(*Session) error { return SMTPError554 }

// TestSmugglingErrorPaths: when the message is refused while it streams (a hook
// error, MaxMessageSize), the rest is read and discarded up to the real terminator
// only: the smuggled commands behind a fake terminator are never run, the refusal
// is the one reply to the end of data, and nothing is delivered.
func TestSmugglingErrorPaths(t *testing.T) {
	const msg = "Subject: one\r\n\r\nfirst%sMAIL FROM:<admin@example.net>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nSubject: two\r\n\r\nsmuggled\r\n.\r\n"
	fakes := []string{"\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r\r\n"}
	servers := []struct {
		name string
		code int
		srv  func(h Handler, mode CRLFMode, pipelining bool) *Server
	}{
		{"hook error", 554, func(h Handler, mode CRLFMode, pipelining bool) *Server {
			return &Server{Handler: h, CRLFMode: mode, Pipelining: pipelining}
		}},
		{"over MaxMessageSize", 552, func(h Handler, mode CRLFMode, pipelining bool) *Server {
			return &Server{Handler: h, CRLFMode: mode, Pipelining: pipelining, MaxMessageSize: 20}
		}},
	}
	for _, sv := range servers {
		for _, mode := range []CRLFMode{CRLFEnsure, CRLFLeave} {
			for _, pipelining := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%v/pipelining=%v", sv.name, mode, pipelining), func(t *testing.T) {
					t.Parallel()
					var h Handler = newSmugHandler()
					if sv.code == 554 {
						h = &smugRefuser{smugHandler{byHelo: map[string][]recorded{}}}
					}
					addr := serve(t, sv.srv(h, mode, pipelining))
					for _, fake := range fakes {
						m := fmt.Sprintf(msg, fake)
						for _, chunks := range [][]string{{m}, smugCut(m, len("Subject: one\r\n\r\nfirst"), len(m)-5)} {
							helo := smugHelo()
							code, text := smugTransaction(t, addr, helo, pipelining, chunks)
							require.Equal(t, sv.code, code, "fake %q: %s", fake, text)
							var got []recorded
							switch hh := h.(type) {
							case *smugHandler:
								got = hh.take(helo)
							case *smugRefuser:
								got = hh.take(helo)
							}
							require.Empty(t, got, "fake %q", fake)
						}
					}
				})
			}
		}
	}
}
