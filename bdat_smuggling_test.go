package smtpd

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

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
				if strings.HasSuffix(rc.line, "\n") && mode != CRLFStrict {
					continue // a bare LF ends a command line outside CRLFStrict: no refusal to test
				}
				t.Run(fmt.Sprintf("%v/pipelining=%v/%s", mode, pipelining, rc.name), func(t *testing.T) {
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
				c.bdatRetryDelivers(h, helo, "fresh\r\n")
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
					c := bdatTransaction(t, addr, helo)
					payload := bdatPayload("\r\n.\r\n")
					c.send(bdatCmd(4, false) + "ab\r\n")
					require.Equal(t, bdatReply{250, "4 octets received"}, c.bdatReplyOf())
					c.bdatWrite([]string{bdatCmd(len(payload)+100, last) + payload[:40], payload[40:]})
					c.expectSilent(50 * time.Millisecond) // the chunk is not complete: no reply
					c.conn.Close()
					h.waitEvent(t, helo, "disconnect")
					require.Empty(t, h.take(helo), "nothing delivered")
					require.NotContains(t, h.eventsOf(helo), "message")
					require.Zero(t, srv.buffered.used.Load(), "the session's buffered data was released")

					// The server is fine: the next client delivers.
					helo2 := bdatHelo()
					c2 := bdatTransaction(t, addr, helo2)
					c2.send(bdatChunks("after\r\n"))
					require.Equal(t, bdatReply{250, protoText250Data}, c2.bdatReplyOf())
					c2.bdatInSync()
					require.Len(t, h.take(helo2), 1)
					bdatTableLine(t, "no reply to the unfinished chunk; disconnect: nothing delivered, buffers released; next client delivers")
				})
			}
		}
	}
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
