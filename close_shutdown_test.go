package smtpd

// Close and Shutdown: what every session gets (one 421, never a reply after it),
// what is delivered (nothing whose 250 Close cut short), and how long they take.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	closeLine421 = "421 " + protoText421 + "\r\n"
	closeLine221 = "221 " + protoText221 + "\r\n"
)

// startData runs EHLO, MAIL, RCPT and DATA, each waiting for its reply.
func startData(c *client) {
	c.t.Helper()
	c.cmd("EHLO close.example", 250)
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<c@d.example>", 250)
	c.cmd("DATA", 354)
}

// blockedMessage is a handler whose OnMessage closes entered, blocks until release,
// then sends on delivered (when not nil) and accepts the message.
type blockedMessage struct {
	BaseHandler
	entered   chan struct{}
	released  chan struct{}
	delivered chan struct{}
	once      sync.Once
}

func newBlockedMessage() *blockedMessage {
	return &blockedMessage{entered: make(chan struct{}), released: make(chan struct{})}
}

func (h *blockedMessage) OnMessage(*Session) error {
	close(h.entered)
	<-h.released
	if h.delivered != nil {
		h.delivered <- struct{}{}
	}
	return nil
}

// release lets OnMessage return; later calls do nothing.
func (h *blockedMessage) release() { h.once.Do(func() { close(h.released) }) }

// awaitHook waits until a hook signals on entered, failing the test with the
// message after testTimeout.
func awaitHook(t *testing.T, entered <-chan struct{}, msgAndArgs ...any) {
	t.Helper()
	select {
	case <-entered:
	case <-time.After(testTimeout):
		require.FailNow(t, "a hook did not run", msgAndArgs...)
	}
}

// readNo250 reads until the connection ends and fails on any 250 reply: what comes
// is Close's 421 or nothing.
func readNo250(t *testing.T, c *client) string {
	t.Helper()
	rest := string(readUntilClosed(t, c.conn, c.r))
	for _, l := range strings.Split(rest, "\r\n") {
		require.False(t, strings.HasPrefix(l, "250"), "got %q after the server closed", rest)
	}
	if len(rest) > 0 {
		require.Equal(t, closeLine421, rest)
	}
	return rest
}

// checkClosedTail checks what a client read after its last awaited reply up to the
// end of the connection: a prefix of the replies owed (their codes, in order), then
// at most Close's 421 as the very last line; nothing else, nothing after it.
func checkClosedTail(t *testing.T, got string, owed ...int) {
	t.Helper()
	if got == "" {
		return
	}
	require.True(t, strings.HasSuffix(got, "\r\n"), "incomplete reply line in %q", got)
	lines := strings.SplitAfter(strings.TrimSuffix(got, "\r\n"), "\r\n")
	lines[len(lines)-1] += "\r\n"
	for i, line := range lines {
		if i == len(lines)-1 && line == closeLine421 {
			return
		}
		require.Less(t, i, len(owed), "unexpected reply %q in %q", line, got)
		require.True(t, strings.HasPrefix(line, strconv.Itoa(owed[i])+" "), "reply %d in %q: want %d", i+1, got, owed[i])
	}
}

// Graceful Shutdown: the idle client gets 421 at once, and so does one still waiting
// for a processing slot; the client inside DATA finishes its message (250), then gets
// 421; Shutdown returns nil.
func TestShutdownLetsDataFinish(t *testing.T) {
	h := newRecorder()
	srv := &Server{Handler: h, MaxProcessings: 2}
	addr := serve(t, srv)
	a := protoGreeted(t, addr)
	b := protoGreeted(t, addr)
	b.cmd("MAIL FROM:<b@b.example>", 250)
	b.cmd("RCPT TO:<c@d.example>", 250)
	b.cmd("DATA", 354)
	b.send("Subject: in flight\r\n\r\nfirst part\r\n")
	waiting := dial(t, addr)
	require.Eventually(t, func() bool { return srv.Connections() == 3 }, 5*time.Second, 5*time.Millisecond)

	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(shutdownCtx(t, 5*time.Second)) }()

	a.protoExpect(421, protoText421)
	a.expectClosed()
	waiting.protoExpect(421, protoText421)
	waiting.expectClosed()
	// No new connection is accepted.
	require.Eventually(t, func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	}, 5*time.Second, 10*time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a message was in flight", err)
	default:
	}

	b.send("second part\r\n.\r\n")
	b.protoExpect(250, protoText250Data)
	b.protoExpect(421, protoText421)
	b.expectClosed()

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(testTimeout):
		t.Fatal("Shutdown did not return")
	}
	msgs := h.waitMessages(t, 1)
	require.Len(t, msgs, 1)
	require.Equal(t, "b@b.example", msgs[0].From)
	require.Equal(t, "Subject: in flight\r\n\r\nfirst part\r\nsecond part\r\n", msgs[0].Data)
}

// Shutdown whose context ends first: the stuck session is cut with 421 and Shutdown
// returns the context's error; the message is not delivered.
func TestShutdownDeadlineCutsSession(t *testing.T) {
	h := newRecorder()
	srv := &Server{Handler: h}
	addr := serve(t, srv)
	c := protoGreeted(t, addr)
	c.cmd("MAIL FROM:<a@b.example>", 250)
	c.cmd("RCPT TO:<c@d.example>", 250)
	c.cmd("DATA", 354)
	c.send("Subject: never finished\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := srv.Shutdown(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	readNo250(t, c)
	require.Empty(t, h.messages())
}

// Shutdown used to wait for a blocked hook after its context ended, instead of
// returning the context's error; Wait is what waits for the hook.
func TestShutdownReturnsAtDeadlineWithHookBlocked(t *testing.T) {
	h := newBlockedMessage()
	srv := &Server{Handler: h}
	addr := serve(t, srv)
	t.Cleanup(h.release) // runs before serve's cleanup closes the server
	c := dialGreeted(t, addr)
	startData(c)
	c.send("Subject: blocked\r\n\r\nbody\r\n.\r\n")
	awaitHook(t, h.entered, "OnMessage never ran")

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	returned := make(chan error, 1)
	go func() { returned <- srv.Shutdown(ctx) }()
	// A liveness bound, not a speed measurement: Shutdown must return once its
	// context has ended (200ms) although OnMessage is still blocked.
	select {
	case err := <-returned:
		require.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(2 * time.Second):
		require.FailNow(t, "Shutdown still blocked well after its context's deadline")
	}
	require.Equal(t, closeLine421, c.readToEnd(), "the client is closed as by Close, with no 250")

	waited := make(chan struct{})
	go func() { srv.Wait(); close(waited) }()
	time.Sleep(100 * time.Millisecond) // give a wrong Wait the chance to return
	select {
	case <-waited:
		require.FailNow(t, "Wait returned while OnMessage was still running")
	default:
	}
	h.release()
	select {
	case <-waited:
	case <-time.After(testTimeout):
		require.FailNow(t, "Wait did not return after OnMessage was released")
	}
}

// Close: every session gets 421 and is closed; a message whose OnMessage has not
// returned is never acknowledged.
func TestCloseNeverAcknowledgesPendingMessage(t *testing.T) {
	h := newBlockedMessage()
	h.delivered = make(chan struct{}, 1)
	srv := &Server{Handler: h}
	addr := serve(t, srv)
	t.Cleanup(h.release)

	idle1 := dialGreeted(t, addr)
	idle2 := protoGreeted(t, addr)
	idle2.cmd("MAIL FROM:<a@b.example>", 250)
	busy := protoGreeted(t, addr)
	busy.cmd("MAIL FROM:<a@b.example>", 250)
	busy.cmd("RCPT TO:<c@d.example>", 250)
	busy.cmd("DATA", 354)
	busy.send("Subject: blocked\r\n\r\nbody\r\n.\r\n")
	awaitHook(t, h.entered, "OnMessage never ran")

	require.NoError(t, srv.Close())
	idle1.protoExpect(421, protoText421)
	idle1.expectClosed()
	idle2.protoExpect(421, protoText421)
	idle2.expectClosed()

	h.release()
	awaitHook(t, h.delivered, "OnMessage did not return") // it returned nil, after Close
	readNo250(t, busy)

	_, err := net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, err, "the listener is closed")
}

// Close, repeated to catch races: a greeted idle session and one still waiting for
// the only processing slot each read exactly one 421 and then the end of the
// connection — never nothing, never two 421s, never a banner after Close.
func TestCloseEverySessionGetsOne421(t *testing.T) {
	const rounds = 200
	bad := map[string]int{}
	for range rounds {
		srv := &Server{MaxProcessings: 1}
		addr, waitClosed := serveUntilClosed(t, srv)
		idle := dialGreeted(t, addr)
		waiting := dial(t, addr)
		require.Eventually(t, func() bool { return srv.Connections() == 2 }, 5*time.Second, time.Millisecond)
		require.NoError(t, srv.Close())
		for _, c := range []struct {
			name string
			c    *client
		}{{"idle", idle}, {"waiting", waiting}} {
			c.c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, _ := io.ReadAll(c.c.r)
			if string(got) != closeLine421 {
				bad[fmt.Sprintf("%s session read %q", c.name, got)]++
			}
			c.c.conn.Close()
		}
		waitClosed()
	}
	require.Empty(t, bad, "in %d rounds", rounds)
}

// A message already in the input buffer used to be delivered (OnMessage ran, 250 was
// queued) after Close had answered the client 421.
type closeBlockDataStart struct {
	BaseHandler
	entered chan struct{}
	msgs    atomic.Int32
}

func (h *closeBlockDataStart) OnDataStart(s *Session) error {
	h.entered <- struct{}{}
	<-s.Context().Done()              // cancelled by Close
	time.Sleep(50 * time.Millisecond) // then some work that ignores the context
	return nil
}

func (h *closeBlockDataStart) OnMessage(*Session) error {
	h.msgs.Add(1)
	return nil
}

func TestCloseNoDeliveryOfBufferedMessage(t *testing.T) {
	for round := range 5 {
		h := &closeBlockDataStart{entered: make(chan struct{}, 1)}
		srv := &Server{Handler: h, Pipelining: true}
		addr, waitClosed := serveUntilClosed(t, srv)
		c := dialGreeted(t, addr)
		c.cmd("EHLO close.example", 250)
		// The whole transaction in one write: it is all buffered when OnDataStart runs.
		c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nSubject: buffered\r\n\r\nbody\r\n.\r\nNOOP\r\n")
		awaitHook(t, h.entered, "round %d: OnDataStart never ran", round)
		require.NoError(t, srv.Close())
		waitClosed() // Wait: OnDataStart has returned, the session ended
		got := c.readToEnd()
		c.conn.Close()
		require.Zero(t, h.msgs.Load(), "round %d: OnMessage ran after Close", round)
		checkClosedTail(t, got, 250, 250, 354) // MAIL, RCPT, DATA: never the message's 250
	}
}

// After Close's 421 a session used to still send a reply (OnMessage returning nil
// after the context was cancelled gave "250" after the 421), and QUIT racing Close
// could give both 221 and 421, or neither.
type closeCtxMessage struct {
	BaseHandler
	entered chan struct{}
}

func (h closeCtxMessage) OnMessage(s *Session) error {
	h.entered <- struct{}{}
	<-s.Context().Done()
	return nil
}

func TestCloseSingleReply(t *testing.T) {
	t.Run("OnMessage returns nil after Close", func(t *testing.T) {
		for round := range 150 {
			h := closeCtxMessage{entered: make(chan struct{}, 1)}
			srv := &Server{Handler: h}
			addr, waitClosed := serveUntilClosed(t, srv)
			c := dialGreeted(t, addr)
			startData(c)
			c.send("Subject: single reply\r\n\r\nbody\r\n.\r\n")
			awaitHook(t, h.entered, "round %d: OnMessage never ran", round)
			require.NoError(t, srv.Close())
			got := c.readToEnd()
			c.conn.Close()
			require.Equal(t, closeLine421, got, "round %d: exactly the 421, then the end", round)
			waitClosed()
		}
	})
	t.Run("QUIT racing Close", func(t *testing.T) {
		var n221, n421 int
		for round := range 200 {
			srv := &Server{}
			addr, waitClosed := serveUntilClosed(t, srv)
			c := dialGreeted(t, addr)
			var wg sync.WaitGroup
			start := make(chan struct{})
			wg.Go(func() {
				<-start
				if round%2 == 0 {
					time.Sleep(time.Duration(round%7) * 20 * time.Microsecond)
				}
				srv.Close()
			})
			close(start)
			if round%2 == 1 {
				time.Sleep(time.Duration(round%7) * 20 * time.Microsecond)
			}
			c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c.conn, "QUIT\r\n") // may fail: Close may have closed the connection
			got := c.readToEnd()
			c.conn.Close()
			wg.Wait()
			switch got {
			case closeLine221:
				n221++
			case closeLine421:
				n421++
			default:
				require.Failf(t, "not exactly one closing reply", "round %d: client got %q", round, got)
			}
			waitClosed()
		}
		t.Logf("221: %d rounds, 421: %d rounds", n221, n421)
	})
}

// Close used to abort sessions one after the other, each stuck in a write to a
// client that does not read for up to a second.
type closeLongHelo struct{ BaseHandler }

func (closeLongHelo) OnHelo(s *Session, _ string) error {
	s.HeloResponse = strings.Repeat("h", 900)
	return nil
}

func TestCloseAbortsStuckWritersTogether(t *testing.T) {
	// IOCmdTimeout is 30 s: a write to a client that does not read stays stuck.
	srv := &Server{Handler: closeLongHelo{}, Pipelining: true, MaxProcessings: 8, MaxJunkCommands: -1}
	addr := serve(t, srv)
	const clients = 5
	// 8 bytes in, over 900 out: the server's socket buffers fill within a few
	// thousand lines, also under -race (with NOOP's 8-byte replies it takes MBs).
	flood := []byte(strings.Repeat("HELO x\r\n", 375))
	stuck := make(chan error, clients)
	for range clients {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		tcp := conn.(*net.TCPConn)
		require.NoError(t, tcp.SetReadBuffer(4096))
		require.NoError(t, tcp.SetWriteBuffer(16384)) // small: a stall shows at once
		go func() {
			// Flood without ever reading. Once the server's replies fill the socket
			// buffers its write blocks and it stops reading: a whole second without
			// room for 3000 bytes means the server is stuck in that write.
			for {
				conn.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := conn.Write(flood); err != nil {
					stuck <- err
					return
				}
			}
		}()
	}
	for range clients {
		select {
		case err := <-stuck:
			var ne net.Error
			require.True(t, errors.As(err, &ne) && ne.Timeout(), "flood ended by %v, not by a stall", err)
		case <-time.After(30 * time.Second):
			require.FailNow(t, "the server never stopped reading a flooding client")
		}
	}
	require.Equal(t, clients, srv.Connections())
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	// A liveness bound, not a speed measurement: the sessions are aborted together
	// (about 1 s of grace each at most); one after the other they took over 5 s.
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(3 * time.Second):
		require.FailNow(t, "Close still blocked after 3 s with 5 stuck clients")
	}
	_, err := net.DialTimeout("tcp", addr, 2*time.Second)
	require.Error(t, err, "the listener is still open after Close")
}
