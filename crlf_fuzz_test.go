package smtpd

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Shared by the fuzz targets that drive a server (FuzzDataReader here, FuzzCommandLine
// in command_fuzz_test.go). serve, called in a fuzz function's body, runs once per
// fuzz worker, before f.Fuzz; its server serves every input of that worker.

var fzSeq atomic.Uint64

// fzHelo is a HELO name unique in the process, to find a session's messages.
func fzHelo() string { return "fz" + strconv.FormatUint(fzSeq.Add(1), 10) + ".example" }

type fzReply struct {
	code int
	text string
}

// fzParseReplies splits what the server sent into replies, failing on any line
// that is not a well-formed reply line ("ddd-text" or "ddd text", CRLF-ended, the
// same code on every line of a reply).
func fzParseReplies(t *testing.T, raw string) []fzReply {
	t.Helper()
	var out []fzReply
	var texts []string
	cur := -1
	for raw != "" {
		i := strings.Index(raw, "\r\n")
		require.GreaterOrEqual(t, i, 0, "reply data not CRLF-ended: %q", raw)
		line := raw[:i]
		raw = raw[i+2:]
		require.GreaterOrEqual(t, len(line), 4, "short reply line %q", line)
		require.NotContains(t, line, "\n", "LF inside a reply line %q", line)
		code, err := strconv.Atoi(line[:3])
		require.NoError(t, err, "reply line %q", line)
		require.True(t, code >= 200 && code <= 599, "reply code out of range: %q", line)
		require.True(t, line[0] != '0' && line[0] != '-' && line[0] != '+', "reply code %q", line)
		if cur >= 0 {
			require.Equal(t, cur, code, "a multi-line reply changed its code: %q", line)
		}
		texts = append(texts, line[4:])
		switch line[3] {
		case '-':
			cur = code
		case ' ':
			out = append(out, fzReply{code, strings.Join(texts, "\n")})
			texts, cur = nil, -1
		default:
			require.Failf(t, "bad reply separator", "%q", line)
		}
	}
	require.Equal(t, -1, cur, "unfinished multi-line reply")
	return out
}

// fzSession dials addr, writes the chunks (no pause between them) and returns
// every reply the server sent until it closed the connection.
func fzSession(t *testing.T, addr string, chunks ...string) []fzReply {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	wrote := make(chan error, 1)
	go func() { // write while reading, so neither side can block the other
		for _, c := range chunks {
			if _, err := io.WriteString(conn, c); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	raw, err := io.ReadAll(conn)
	require.NoError(t, err, "reading replies (got %q)", raw)
	require.NoError(t, <-wrote)
	return fzParseReplies(t, string(raw))
}

func fzCodes(rs []fzReply) []int {
	codes := make([]int, len(rs))
	for i, r := range rs {
		codes[i] = r.code
	}
	return codes
}

// fzModelData is the reference model of the stored message: data are the raw bytes
// between 354 and the terminator's ".\r\n" (every line LF-ended). Each line is
// dot-unstuffed (a leading "." with more text after it is removed); CRLFEnsure
// stores CRLF for every line end. bare reports a bare CR or LF.
func fzModelData(data string, mode CRLFMode) (stored string, bare bool) {
	var b strings.Builder
	for data != "" {
		i := strings.IndexByte(data, '\n')
		line := data[:i+1]
		data = data[i+1:]
		text, end := line[:len(line)-1], "\n"
		if strings.HasSuffix(text, "\r") {
			text, end = text[:len(text)-1], "\r\n"
		}
		if end == "\n" || strings.Contains(text, "\r") {
			bare = true
		}
		if len(text) > 1 && text[0] == '.' {
			text = text[1:]
		}
		if mode == CRLFEnsure {
			end = "\r\n"
		}
		b.WriteString(text)
		b.WriteString(end)
	}
	return b.String(), bare
}

// fzStuff dot-stuffs a CRLF-clean message (RFC 5321 4.5.2).
func fzStuff(m string) string {
	var b strings.Builder
	for m != "" {
		i := strings.Index(m, "\r\n")
		line := m[:i+2]
		m = m[i+2:]
		if line[0] == '.' {
			b.WriteByte('.')
		}
		b.WriteString(line)
	}
	return b.String()
}

// FuzzDataReader sends each input as message data through the real server (one
// loopback server per CRLF mode, started once per fuzz worker, pipelining on, the
// whole session in one or two writes) and checks:
//   - every DATA gets exactly one reply to its end (250, or in CRLFStrict with a bare
//     CR/LF 500), the next reply is QUIT's 221, and nothing else is answered;
//   - at most one message per DATA, and its bytes are the reference model's;
//   - for CRLF-clean input, dot-stuffing the message and sending it gives back the
//     original message (dot-unstuffing is the exact inverse).
//
// An input that contains a real <CRLF>.<CRLF> is cut there (what follows it would be
// commands, not data).
func FuzzDataReader(f *testing.F) {
	for _, seed := range []string{
		"", "Subject: x\r\n\r\nbody", ".", "..", ".\r\n", "..\r\n", ".x", "\r\n..\r\n",
		"first\n.\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nsmuggled",
		"first\n.\r\nx", "first\r\n.\nx", "first\r.\rx", "first\r.\r\nx", "first\n.\rx",
		"first\r.\nx", "first\r\n.\rx", "first\r\n.\r\r\nx", "first\r\r\n.\r\r\nx",
		"a\r\n.\r\nMAIL FROM:<a@b>\r\n", "\r", "\n", "\r\r\n", "\x00\xff", "a\rb\nc",
		strings.Repeat("x", 5000), strings.Repeat("y", 4094) + "\r\n.", strings.Repeat(".\r\n", 10),
	} {
		f.Add([]byte(seed), uint16(len(seed)/2))
	}
	h := newSmugHandler()
	var addrs [3]string
	for i, mode := range smugModes {
		addrs[i] = serve(f, &Server{Handler: h, CRLFMode: mode, Pipelining: true})
	}

	// transaction sends data (already ended by "\r\n.\r\n" as needed) after a
	// pipelined envelope, cut in two writes at cut, and returns the end-of-data
	// reply and the messages the session delivered.
	transaction := func(t *testing.T, addr, data string, cut int) (fzReply, []recorded) {
		t.Helper()
		helo := fzHelo()
		head := "EHLO " + helo + "\r\n" + smugEnvelope
		cut = min(cut, len(data))
		rs := fzSession(t, addr, head+data[:cut], data[cut:]+"QUIT\r\n")
		codes := fzCodes(rs)
		require.Len(t, codes, 7, "data %q: replies %v", data, codes)
		codes[5] = 0 // the end-of-data reply, checked by the caller
		require.Equal(t, []int{220, 250, 250, 250, 354, 0, 221}, codes,
			"data %q: exactly one reply to the end of data, then QUIT's", data)
		return rs[5], h.take(helo)
	}

	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		if len(in) > 16<<10 {
			return
		}
		input := string(in)
		// Cut the input at its first real terminator, if any (see above).
		if p := strings.Index("\r\n"+input+"\r\n.\r\n", "\r\n.\r\n"); p >= 2 {
			input = input[:p-2]
		} else {
			input = "" // the input starts with ".\r\n": an empty message
		}
		sent := input + "\r\n.\r\n"
		require.Equal(t, len(sent)-3, strings.Index("\r\n"+sent, "\r\n.\r\n"), "one terminator, at the end")
		raw := input + "\r\n" // the data lines, without the ".\r\n"
		for i, mode := range smugModes {
			end, msgs := transaction(t, addrs[i], sent, int(cut))
			want, bare := fzModelData(raw, mode)
			if mode == CRLFStrict && bare {
				require.Equal(t, fzReply{500, smugReplyCRLF}, end, "%v: %q", mode, raw)
				require.Empty(t, msgs, "%v: %q", mode, raw)
				continue
			}
			require.Equal(t, fzReply{250, smugReplyOK}, end, "%v: %q", mode, raw)
			require.Len(t, msgs, 1, "%v: one message for one DATA: %q", mode, raw)
			require.Equal(t, want, msgs[0].Data, "%v: stored bytes of %q", mode, raw)
		}

		// Dot-stuffing round trip for a CRLF-clean message.
		if smugHasBare(string(in)) {
			return
		}
		m := string(in)
		if m != "" && !strings.HasSuffix(m, "\r\n") {
			m += "\r\n"
		}
		end, msgs := transaction(t, addrs[2], fzStuff(m)+".\r\n", int(cut))
		require.Equal(t, fzReply{250, smugReplyOK}, end, "stuffed %q", m)
		require.Len(t, msgs, 1, "stuffed %q", m)
		require.Equal(t, m, msgs[0].Data, "dot-unstuffing must invert dot-stuffing")
	})
}

// TestFuzzModelData pins the reference model to hand-checked cases, so the fuzz
// target's oracle is itself tested.
func TestFuzzModelData(t *testing.T) {
	tests := []struct {
		raw, ensure, leave string
		bare               bool
	}{
		{"a\r\n", "a\r\n", "a\r\n", false},
		{"a\n", "a\r\n", "a\n", true},
		{"..\r\n.x\r\n", ".\r\nx\r\n", ".\r\nx\r\n", false},
		{".\n\r\n", ".\r\n\r\n", ".\n\r\n", true},
		{".\r\r\n", "\r\r\n", "\r\r\n", true},
	}
	for _, tt := range tests {
		got, bare := fzModelData(tt.raw, CRLFEnsure)
		require.Equal(t, tt.ensure, got, fmt.Sprintf("%q", tt.raw))
		require.Equal(t, tt.bare, bare)
		got, _ = fzModelData(tt.raw, CRLFLeave)
		require.Equal(t, tt.leave, got, fmt.Sprintf("%q", tt.raw))
	}
	require.Equal(t, "..\r\n..x\r\ny\r\n", fzStuff(".\r\n.x\r\ny\r\n"))
}
