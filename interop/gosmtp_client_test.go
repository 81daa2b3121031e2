package interop

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"

	smtp "github.com/emersion/go-smtp"
	"github.com/midismtp/smtpd"
	"github.com/stretchr/testify/require"
)

// github.com/emersion/go-smtp's client (a test-only dependency) against the server.
//
// go-smtp's Client (v0.26.0) has no BDAT: Data always sends DATA, CHUNKING offered or
// not, and no exported method sends a raw command. The BDAT tests therefore let
// go-smtp greet and open the transaction (LHLO/EHLO, MAIL with its SIZE= and DSN
// parameters, RCPT) and then send BDAT themselves on the same connection — between
// two replies the client holds no unread input, so the reply stream stays in step
// and go-smtp can QUIT afterwards.

// gosmtpDial connects go-smtp's client (LMTP's when lmtp) to addr and greets; it
// returns the client and its connection.
func gosmtpDial(t *testing.T, addr string, lmtp bool) (*smtp.Client, net.Conn) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	var c *smtp.Client
	if lmtp {
		c = smtp.NewClientLMTP(conn)
	} else {
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout, c.SubmissionTimeout = 10*time.Second, 20*time.Second
	require.NoError(t, c.Hello("gosmtp.test"))
	return c, conn
}

// gosmtpChunks cuts msg into chunks of the sizes given, cycled; every fourth chunk
// instead ends right after the next CR, so that a CRLF is split between chunks.
func gosmtpChunks(msg []byte, sizes []int) [][]byte {
	var chunks [][]byte
	for i := 0; len(msg) > 0; i++ {
		n := sizes[i%len(sizes)]
		if cr := bytes.IndexByte(msg, '\r'); i%4 == 3 && cr >= 0 {
			n = cr + 1
		}
		n = min(n, len(msg))
		chunks = append(chunks, msg[:n])
		msg = msg[n:]
	}
	return chunks
}

// gosmtpBDAT sends chunks with BDAT on conn, the last with LAST. Chunk by chunk,
// each reply is read before the next chunk; pipelined, everything is written at
// once and then the replies are read. Each non-LAST chunk must get
// "250 2.0.0 <n> octets received"; the replies to LAST (one, or with LMTP one per
// recipient: finals) are returned as "code text".
func gosmtpBDAT(t *testing.T, conn net.Conn, chunks [][]byte, pipelined bool, finals int) []string {
	t.Helper()
	r := textproto.NewReader(bufio.NewReader(conn))
	command := func(i int) []byte {
		line := "BDAT " + strconv.Itoa(len(chunks[i]))
		if i == len(chunks)-1 {
			line += " LAST"
		}
		return append([]byte(line+"\r\n"), chunks[i]...)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	defer conn.SetDeadline(time.Time{})
	readChunkReply := func(i int) {
		code, text, err := r.ReadResponse(250)
		require.NoError(t, err, "chunk %d of %d", i, len(chunks))
		require.Equal(t, 250, code)
		require.Equal(t, fmt.Sprintf("2.0.0 %d octets received", len(chunks[i])), text)
	}
	if pipelined {
		var all bytes.Buffer
		for i := range chunks {
			all.Write(command(i))
		}
		_, err := conn.Write(all.Bytes())
		require.NoError(t, err)
	}
	for i := range chunks[:len(chunks)-1] {
		if !pipelined {
			_, err := conn.Write(command(i))
			require.NoError(t, err)
		}
		readChunkReply(i)
	}
	if !pipelined {
		_, err := conn.Write(command(len(chunks) - 1))
		require.NoError(t, err)
	}
	var out []string
	for range finals {
		code, text, err := r.ReadResponse(0) // 0: any code
		require.NoError(t, err)
		out = append(out, strconv.Itoa(code)+" "+text)
	}
	return out
}

// gosmtpLines returns a CRLF message of about size bytes: headers, then lines of
// every length from 0 to 997 octets, lines starting with dots and a lone dot.
func gosmtpLines(id string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: a@example.com\r\nTo: b@example.com\r\nSubject: go-smtp %s\r\nMessage-Id: <%s@example.com>\r\n\r\n", id, id)
	b.WriteString(".\r\n..\r\n.leading dot\r\n\r\n")
	for i := 0; b.Len() < size; i++ {
		n := (i * 131) % 998
		line := strings.Repeat(string(rune('A'+i%26)), n)
		if i%7 == 0 && n > 0 {
			line = "." + line[1:]
		}
		b.WriteString(line + "\r\n")
	}
	b.WriteString("last line\r\n")
	return b.Bytes()
}

// TestGoSMTPSendMail: go-smtp's ordinary path, SendMail, against a server offering
// CHUNKING: it sends DATA (it has no BDAT), dot-stuffed, and the message is stored
// as written, with the SIZE= it declared.
func TestGoSMTPSendMail(t *testing.T) {
	h, tr, port := postfixServe(t, func(s *smtpd.Server) {
		s.Chunking, s.EnhancedStatusCodes, s.DSN, s.Internationalization = true, true, true, true
	})
	c, _ := gosmtpDial(t, "127.0.0.1:"+strconv.Itoa(port), false)
	ok, _ := c.Extension("CHUNKING")
	require.True(t, ok, "CHUNKING not advertised")
	msg := gosmtpLines("sendmail", 64<<10)
	require.NoError(t, c.SendMail("a@example.com", []string{"b@example.com"}, bytes.NewReader(msg)))
	require.NoError(t, c.Quit())
	m := postfixOnlyMessage(t, h)
	require.Equal(t, string(msg), m.Data)
	require.Equal(t, []string{"b@example.com"}, m.Envelope.To)
	require.Equal(t, "8bitmime", m.Envelope.EncodingBody) // go-smtp sends BODY=8BITMIME whenever offered
	require.Empty(t, tr.received("BDAT"), "go-smtp sent BDAT: update this test and the BDAT ones")
	require.Len(t, tr.received("DATA"), 1)
}

// TestGoSMTPBDAT: go-smtp opens the transaction (with SIZE=), BDAT carries the
// message: 3 MiB in large chunks of odd sizes, and a message cut at many small odd
// sizes so that chunks end inside lines and between a CR and its LF, chunk by chunk
// and pipelined. Each is stored byte for byte.
func TestGoSMTPBDAT(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size      int
		sizes     []int
		pipelined bool
	}{
		{"3 MiB", 3 << 20, []int{1<<20 + 3, 65537, 1, 999_983, 17}, false},
		{"odd splits", 40 << 10, []int{1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 997}, false},
		{"odd splits pipelined", 40 << 10, []int{1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 997}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, tr, port := postfixServe(t, func(s *smtpd.Server) {
				s.Chunking, s.EnhancedStatusCodes, s.Pipelining = true, true, tc.pipelined
			})
			c, conn := gosmtpDial(t, "127.0.0.1:"+strconv.Itoa(port), false)
			ok, _ := c.Extension("CHUNKING")
			require.True(t, ok, "CHUNKING not advertised")
			msg := gosmtpLines(strings.ReplaceAll(tc.name, " ", "-"), tc.size)
			chunks := gosmtpChunks(msg, tc.sizes)
			crlfCuts, inLine := 0, 0
			for _, ch := range chunks[:len(chunks)-1] {
				switch ch[len(ch)-1] {
				case '\r':
					crlfCuts++
				case '\n':
				default:
					inLine++
				}
			}
			require.Positive(t, crlfCuts, "no chunk ends between CR and LF")
			require.Positive(t, inLine, "no chunk ends inside a line")
			t.Logf("%d chunks, %d cut between CR and LF, %d inside a line", len(chunks), crlfCuts, inLine)

			require.NoError(t, c.Mail("a@example.com", &smtp.MailOptions{Size: int64(len(msg))}))
			require.NoError(t, c.Rcpt("b@example.com", nil))
			final := gosmtpBDAT(t, conn, chunks, tc.pipelined, 1)
			require.Equal(t, []string{"250 2.0.0 Requested mail action okay, completed"}, final)
			require.NoError(t, c.Quit())

			m := postfixOnlyMessage(t, h)
			require.Equal(t, len(msg), len(m.Data))
			require.True(t, bytes.Equal(msg, []byte(m.Data)), "stored message differs from what was sent")
			require.Equal(t, len(msg), m.Envelope.Size)
			require.Equal(t, 1, h.starts())
			require.Empty(t, tr.received("DATA"))
			mails := tr.received("MAIL")
			require.Len(t, mails, 1)
			size, _ := postfixParam(mails[0], "SIZE")
			require.Equal(t, strconv.Itoa(len(msg)), size)
		})
	}
}

// TestGoSMTPSizeAtMail: go-smtp reads the SIZE limit from EHLO but does not check it
// itself: MAIL FROM with a larger SIZE= gets 552 5.3.4 before any data, and the
// session goes on.
func TestGoSMTPSizeAtMail(t *testing.T) {
	h, _, port := postfixServe(t, func(s *smtpd.Server) {
		s.Chunking, s.EnhancedStatusCodes, s.MaxMessageSize = true, true, 2000
	})
	c, _ := gosmtpDial(t, "127.0.0.1:"+strconv.Itoa(port), false)
	limit, ok := c.MaxMessageSize()
	require.True(t, ok)
	require.Equal(t, 2000, limit)
	err := c.Mail("a@example.com", &smtp.MailOptions{Size: 10 << 10})
	var se *smtp.SMTPError
	require.ErrorAs(t, err, &se)
	require.Equal(t, 552, se.Code)
	require.Equal(t, smtp.EnhancedCode{5, 3, 4}, se.EnhancedCode)
	require.Zero(t, h.starts())
	// Within the limit the same session delivers.
	msg := gosmtpLines("small", 500)
	require.NoError(t, c.Mail("a@example.com", &smtp.MailOptions{Size: int64(len(msg))}))
	require.NoError(t, c.Rcpt("b@example.com", nil))
	w, err := c.Data()
	require.NoError(t, err)
	_, err = w.Write(msg)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.NoError(t, c.Quit())
	require.Equal(t, string(msg), postfixOnlyMessage(t, h).Data)
}

// TestGoSMTPDSN: go-smtp's DSN parameters, xtext-encoded by it, arrive decoded in
// the Envelope.
func TestGoSMTPDSN(t *testing.T) {
	h, tr, port := postfixServe(t, func(s *smtpd.Server) { s.DSN, s.EnhancedStatusCodes = true, true })
	c, _ := gosmtpDial(t, "127.0.0.1:"+strconv.Itoa(port), false)
	require.NoError(t, c.Mail("a@example.com", &smtp.MailOptions{Return: smtp.DSNReturnHeaders, EnvelopeID: "env+id=1"}))
	require.NoError(t, c.Rcpt("b@example.com", &smtp.RcptOptions{
		Notify:                []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyDelayed},
		OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "orig+1@example.com"}))
	w, err := c.Data()
	require.NoError(t, err)
	msg := gosmtpLines("dsn", 300)
	_, err = w.Write(msg)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.NoError(t, c.Quit())
	m := postfixOnlyMessage(t, h)
	require.Equal(t, string(msg), m.Data)
	require.Equal(t, "HDRS", m.Envelope.DSNRet)
	require.Equal(t, "env+id=1", m.Envelope.DSNEnvID)
	require.Equal(t, []smtpd.RecipientDSN{{Notify: []string{"SUCCESS", "DELAY"}, ORcpt: "RFC822;orig+1@example.com"}}, m.Envelope.DSNRecipients)
	t.Logf("go-smtp sent %q and %q", tr.received("MAIL"), tr.received("RCPT"))
}

// TestGoSMTPLMTP: go-smtp's LMTP client gets one reply per recipient — one refused
// by the handler's RecipientHandler — after DATA, and (BDAT driven on its
// connection) after BDAT LAST.
func TestGoSMTPLMTP(t *testing.T) {
	h, tr, port := postfixServe(t, func(s *smtpd.Server) {
		s.LMTP, s.Chunking, s.EnhancedStatusCodes = true, true, true
	})
	c, conn := gosmtpDial(t, "127.0.0.1:"+strconv.Itoa(port), true)
	require.NotEmpty(t, tr.received("LHLO"))
	msg := gosmtpLines("lmtp", 8<<10)

	// DATA: go-smtp's own per-recipient reading.
	require.NoError(t, c.Mail("a@example.com", nil))
	require.NoError(t, c.Rcpt("good@example.com", nil))
	require.NoError(t, c.Rcpt("bad@example.com", nil))
	w, err := c.Data()
	require.NoError(t, err)
	_, err = w.Write(msg)
	require.NoError(t, err)
	resp, err := w.CloseWithLMTPResponse()
	var lerr smtp.LMTPDataError
	require.ErrorAs(t, err, &lerr)
	require.Len(t, lerr, 1)
	bad := lerr["bad@example.com"]
	require.NotNil(t, bad, "%v", lerr)
	require.Equal(t, 550, bad.Code)
	require.Equal(t, smtp.EnhancedCode{5, 1, 1}, bad.EnhancedCode)
	require.Equal(t, "no such user", bad.Message)
	require.Len(t, resp, 1)
	require.Equal(t, "2.0.0 OK <good@example.com> delivered", resp["good@example.com"].StatusText)

	// BDAT: the replies after LAST, in RCPT order.
	require.NoError(t, c.Mail("a@example.com", nil))
	require.NoError(t, c.Rcpt("bad@example.com", nil))
	require.NoError(t, c.Rcpt("good@example.com", nil))
	final := gosmtpBDAT(t, conn, gosmtpChunks(msg, []int{4093, 1, 333}), false, 2)
	require.Equal(t, []string{"550 5.1.1 no such user", "250 2.0.0 OK <good@example.com> delivered"}, final)
	require.NoError(t, c.Quit())

	msgs := h.messages()
	require.Len(t, msgs, 2)
	require.Equal(t, []string{"good@example.com", "bad@example.com"}, msgs[0].Envelope.To)
	require.Equal(t, []string{"bad@example.com", "good@example.com"}, msgs[1].Envelope.To)
	for _, m := range msgs {
		require.Equal(t, string(msg), m.Data)
	}
	require.Equal(t, 2, h.starts())
}
