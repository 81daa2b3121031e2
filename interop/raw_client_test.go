package interop

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

// rawClient is a raw SMTP client from a chosen loopback address, for servers that
// smtptest.Conn cannot reach (those behind HAProxy): it writes lines as given and
// reads replies, every read and write bounded by testTimeout.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// dialFrom connects to addr from the local address ip (an IP of 127/8: 127.0.0.2,
// 127.0.0.3 ... for clients from other addresses); nothing is read yet. Where the
// system cannot bind ip (EADDRNOTAVAIL: 127.0.0.2 is not configured on every
// system) the test is skipped, or fails under CI (clientsMissing); any other dial
// error fails it. The connection is closed at the end of the test.
func dialFrom(t *testing.T, addr, ip string) *rawClient {
	t.Helper()
	conn, err := dialFromErr(addr, ip)
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		clientsMissing(t, fmt.Sprintf("cannot dial from %s here: %v", ip, err))
	}
	require.NoError(t, err, "dial from %s", ip)
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func dialFromErr(addr, ip string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return d.Dial("tcp", addr)
}

// bannerFrom connects to addr from ip, reads the first reply and closes: its code,
// or the error that kept it from coming. It reports instead of failing the test,
// for conditions polled off the test's goroutine.
func bannerFrom(addr, ip string) (int, error) {
	conn, err := dialFromErr(addr, ip)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(testTimeout))
	code, _, err := readReply(bufio.NewReader(conn))
	return code, err
}

// readReply reads one (possibly multi-line) reply: its code and its lines' texts
// joined by "\n". Every line must end in CRLF and carry the same code.
func readReply(r *bufio.Reader) (int, string, error) {
	var texts []string
	code := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, "", fmt.Errorf("reading a reply (got so far %q, then %q): %w", texts, line, err)
		}
		body, ok := strings.CutSuffix(line, "\r\n")
		if !ok || len(body) < 4 || (body[3] != ' ' && body[3] != '-') {
			return 0, "", fmt.Errorf("malformed reply line %q", line)
		}
		c, err := strconv.Atoi(body[:3])
		if err != nil || (code != 0 && c != code) {
			return 0, "", fmt.Errorf("reply line %q: bad or changing code", line)
		}
		code = c
		texts = append(texts, body[4:])
		if body[3] == ' ' {
			return code, strings.Join(texts, "\n"), nil
		}
	}
}

// expect reads a reply, checks its code and returns its text.
func (c *rawClient) expect(code int) string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	got, text, err := readReply(c.r)
	require.NoError(c.t, err)
	require.Equal(c.t, code, got, "reply text: %q", text)
	return text
}

// cmd sends line with CRLF and expects code; it returns the text.
func (c *rawClient) cmd(line string, code int) string {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(testTimeout))
	_, err := io.WriteString(c.conn, line+"\r\n")
	require.NoError(c.t, err)
	return c.expect(code)
}

// expectClosed checks that the server closes the connection (reading gives an
// error, not a timeout, and no byte).
func (c *rawClient) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	b, err := c.r.ReadByte()
	require.Error(c.t, err, "expected the connection closed, read %q", b)
	var ne net.Error
	require.False(c.t, errors.As(err, &ne) && ne.Timeout(), "the connection is still open after %v", testTimeout)
}
