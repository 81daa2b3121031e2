package smtptest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// maxReply bounds the bytes one reply may have before Reply gives up on it.
const maxReply = 1 << 20

// Conn is a raw SMTP client connection for protocol-level tests: it sends bytes
// exactly as given and checks that every reply is well-formed (RFC 5321 4.2:
// three digits, "-" or a space, text, CRLF; one code per multi-line reply).
//
// The helpers build on one another, one step each: Server.Dial connects,
// Server.DialGreeted also reads the 220 banner; Send writes, Reply reads a reply,
// Expect also checks its code, Cmd also sends the command line first; StartTLS
// runs STARTTLS and continues over TLS; ExpectClosed checks that the server
// closed the connection.
//
// Each failure fails the test with t.Fatal, so a Conn belongs to the goroutine
// of the test that made it. Every read and write has a deadline (Timeout), so a
// test never hangs. The connection is closed at the end of the test.
type Conn struct {
	// Timeout bounds each write and each reply read; DefaultTimeout when the Conn
	// is made.
	Timeout time.Duration

	t    testing.TB
	ts   *Server
	conn net.Conn // the TCP connection, or the TLS one over it
	r    *bufio.Reader
}

// Dial connects to the server; nothing is read yet, not even the banner. The
// connection is closed at the end of the test.
func (ts *Server) Dial(t testing.TB) *Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", ts.Addr, DefaultTimeout)
	if err != nil {
		t.Fatalf("smtptest: dial %s: %v", ts.Addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &Conn{Timeout: DefaultTimeout, t: t, ts: ts, conn: conn, r: bufio.NewReader(conn)}
}

// DialGreeted connects to the server and reads its banner, which must be a 220.
func (ts *Server) DialGreeted(t testing.TB) *Conn {
	t.Helper()
	c := ts.Dial(t)
	c.Expect(220)
	return c
}

// NetConn returns the connection: the TCP one, or the *tls.Conn after StartTLS.
// Bytes already read into the Conn's buffer are not in it.
func (c *Conn) NetConn() net.Conn { return c.conn }

// Close closes the connection without QUIT.
func (c *Conn) Close() { c.conn.Close() }

// Send writes raw as it is: add "\r\n" to end a command line.
func (c *Conn) Send(raw string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(c.Timeout))
	if _, err := io.WriteString(c.conn, raw); err != nil {
		c.t.Fatalf("smtptest: sending %q: %v", excerpt(raw), err)
	}
}

// Reply reads one reply and returns its code and its text: the texts of its
// lines joined by "\n". A malformed reply, a closed connection or no complete
// reply within Timeout fails the test.
func (c *Conn) Reply() (code int, text string) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(c.Timeout))
	var texts []string
	size := 0
	for {
		line, err := c.r.ReadString('\n')
		size += len(line)
		switch {
		case err != nil && len(texts) == 0 && line == "":
			c.t.Fatalf("smtptest: reading a reply: %v", err)
		case err != nil:
			c.t.Fatalf("smtptest: reading a reply: %v (after %q)", err, joinExcerpt(texts, line))
		case size > maxReply:
			c.t.Fatalf("smtptest: reply over %d bytes", maxReply)
		}
		body, ok := strings.CutSuffix(line, "\r\n")
		if !ok || strings.ContainsAny(body, "\r\n") {
			c.t.Fatalf("smtptest: reply line %q does not end with its only CRLF", excerpt(line))
		}
		n, last, lineText, ok := parseReplyLine(body)
		switch {
		case !ok:
			c.t.Fatalf("smtptest: malformed reply line %q", excerpt(line))
		case len(texts) > 0 && n != code:
			c.t.Fatalf("smtptest: reply line %q in a %d reply", excerpt(line), code)
		}
		code = n
		texts = append(texts, lineText)
		if last {
			return code, strings.Join(texts, "\n")
		}
	}
}

// parseReplyLine splits a reply line without its CRLF: "250-text", "250 text" or
// "250" (RFC 5321 4.2: the text is optional).
func parseReplyLine(line string) (code int, last bool, text string, ok bool) {
	if len(line) < 3 || line[0] < '2' || line[0] > '5' {
		return 0, false, "", false
	}
	code, err := strconv.Atoi(line[:3])
	if err != nil || line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9' {
		return 0, false, "", false
	}
	switch {
	case len(line) == 3:
		return code, true, "", true
	case line[3] == ' ':
		return code, true, line[4:], true
	case line[3] == '-':
		return code, false, line[4:], true
	}
	return 0, false, "", false
}

// Expect reads a reply, checks that its code is code, and returns its text.
func (c *Conn) Expect(code int) string {
	c.t.Helper()
	got, text := c.Reply()
	if got != code {
		c.t.Fatalf("smtptest: got reply %d %q, want %d", got, text, code)
	}
	return text
}

// Cmd sends line followed by CRLF, expects a reply with code, and returns its text.
func (c *Conn) Cmd(line string, code int) string {
	c.t.Helper()
	c.Send(line + "\r\n")
	got, text := c.Reply()
	if got != code {
		c.t.Fatalf("smtptest: %q: got reply %d %q, want %d", excerpt(line), got, text, code)
	}
	return text
}

// StartTLS sends STARTTLS, expects 220, and makes the TLS handshake with cfg (nil
// means the server's ClientTLSConfig); the Conn then speaks over TLS. Like every
// STARTTLS client, the test must send EHLO again. Bytes the server sent after its
// 220, before the handshake, fail the test.
func (c *Conn) StartTLS(cfg *tls.Config) {
	c.t.Helper()
	c.Cmd("STARTTLS", 220)
	if n := c.r.Buffered(); n > 0 {
		b, _ := c.r.Peek(n)
		c.t.Fatalf("smtptest: the server sent %q after its 220 to STARTTLS", excerpt(string(b)))
	}
	if cfg == nil {
		cfg = c.ts.ClientTLSConfig()
	}
	tc := tls.Client(c.conn, cfg)
	c.conn.SetDeadline(time.Now().Add(c.Timeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("smtptest: TLS handshake: %v", err)
	}
	c.conn.SetDeadline(time.Time{})
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

// ExpectClosed checks that the server closes the connection with nothing more to
// read: the test fails when bytes arrive (read the last reply first) or the
// connection is still open after Timeout.
func (c *Conn) ExpectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(c.Timeout))
	buf := make([]byte, 512)
	n, err := c.r.Read(buf)
	var ne net.Error
	switch {
	case n > 0:
		c.t.Fatalf("smtptest: want the connection closed, read %q", excerpt(string(buf[:n])))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return
	case errors.As(err, &ne) && ne.Timeout():
		c.t.Fatalf("smtptest: the connection is still open after %v", c.Timeout)
	default:
		c.t.Fatalf("smtptest: want the connection closed by the server: %v", err)
	}
}

// excerpt shortens s for a failure message.
func excerpt(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func joinExcerpt(texts []string, partial string) string {
	return excerpt(strings.Join(append(texts, partial), "\n"))
}
