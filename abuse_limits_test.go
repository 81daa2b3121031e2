package smtpd

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The tests of the abuse limits (DESIGN.md, "Internet-facing"): each limit reaches
// its reply and is counted in Stats(), over real loopback TCP.

// abuseHandler counts HELOs, accepts alice/secret, answers "XPAD ..." with 250, and
// holds OnMessage of a message from hold@example.com until release is closed.
type abuseHandler struct {
	BaseHandler
	mu      sync.Mutex
	helos   []string
	held    chan struct{} // closed when a held message is in OnMessage
	release chan struct{}
}

func (h *abuseHandler) OnHelo(_ *Session, helo string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.helos = append(h.helos, helo)
	return nil
}

func (h *abuseHandler) heloCalls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.helos...)
}

func (h *abuseHandler) OnAuth(_ *Session, _, user, pass string) (string, error) {
	if user == "alice" && pass == "secret" {
		return "", nil
	}
	return "", SMTPError535
}

func (h *abuseHandler) OnUnknown(_ *Session, line string) error {
	if strings.HasPrefix(line, "XPAD ") {
		return nil
	}
	return SMTPError500
}

func (h *abuseHandler) OnMessage(s *Session) error {
	if s.Envelope.From == "hold@example.com" {
		close(h.held)
		<-h.release
	}
	return nil
}

// abuseServe serves srv with an abuseHandler and returns its address and handler.
func abuseServe(t *testing.T, srv *Server) (string, *abuseHandler) {
	h := &abuseHandler{held: make(chan struct{}), release: make(chan struct{})}
	srv.Handler = h
	return serve(t, srv), h
}

// abuseBody is a message of about n bytes: a header and 100-byte lines.
func abuseBody(n int) string {
	line := strings.Repeat("x", 98) + "\r\n"
	return "Subject: big\r\n\r\n" + strings.Repeat(line, n/len(line)+1)
}

// abuseMessage sends a message with body (dot-terminated here) and returns the
// final reply's code and text.
func abuseMessage(c *client, from, body string) (int, string) {
	c.t.Helper()
	c.cmd("MAIL FROM:<"+from+">", 250)
	c.cmd("RCPT TO:<rcpt@example.com>", 250)
	c.cmd("DATA", 354)
	c.send(body + ".\r\n")
	return c.reply()
}

// MaxErrors and MaxJunkCommands: n pass, one more is 421 and closed; the counts
// start again after a delivered message (n-5, a message, then n more pass).
func TestAbuseErrorAndJunkLimits(t *testing.T) {
	for _, tc := range []struct {
		name, cmd string
		code, n   int
		want      *SMTPError
		hits      func(LimitStats) int64
	}{
		{"MaxErrors default 20", "BOGUS", 500, DefaultMaxErrors, errTooManyErrors, func(l LimitStats) int64 { return l.MaxErrors }},
		{"MaxJunkCommands default 100", "NOOP", 250, DefaultMaxJunkCommands, errTooManyJunk,
			func(l LimitStats) int64 { return l.MaxJunkCommands }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &Server{}
			addr, _ := abuseServe(t, srv)
			c := dialGreeted(t, addr)
			c.cmd("EHLO client.example", 250) // the first EHLO is no junk
			for range tc.n - 5 {
				c.cmd(tc.cmd, tc.code)
			}
			code, _ := abuseMessage(c, "a@example.com", "Subject: x\r\n\r\nhi\r\n")
			require.Equal(t, 250, code)
			for range tc.n {
				c.cmd(tc.cmd, tc.code)
			}
			require.Zero(t, tc.hits(srv.Stats().Limits))
			require.Equal(t, tc.want.Message, c.cmd(tc.cmd, 421))
			c.expectClosed()
			require.EqualValues(t, 1, tc.hits(srv.Stats().Limits))
		})
	}
	t.Run("RSET, VRFY and a repeated EHLO are junk", func(t *testing.T) {
		srv := &Server{MaxJunkCommands: 3}
		addr, _ := abuseServe(t, srv)
		c := dialGreeted(t, addr)
		c.cmd("EHLO client.example", 250)
		c.cmd("RSET", 250)
		c.cmd("VRFY alice", 500)
		c.cmd("EHLO again.example", 250)
		require.Equal(t, errTooManyJunk.Message, c.cmd("NOOP", 421))
		require.EqualValues(t, 1, srv.Stats().Limits.MaxJunkCommands)
	})
	t.Run("negative is none", func(t *testing.T) {
		srv := &Server{MaxErrors: -1, MaxJunkCommands: -1}
		addr, _ := abuseServe(t, srv)
		c := dialGreeted(t, addr)
		for range 3 * DefaultMaxErrors {
			c.cmd("BOGUS", 500)
		}
		for range 2 * DefaultMaxJunkCommands {
			c.cmd("NOOP", 250)
		}
		c.cmd("QUIT", 221)
		require.Zero(t, srv.Stats().Limits.MaxErrors+srv.Stats().Limits.MaxJunkCommands)
	})
}

func TestAbuseMaxConnectionsPerIP(t *testing.T) {
	srv := &Server{MaxConnectionsPerIP: 2}
	addr, _ := abuseServe(t, srv)
	a := dialGreeted(t, addr)
	b := dialGreeted(t, addr)
	over := dial(t, addr)
	require.Equal(t, errPerIP.Message, over.expect(421))
	over.expectClosed()
	require.EqualValues(t, 1, srv.Stats().Limits.MaxConnectionsPerIP)
	other := dialFrom(t, addr, "127.0.0.2") // another address is not affected
	other.expect(220)
	a.cmd("QUIT", 221)
	a.expectClosed() // its count is gone before the connection closes
	again := dialGreeted(t, addr)
	again.cmd("NOOP", 250)
	b.cmd("NOOP", 250)
	require.EqualValues(t, 1, srv.Stats().Limits.MaxConnectionsPerIP)
}

// A first command line that is HTTP (a request line or a header) closes the
// connection with 554; the same text later in a session is an unknown command.
func TestAbuseHTTPClients(t *testing.T) {
	srv := &Server{}
	addr, _ := abuseServe(t, srv)
	firsts := []string{
		"GET / HTTP/1.1\r\nHost: mx.example\r\nUser-Agent: curl/8\r\n\r\n",
		"POST /login HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
		"HEAD / HTTP/1.0\r\n",
		"PUT /x HTTP/1.1\r\n",
		"CONNECT mx.example:25 HTTP/1.1\r\n",
		"OPTIONS * HTTP/1.1\r\n",
		"get / http/1.1\r\n",
		"Host: mx.example\r\n",
		"User-Agent: scanner\r\n",
	}
	for i, first := range firsts {
		c := dialGreeted(t, addr)
		c.send(first)
		require.Equal(t, errNonSMTP.Message, c.expect(554), "first line %q", first)
		c.expectClosed()
		require.EqualValues(t, i+1, srv.Stats().Limits.NonSMTP)
	}
	c := dialGreeted(t, addr)
	c.cmd("EHLO client.example", 250)
	c.cmd("GET / HTTP/1.1", 500)
	c.cmd("NOOP", 250)
	require.EqualValues(t, len(firsts), srv.Stats().Limits.NonSMTP)
}

// GreetDelay holds the banner back; a client that talks first gets 554 and is closed.
func TestAbuseGreetDelay(t *testing.T) {
	t.Parallel()
	const delay = 400 * time.Millisecond
	srv := &Server{GreetDelay: delay}
	addr, h := abuseServe(t, srv)
	start := time.Now()
	silent := dial(t, addr)
	silent.expect(220)
	require.GreaterOrEqual(t, time.Since(start), delay, "banner before GreetDelay")
	silent.cmd("EHLO patient.example", 250)

	talker := dial(t, addr)
	talker.send("EHLO impatient.example\r\n")
	require.Equal(t, errPregreet.Message, talker.expect(554))
	talker.expectClosed()
	require.Equal(t, []string{"patient.example"}, h.heloCalls())
	require.EqualValues(t, 1, srv.Stats().Limits.Pregreet)
}

// Outside stress mode a transfer slower than MinDataRate (averaged, after a 2 s
// grace) is ended with 421; a fast one passes.
func TestAbuseMinDataRate(t *testing.T) {
	t.Parallel()
	srv := &Server{MinDataRate: 10000}
	addr, _ := abuseServe(t, srv)
	fast := dialGreeted(t, addr)
	fast.cmd("EHLO fast.example", 250)
	code, _ := abuseMessage(fast, "a@example.com", abuseBody(200<<10))
	require.Equal(t, 250, code)

	slow := dialGreeted(t, addr)
	slow.cmd("EHLO slow.example", 250)
	slow.cmd("MAIL FROM:<a@example.com>", 250)
	slow.cmd("RCPT TO:<b@example.com>", 250)
	start := time.Now() // before the server's transfer clock starts
	slow.cmd("DATA", 354)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // 20 bytes every 100 ms: 200 bytes/s
		for {
			slow.conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := slow.conn.Write([]byte("a slow line of data\n")); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	require.Equal(t, errSlowData.Message, slow.expect(421))
	require.GreaterOrEqual(t, time.Since(start), dataRateGrace)
	slow.expectClosed()
	st := srv.Stats()
	require.EqualValues(t, 1, st.Limits.MinDataRate)
	require.EqualValues(t, 1, st.MessagesAccepted)
}

// Every 535 waits AuthFailureDelay.
func TestAbuseAuthFailureDelay(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond
	srv := &Server{AuthMode: AuthOptional, AuthFailureDelay: delay}
	addr, _ := abuseServe(t, srv)
	c := dialGreeted(t, addr)
	c.cmd("EHLO client.example", 250)
	start := time.Now()
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00guess"), 535)
	require.GreaterOrEqual(t, time.Since(start), delay)
	c.cmd("AUTH LOGIN", 334)
	c.cmd(b64("alice"), 334)
	start = time.Now()
	c.cmd(b64("guess2"), 535)
	require.GreaterOrEqual(t, time.Since(start), delay)
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00secret"), 235)
	st := srv.Stats()
	require.EqualValues(t, 2, st.AuthFailures)
	require.EqualValues(t, 1, st.AuthSuccesses)
}

// Command lines are parsed in bounded memory: too long is 500 and the session goes
// on; HELO/EHLO domains and the number of ESMTP parameters are checked.
func TestAbuseCommandLineBounds(t *testing.T) {
	srv := &Server{AuthMode: AuthOptional}
	addr, h := abuseServe(t, srv)
	c := dialGreeted(t, addr)
	pad := func(prefix string, n int) string { return prefix + strings.Repeat("a", n-len(prefix)) }

	// 2048 bytes (line end not counted) are parsed; 2049 are not.
	c.cmd(pad("XPAD ", maxCommandLine), 250)
	require.Equal(t, errCommandTooLong.Message, c.cmd(pad("XPAD ", maxCommandLine+1), 500))
	require.EqualValues(t, 1, srv.Stats().Limits.CommandTooLong)
	c.send(pad("XPAD ", maxCommandLine+1) + "\n") // a bare LF is no extra byte of allowance
	require.Equal(t, errCommandTooLong.Message, c.expect(500))
	c.send(pad("XPAD ", maxCommandLine) + "\n")
	c.expect(250)

	// A 1 MiB EHLO (line end included) is refused unparsed: OnHelo never sees it.
	require.Equal(t, errCommandTooLong.Message, c.cmd(pad("EHLO ", DefaultIOBufferMaxSize-2), 500))
	require.Empty(t, h.heloCalls())
	c.cmd("EHLO "+strings.Repeat("d", 255), 250)
	c.cmd("EHLO "+strings.Repeat("d", 256), 501)
	c.cmd("EHLO bad\x01domain", 501)
	c.cmd("HELO tab\tdomain", 501)
	c.cmd("EHLO bad\x7fdomain", 501)
	require.Equal(t, []string{strings.Repeat("d", 255)}, h.heloCalls())

	// At most 16 ESMTP parameters are looked at: 17 are refused before any is.
	params := func(n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteString(" X" + string(rune('A'+i)) + "=1")
		}
		return b.String()
	}
	c.cmd("MAIL FROM:<a@example.com>"+params(16), 555)
	require.Equal(t, errTooManyParams.Message, c.cmd("MAIL FROM:<a@example.com>"+params(17), 501))
	c.cmd("MAIL FROM:<a@example.com>", 250)
	c.cmd("RSET", 250)

	// An AUTH response over 12288 bytes is 500; so is an AUTH line over its bound.
	c.cmd("AUTH PLAIN", 334)
	require.Equal(t, errAuthTooLong.Message, c.cmd(strings.Repeat("A", maxAuthResponse+4), 500))
	require.EqualValues(t, 1, srv.Stats().Limits.AuthTooLong)
	c.cmd("AUTH PLAIN "+strings.Repeat("A", maxAuthResponse+100), 500)
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00secret"), 235)
	c.cmd("NOOP", 250)
	st := srv.Stats()
	require.EqualValues(t, 4, st.Limits.CommandTooLong)
	require.Zero(t, st.Limits.LineTooLong)
}

// A line over IOBufferMaxSize cannot be skipped: 421 and closed.
func TestAbuseLineOverBufferMax(t *testing.T) {
	srv := &Server{IOBufferMaxSize: 16 << 10}
	addr, _ := abuseServe(t, srv)
	c := dialGreeted(t, addr)
	go c.conn.Write([]byte(strings.Repeat("N", 20<<10) + "\r\n"))
	require.Equal(t, errLineTooLong.Message, c.expect(421))
	c.expectClosed()
	require.EqualValues(t, 1, srv.Stats().Limits.LineTooLong)
}

func TestAbuseMaxBufferedData(t *testing.T) {
	t.Run("message over the budget: 452, session in sync", func(t *testing.T) {
		srv := &Server{MaxBufferedData: 1 << 20}
		addr, _ := abuseServe(t, srv)
		c := dialGreeted(t, addr)
		c.cmd("EHLO client.example", 250)
		code, text := abuseMessage(c, "a@example.com", abuseBody(1536<<10))
		require.Equal(t, 452, code)
		require.Equal(t, errBufferedData.Message, text)
		c.cmd("RSET", 250)
		code, _ = abuseMessage(c, "a@example.com", abuseBody(100<<10))
		require.Equal(t, 250, code)
		st := srv.Stats()
		require.EqualValues(t, 1, st.Limits.MaxBufferedData)
		require.EqualValues(t, 1, st.MessagesRefused)
		require.EqualValues(t, 1, st.MessagesAccepted)
	})
	t.Run("budget shared by sessions", func(t *testing.T) {
		srv := &Server{MaxBufferedData: 1536 << 10}
		addr, h := abuseServe(t, srv)
		a := dialGreeted(t, addr)
		a.cmd("EHLO a.example", 250)
		a.cmd("MAIL FROM:<hold@example.com>", 250)
		a.cmd("RCPT TO:<rcpt@example.com>", 250)
		a.cmd("DATA", 354)
		a.send(abuseBody(600<<10) + ".\r\n")
		<-h.held // a's 600 KiB (1 MiB of buffer) are held in OnMessage
		b := dialGreeted(t, addr)
		b.cmd("EHLO b.example", 250)
		code, _ := abuseMessage(b, "b@example.com", abuseBody(600<<10))
		require.Equal(t, 452, code)
		b.cmd("RSET", 250)
		close(h.release)
		a.expect(250)
		code, _ = abuseMessage(b, "b@example.com", abuseBody(600<<10))
		require.Equal(t, 250, code, "the budget came back after a's message")
		require.EqualValues(t, 1, srv.Stats().Limits.MaxBufferedData)
	})
}

// capHandler reports the capacity of each delivered message's buffer.
type capHandler struct {
	BaseHandler
	caps chan int
}

func (h *capHandler) OnMessage(s *Session) error {
	h.caps <- cap(s.Message.Data)
	return nil
}

// A message buffer grown without a declared SIZE stops at MaxMessageSize: the
// growth by a quarter that would pass it (2.5 MiB -> 3.1 MiB here) is cut to it.
func TestAbuseMessageBufferCappedAtMaxMessageSize(t *testing.T) {
	const limit = 2560 << 10
	h := &capHandler{caps: make(chan int, 1)}
	addr := serve(t, &Server{MaxMessageSize: limit, Handler: h})
	c := dialGreeted(t, addr)
	c.cmd("EHLO client.example", 250)
	body := abuseBody(2509 << 10)
	code, _ := abuseMessage(c, "a@example.com", body)
	require.Equal(t, 250, code)
	got := <-h.caps
	require.GreaterOrEqual(t, got, len(body))
	require.LessOrEqual(t, got, limit)
}

func TestAbuseMaxRecipients(t *testing.T) {
	srv := &Server{MaxRecipients: 3}
	addr, _ := abuseServe(t, srv)
	c := dialGreeted(t, addr)
	c.cmd("EHLO client.example", 250)
	c.cmd("MAIL FROM:<a@example.com>", 250)
	for i := range 3 {
		c.cmd("RCPT TO:<r"+string(rune('0'+i))+"@example.com>", 250)
	}
	require.Equal(t, errTooManyRecipients.Message, c.cmd("RCPT TO:<r3@example.com>", 452))
	c.cmd("DATA", 354)
	c.send("Subject: x\r\n\r\nhi\r\n.\r\n")
	c.expect(250)
	st := srv.Stats()
	require.EqualValues(t, 1, st.Limits.MaxRecipients)
	require.EqualValues(t, 1, st.MessagesAccepted)
}

// No log line, even at Debug, carries more than a short excerpt of hostile input.
func TestAbuseLogLinesShort(t *testing.T) {
	var buf lockedBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := &Server{Logger: logger, AuthMode: AuthOptional, XClientTrustedNetworks: "10.0.0.0/8",
		MaxErrors: -1, MaxJunkCommands: -1}
	addr, _ := abuseServe(t, srv)
	long := strings.Repeat("\x1b[31mjunk\"\\", 1<<20/11)[:1<<20-8]

	http := dialGreeted(t, addr)
	http.send("GET /" + strings.Repeat("p", 2000) + " HTTP/1.1\r\n")
	http.expect(554)

	c := dialGreeted(t, addr)
	c.cmd(long, 500)
	c.cmd("XJUNK "+long[:2000], 500)
	c.cmd(strings.Repeat("Q", 2000), 500)
	// The worst cases of escaping, quoted by the server and then by the handler:
	c.cmd("XJUNK "+strings.Repeat("\xff", 2000), 500) // \xff, then \\xff
	c.cmd("XJUNK "+strings.Repeat("\\\"", 1000), 500)
	c.cmd("XJUNK "+strings.Repeat("\U0010ffff\x01", 400), 500) // \U0010ffff\x01
	c.cmd("EHLO "+strings.Repeat("h", 255), 250)
	c.cmd("EHLO "+strings.Repeat("h", 1000)+"\x01", 501)
	c.cmd("AUTH LOGIN "+b64(strings.Repeat("u", 9000)), 334)
	c.cmd(b64("nope"), 535)
	c.cmd("AUTH PLAIN "+b64("\x00"+strings.Repeat("v", 9000)+"\x00pw"), 535)
	c.cmd("MAIL FROM:<"+strings.Repeat("m", 2000)+"@example.com>", 501)
	c.cmd("MAIL FROM:<"+strings.Repeat("m", 60)+"@"+strings.Repeat("d", 1900)+">", 501)
	c.cmd("MAIL FROM:<a@example.com> "+strings.Repeat("P", 1900)+"=1", 555)
	c.cmd("MAIL FROM:<a@example.com>", 250)
	c.cmd("RCPT TO:<"+strings.Repeat("r", 2000)+"@example.com>", 501)
	c.cmd("RCPT TO:<ok@example.com>", 250)
	c.cmd("DATA", 354)
	c.send(long[:500<<10] + "\r\n.\r\n")
	c.expect(250)
	c.cmd("XCLIENT NAME="+strings.Repeat("n", 2000), 550)
	c.cmd("VRFY "+strings.Repeat("w", 2000), 500)
	c.cmd("QUIT", 221)
	c.expectClosed()

	logs := buf.String()
	require.Contains(t, logs, "command line too long")
	require.Contains(t, logs, "authentication failed")
	require.Contains(t, logs, "message accepted")
	longest, lines := "", strings.Split(strings.TrimSuffix(logs, "\n"), "\n")
	for _, l := range lines {
		if len(l) > len(longest) {
			longest = l
		}
	}
	require.LessOrEqual(t, len(longest), 1024, "log line of %d bytes: %.300q...", len(longest), longest)
	t.Logf("%d log lines, the longest %d bytes", len(lines), len(longest))
}
