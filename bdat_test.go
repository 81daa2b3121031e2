package smtpd

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BDAT (RFC 3030 CHUNKING): the twins of smuggling_test.go for counted chunks —
// whatever a chunk's octets hold, they are message data and never commands: accepted,
// refused, with CHUNKING off, cut into any TCP writes, pipelined or not — and the
// protocol of BDAT itself (replies, data hooks, CRLF modes, BINARYMIME, errors).

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
				require.Equal(t, bdatReply{250, protoText250Data}, c.bdatReplyOf())
				c.bdatInSync()
				require.Equal(t, "ab\r\ncd", h.take(helo)[0].Data)
				return
			}
			for i, ch := range tt.chunks {
				last := i == len(tt.chunks)-1
				c.send(bdatCmd(len(ch), last) + ch)
				if last {
					require.Equal(t, bdatReply{250, protoText250Data}, c.bdatReplyOf())
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
			require.Equal(t, bdatReply{250, protoText250Data}, c.bdatReplyOf())
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
			require.Equal(t, bdatReply{250, protoText250Data}, c.bdatReplyOf())
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
			require.Equal(t, bdatReply{250, protoText250Data}, c.bdatReplyOf())
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
				c.bdatRetryDelivers(h, helo, "fine\r\n")
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

// TestBdatAbandonedStopsDataRateClock: a transfer abandoned between chunks (RSET)
// takes MinDataRate's clock with it; an idle session afterwards is not "too slow".
func TestBdatAbandonedStopsDataRateClock(t *testing.T) {
	addr, _ := bdatServe(t, newBdatHandler(), func(s *Server) { s.MinDataRate = 1000 })
	c := dialGreeted(t, addr)
	c.cmd("EHLO x", 250)
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<c@d.example>", 250)
	c.send("BDAT 5\r\nhello")
	c.expect(250)
	c.cmd("RSET", 250)
	time.Sleep(2*time.Second + 500*time.Millisecond) // past MinDataRate's 2 s grace
	c.cmd("NOOP", 250)
}
