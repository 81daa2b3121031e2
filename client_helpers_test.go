package smtpd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// client is a raw SMTP client over TCP: it writes bytes exactly as given and reads
// replies, every read and write bounded by testTimeout.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// dial connects to addr; nothing is read yet. The connection is closed at the end
// of the test.
func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, testTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// dialFrom connects to addr from the local address ip (an IP of 127/8: 127.0.0.2,
// 127.0.0.3 ... for clients from other addresses); nothing is read yet. Where the
// system cannot bind ip (EADDRNOTAVAIL: 127.0.0.2 is not configured on every
// system) the test is skipped, or fails under CI (clientsMissing); any other dial
// error fails it. The connection is closed at the end of the test.
func dialFrom(t *testing.T, addr, ip string) *client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		clientsMissing(t, fmt.Sprintf("cannot dial from %s here: %v", ip, err))
	}
	require.NoError(t, err, "dial from %s", ip)
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// dialGreeted dials and reads the 220 banner.
func dialGreeted(t *testing.T, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.expect(220)
	return c
}

// protoGreeted dials addr, checks the default banner and sends EHLO.
func protoGreeted(t *testing.T, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.protoExpect(220, protoTextBanner)
	c.cmd("EHLO client.example", 250)
	return c
}

// send writes raw bytes.
func (c *client) send(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(testTimeout))
	_, err := io.WriteString(c.conn, s)
	require.NoError(c.t, err)
}

// reply reads one (possibly multi-line) reply: its code and its lines' texts joined by "\n".
func (c *client) reply() (int, string) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	var texts []string
	for {
		line, err := c.r.ReadString('\n')
		require.NoError(c.t, err, "reading a reply (got so far %q)", texts)
		require.True(c.t, strings.HasSuffix(line, "\r\n"), "reply line %q not CRLF-ended", line)
		line = strings.TrimSuffix(line, "\r\n")
		require.GreaterOrEqual(c.t, len(line), 4, "short reply line %q", line)
		code, err := strconv.Atoi(line[:3])
		require.NoError(c.t, err, "reply line %q", line)
		texts = append(texts, line[4:])
		if line[3] == ' ' {
			return code, strings.Join(texts, "\n")
		}
		require.Equal(c.t, byte('-'), line[3], "reply line %q", line)
	}
}

// rawLine reads one reply line exactly as sent, CRLF included.
func (c *client) rawLine() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	line, err := c.r.ReadString('\n')
	require.NoError(c.t, err, "reading a raw reply line (got %q)", line)
	return line
}

// expect reads a reply and checks its code; it returns the text.
func (c *client) expect(code int) string {
	c.t.Helper()
	got, text := c.reply()
	require.Equal(c.t, code, got, "reply text: %q", text)
	return text
}

// cmd sends line with CRLF and expects code; it returns the text.
func (c *client) cmd(line string, code int) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(code)
}

// protoExpect reads a reply and checks its code and its whole text.
func (c *client) protoExpect(code int, text string) {
	c.t.Helper()
	got, gotText := c.reply()
	require.Equal(c.t, code, got, "reply text %q", gotText)
	require.Equal(c.t, text, gotText)
}

// protoCmd sends line with CRLF and checks the reply's code and whole text.
func (c *client) protoCmd(line string, code int, text string) {
	c.t.Helper()
	c.send(line + "\r\n")
	c.protoExpect(code, text)
}

// ehloLines sends EHLO and returns the reply lines.
func (c *client) ehloLines(domain string) []string {
	c.t.Helper()
	return strings.Split(c.cmd("EHLO "+domain, 250), "\n")
}

// sendMessage runs MAIL, RCPT, DATA with a one-line body and expects 250 at the end.
func (c *client) sendMessage(from, to string) {
	c.t.Helper()
	c.cmd("MAIL FROM:<"+from+">", 250)
	c.cmd("RCPT TO:<"+to+">", 250)
	c.cmd("DATA", 354)
	c.send("Subject: t\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
}

// expectClosed checks that the server closes the connection (reading gives an error).
func (c *client) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	b, err := c.r.ReadByte()
	require.Error(c.t, err, "expected the connection closed, read %q", b)
}

// expectSilent checks that nothing arrives within d (a client waiting for a
// processing slot gets no banner yet): the read must time out.
func (c *client) expectSilent(d time.Duration) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	b, err := c.r.ReadByte()
	require.Error(c.t, err, "got byte %q, expected nothing yet", b)
	var ne net.Error
	require.ErrorAs(c.t, err, &ne)
	require.True(c.t, ne.Timeout(), "expected a read timeout, got %v", err)
}

// readToEnd reads everything until the server closes the connection: EOF, or a
// reset after the data. Any other error, a timeout included, fails the test.
func (c *client) readToEnd() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(c.r)
	if err != nil {
		require.ErrorIs(c.t, err, syscall.ECONNRESET, "reading to the end; got %q", b)
	}
	return string(b)
}

// readUntilClosed reads from r (conn's reader, maybe over TLS) whatever the server
// still sends until the connection ends however it does, and returns it; only a
// connection still open after testTimeout fails the test.
func readUntilClosed(t *testing.T, conn net.Conn, r io.Reader) []byte {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		require.Failf(t, "connection not closed", "still open after %v (read %q)", testTimeout, b)
	}
	return b
}
