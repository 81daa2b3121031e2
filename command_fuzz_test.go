package smtpd

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// cfzReadReply reads one reply from r (checking the format as fzParseReplies does).
func cfzReadReply(t *testing.T, r *bufio.Reader) fzReply {
	t.Helper()
	var raw strings.Builder
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err, "reading a reply (got %q)", raw.String()+line)
		raw.WriteString(line)
		if len(line) >= 4 && line[3] == ' ' {
			break
		}
	}
	rs := fzParseReplies(t, raw.String())
	require.Len(t, rs, 1)
	return rs[0]
}

// FuzzCommandLine sends one arbitrary command line (no LF inside; CRLF appended)
// after EHLO and checks that it gets exactly one well-formed reply, and that the
// session still works afterwards: NOOP is answered "250 OK" and QUIT 221, after which
// the server closes with nothing more to say. A 221 or 421 reply to the line must
// close the connection instead. Two servers: pipelining off (EHLO and the line sent
// one by one, CRLFEnsure) and pipelining on (EHLO and the line in one write,
// CRLFStrict).
func FuzzCommandLine(f *testing.F) {
	for _, seed := range []string{
		"NOOP", "noop", "HELO x", "EHLO", "EHLO \x00", "MAIL FROM:<a@b>", "MAIL FROM:<a@b> BODY=8BITMIME",
		"MAIL FROM:<a@b> SMTPUTF8", "mail from:<ü@b>", "MAIL FROM:<\"a b\"@c>", "MAIL FROM:<@a,@b:c@d>",
		"MAIL FROM:<>", "MAIL FROM:a@b", "MAIL FROM:<a@b> X=Y", "RCPT TO:<b@c>", "DATA", "DATA x", "RSET",
		"RSET x", "QUIT", "QUIT x", "STARTTLS", "AUTH PLAIN", "AUTH LOGIN dXNlcg==", "VRFY x", "", " ",
		"\x00", "\r", "NOOP\r", "NO\rOP", "\xff\xfe", ".", "..", strings.Repeat("A", 2000),
		"MAIL FROM:<" + strings.Repeat("a", 70) + "@" + strings.Repeat("b", 300) + ">",
	} {
		f.Add(seed)
	}
	addrOff := serve(f, &Server{CRLFMode: CRLFEnsure})
	addrOn := serve(f, &Server{CRLFMode: CRLFStrict, Pipelining: true})

	f.Fuzz(func(t *testing.T, line string) {
		if strings.IndexByte(line, '\n') >= 0 || len(line) > 64<<10 {
			return
		}
		for _, pipelined := range []bool{false, true} {
			addr := addrOff
			if pipelined {
				addr = addrOn
			}
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			require.NoError(t, err)
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			r := bufio.NewReader(conn)
			write := func(s string) {
				_, err := conn.Write([]byte(s))
				require.NoError(t, err)
			}
			require.Equal(t, 220, cfzReadReply(t, r).code)
			if pipelined {
				write("EHLO fuzz.example\r\n" + line + "\r\n")
			} else {
				write("EHLO fuzz.example\r\n")
			}
			require.Equal(t, 250, cfzReadReply(t, r).code)
			if !pipelined {
				write(line + "\r\n")
			}
			got := cfzReadReply(t, r)
			if got.code == 221 || got.code == 421 {
				_, err := r.ReadByte()
				require.Error(t, err, "line %q: after %d the connection must close", line, got.code)
				conn.Close()
				continue
			}
			require.NotEqual(t, 354, got.code, "line %q: DATA without a transaction", line)
			write("NOOP\r\n")
			require.Equal(t, fzReply{250, "OK"}, cfzReadReply(t, r), "line %q (replied %v): NOOP after it", line, got)
			write("QUIT\r\n")
			require.Equal(t, 221, cfzReadReply(t, r).code, "line %q", line)
			_, err = r.ReadByte()
			require.Error(t, err, "line %q: nothing after 221", line)
			conn.Close()
		}
	})
}
