package smtpd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The streaming path (MessageStreamer) must follow exactly the buffered path's
// rules: the same terminator, CRLF modes, size limit and replies. These tests send
// the same raw bytes to a buffered and a streaming server and compare what each
// stored and what each answered.

// streamHandler streams every message into memory (reading it in odd-sized reads).
type streamHandler struct {
	BaseHandler
	mu      sync.Mutex
	msgs    []string
	readErr []error
	readN   int   // bytes to read per call; 0: io.ReadAll
	stopAt  int   // stop reading after this many bytes (0: read all)
	ret     error // what OnMessageStream returns
	started int
}

func (h *streamHandler) OnDataStart(*Session) error {
	h.mu.Lock()
	h.started++
	h.mu.Unlock()
	return nil
}

func (h *streamHandler) OnMessageStream(s *Session, r io.Reader) error {
	var b strings.Builder
	buf := make([]byte, max(h.readN, 1))
	var err error
	for {
		if h.stopAt > 0 && b.Len() >= h.stopAt {
			break
		}
		var n int
		if h.readN == 0 {
			var all []byte
			all, err = io.ReadAll(r)
			b.Write(all)
			break
		}
		n, err = r.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			break
		}
	}
	h.mu.Lock()
	h.msgs = append(h.msgs, b.String())
	h.readErr = append(h.readErr, err)
	h.mu.Unlock()
	if h.ret != nil {
		return h.ret
	}
	return err
}

func (h *streamHandler) got() ([]string, []error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.msgs...), append([]error(nil), h.readErr...)
}

// streamExchange sends raw after EHLO/MAIL/RCPT/DATA in pieces of size cut (0: at
// once) and returns every reply line until QUIT's 221.
func streamExchange(t *testing.T, addr, raw string, cut int) []string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	var replies []string
	read := func() {
		for {
			line, err := r.ReadString('\n')
			require.NoError(t, err, "replies so far %q", replies)
			replies = append(replies, strings.TrimRight(line, "\r\n"))
			if len(line) > 3 && line[3] == ' ' {
				return
			}
		}
	}
	read()
	for _, c := range []string{"EHLO x", "MAIL FROM:<a@b.example>", "RCPT TO:<c@d.example>", "DATA"} {
		io.WriteString(conn, c+"\r\n")
		read()
	}
	data := raw + "QUIT\r\n"
	for len(data) > 0 {
		n := len(data)
		if cut > 0 {
			n = min(cut, n)
		}
		_, err := io.WriteString(conn, data[:n])
		require.NoError(t, err)
		data = data[n:]
	}
	for len(replies) == 0 || !strings.HasPrefix(replies[len(replies)-1], "221") {
		read()
	}
	return replies
}

func TestStreamMatchesBufferedPath(t *testing.T) {
	bodies := map[string]string{
		"plain":             "Subject: x\r\n\r\nhello\r\n.\r\n",
		"dot-stuffed":       "..leading\r\n.\r\n..\r\n.\r\n",
		"fake LF.LF":        "a\n.\nMAIL FROM:<evil@x>\r\n.\r\n",
		"fake CR.CR":        "a\r.\rRCPT TO:<v@x>\r\n.\r\n",
		"fake LF.CRLF":      "a\n.\r\nDATA\r\n.\r\n",
		"fake CRLF.LF":      "a\r\n.\nX\r\n.\r\n",
		"CR CR LF":          "a\r\n.\r\r\nb\r\n.\r\n",
		"bare CR kept":      "x\ry\r\n.\r\n",
		"empty message":     ".\r\n",
		"long line":         strings.Repeat("z", 70000) + "\r\n.\r\n",
		"over the limit":    strings.Repeat("0123456789abcdef\r\n", 200) + ".\r\n",
		"many small lines":  strings.Repeat("l\r\n", 5000) + ".\r\n",
		"terminator at end": "last line\r\n.\r\n",
	}
	for _, mode := range []CRLFMode{CRLFEnsure, CRLFLeave, CRLFStrict} {
		for name, body := range bodies {
			for _, cut := range []int{0, 1, 7} {
				if cut == 1 && len(body) > 4000 {
					continue // byte by byte: short bodies only
				}
				t.Run(fmt.Sprintf("%s/%s/cut=%d", mode, name, cut), func(t *testing.T) {
					t.Parallel()
					opts := func(h Handler) *Server {
						return &Server{Handler: h, CRLFMode: mode, MaxMessageSize: 3000, MaxErrors: -1, Pipelining: true} // replies independent of timing
					}
					buf := newRecorder()
					str := &streamHandler{readN: 13}
					bufReplies := streamExchange(t, serve(t, opts(buf)), body, cut)
					strReplies := streamExchange(t, serve(t, opts(str)), body, cut)
					require.Equal(t, bufReplies, strReplies, "the same replies")
					msgs, errs := str.got()
					var kept []string
					for i, m := range msgs {
						if errs[i] == nil {
							kept = append(kept, m)
						}
					}
					var bufMsgs []string
					for _, m := range buf.messages() {
						bufMsgs = append(bufMsgs, m.Data)
					}
					require.Equal(t, bufMsgs, kept, "the same messages, byte for byte")
				})
			}
		}
	}
}

func TestStreamRefusals(t *testing.T) {
	t.Run("over MaxMessageSize: the reader fails with 552", func(t *testing.T) {
		h := &streamHandler{readN: 100}
		addr := serve(t, &Server{Handler: h, MaxMessageSize: 1000})
		replies := streamExchange(t, addr, strings.Repeat("x", 80)+"\r\n"+strings.Repeat("y\r\n", 1000)+".\r\n", 0)
		require.Contains(t, replies, "552 "+SMTPError552.Message)
		_, errs := h.got()
		require.Len(t, errs, 1)
		var se *SMTPError
		require.True(t, errors.As(errs[0], &se) && se.Code == 552, "read error %v", errs[0])
	})
	t.Run("hook stops reading early: the rest is drained, its nil is 250", func(t *testing.T) {
		h := &streamHandler{readN: 10, stopAt: 20}
		addr := serve(t, &Server{Handler: h})
		replies := streamExchange(t, addr, strings.Repeat("line\r\n", 50000)+".\r\n", 0)
		require.Contains(t, replies, "250 "+smugReplyOK)
		msgs, _ := h.got()
		require.Len(t, msgs, 1)
		require.Len(t, msgs[0], 20)
	})
	t.Run("hook error answers the final dot", func(t *testing.T) {
		h := &streamHandler{ret: SMTPError554}
		addr := serve(t, &Server{Handler: h})
		replies := streamExchange(t, addr, "a\r\n.\r\n", 0)
		require.Contains(t, replies, "554 "+SMTPError554.Message)
	})
	t.Run("strict: a bare LF fails the reader and answers 500", func(t *testing.T) {
		h := &streamHandler{}
		addr := serve(t, &Server{Handler: h, CRLFMode: CRLFStrict})
		replies := streamExchange(t, addr, "a\nb\r\n.\r\n", 0)
		require.Contains(t, replies, "500 "+smugReplyCRLF)
		_, errs := h.got()
		require.Len(t, errs, 1)
		require.ErrorIs(t, errs[0], errCRLF)
	})
	t.Run("strict: a bare LF in a BDAT chunk fails the reader with the CRLF error", func(t *testing.T) {
		h := &streamHandler{}
		addr, _ := bdatServe(t, h, func(srv *Server) { srv.CRLFMode = CRLFStrict })
		c := bdatTransaction(t, addr, "stream-bdat.example")
		chunk := "a\nb\r\n"
		c.send(bdatCmd(len(chunk), false) + chunk)
		require.Equal(t, smugReplyCRLF, c.expect(500))
		_, errs := h.got()
		require.Len(t, errs, 1)
		require.ErrorIs(t, errs[0], errCRLF)
	})
	t.Run("client leaves mid-message: the reader fails, nothing accepted", func(t *testing.T) {
		h := &streamHandler{}
		srv := &Server{Handler: h}
		addr := serve(t, srv)
		c := dialGreeted(t, addr)
		c.cmd("EHLO x", 250)
		c.cmd("MAIL FROM:<a@b.example>", 250)
		c.cmd("RCPT TO:<c@d.example>", 250)
		c.cmd("DATA", 354)
		c.send("partial line\r\nmore")
		c.conn.Close()
		require.Eventually(t, func() bool { _, e := h.got(); return len(e) == 1 }, 5*time.Second, 5*time.Millisecond)
		_, errs := h.got()
		require.ErrorIs(t, errs[0], io.ErrUnexpectedEOF)
		require.Zero(t, srv.Stats().MessagesAccepted)
	})
}
