package smtpd

// Regression tests for the review findings about Close and Shutdown (R3, R4, R9);
// the helpers are in regressions_test.go.

import (
	"context"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// regCheckClosedTail checks what a client read after its last awaited reply up to
// the end of the connection: a prefix of the replies owed (their codes, in order),
// then at most Close's 421 as the very last line; nothing else, nothing after it.
func regCheckClosedTail(t *testing.T, got string, owed ...int) {
	t.Helper()
	if got == "" {
		return
	}
	require.True(t, strings.HasSuffix(got, "\r\n"), "incomplete reply line in %q", got)
	lines := strings.SplitAfter(strings.TrimSuffix(got, "\r\n"), "\r\n")
	lines[len(lines)-1] += "\r\n"
	for i, line := range lines {
		if i == len(lines)-1 && line == regClose421 {
			return
		}
		require.Less(t, i, len(owed), "unexpected reply %q in %q", line, got)
		require.True(t, strings.HasPrefix(line, strconv.Itoa(owed[i])+" "), "reply %d in %q: want %d", i+1, got, owed[i])
	}
}

// R3: a message already in the input buffer was delivered (OnMessage ran, 250 was
// queued) after Close had answered the client 421.
type regBlockDataStart struct {
	BaseHandler
	entered chan struct{}
	msgs    atomic.Int32
}

func (h *regBlockDataStart) OnDataStart(s *Session) error {
	h.entered <- struct{}{}
	<-s.Context().Done()              // cancelled by Close
	time.Sleep(50 * time.Millisecond) // then some work that ignores the context
	return nil
}

func (h *regBlockDataStart) OnMessage(*Session) error {
	h.msgs.Add(1)
	return nil
}

func TestRegressionNoDeliveryAfterClose(t *testing.T) {
	for round := range 5 {
		h := &regBlockDataStart{entered: make(chan struct{}, 1)}
		srv := &Server{Handler: h, Pipelining: true}
		addr, served := regServe(t, srv)
		c := regDial(t, addr)
		c.expect(220)
		c.cmd("EHLO regression.example", 250)
		// The whole transaction in one write: it is all buffered when OnDataStart runs.
		c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nSubject: r3\r\n\r\nbody\r\n.\r\nNOOP\r\n")
		select {
		case <-h.entered:
		case <-time.After(10 * time.Second):
			require.FailNow(t, "OnDataStart never ran", "round %d", round)
		}
		require.NoError(t, srv.Close())
		regWaitServer(t, srv, served) // Wait: OnDataStart has returned, the session ended
		got := regReadToEnd(t, c)
		c.conn.Close()
		require.Zero(t, h.msgs.Load(), "round %d: OnMessage ran after Close", round)
		regCheckClosedTail(t, got, 250, 250, 354) // MAIL, RCPT, DATA: never the message's 250
	}
}

// R4: after Close's 421 the session could still send a reply (OnMessage returning nil
// after the context was cancelled gave "250" after the 421), and QUIT racing Close
// could give both 221 and 421, or neither.
type regCtxMessage struct {
	BaseHandler
	entered chan struct{}
}

func (h regCtxMessage) OnMessage(s *Session) error {
	h.entered <- struct{}{}
	<-s.Context().Done()
	return nil
}

func TestRegressionCloseSingleReply(t *testing.T) {
	t.Run("OnMessage returns nil after Close", func(t *testing.T) {
		for round := range 150 {
			h := regCtxMessage{entered: make(chan struct{}, 1)}
			srv := &Server{Handler: h}
			addr, served := regServe(t, srv)
			c := regDial(t, addr)
			c.expect(220)
			regTransaction(c)
			c.send("Subject: r4\r\n\r\nbody\r\n.\r\n")
			select {
			case <-h.entered:
			case <-time.After(10 * time.Second):
				require.FailNow(t, "OnMessage never ran", "round %d", round)
			}
			require.NoError(t, srv.Close())
			got := regReadToEnd(t, c)
			c.conn.Close()
			require.Equal(t, regClose421, got, "round %d: exactly the 421, then the end", round)
			regWaitServer(t, srv, served)
		}
	})
	t.Run("QUIT racing Close", func(t *testing.T) {
		var n221, n421 int
		for round := range 200 {
			srv := &Server{}
			addr, served := regServe(t, srv)
			c := regDial(t, addr)
			c.expect(220)
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
			got := regReadToEnd(t, c)
			c.conn.Close()
			wg.Wait()
			switch got {
			case regBye221:
				n221++
			case regClose421:
				n421++
			default:
				require.Failf(t, "not exactly one closing reply", "round %d: client got %q", round, got)
			}
			regWaitServer(t, srv, served)
		}
		t.Logf("221: %d rounds, 421: %d rounds", n221, n421)
	})
}

// R9: Shutdown waited for a blocked hook after its context ended, instead of
// returning the context's error; Wait is what waits for the hook.
type regStuckMessage struct {
	BaseHandler
	entered chan struct{}
	release chan struct{}
}

func (h regStuckMessage) OnMessage(*Session) error {
	close(h.entered)
	<-h.release
	return nil
}

func TestRegressionShutdownReturnsAtDeadline(t *testing.T) {
	h := regStuckMessage{entered: make(chan struct{}), release: make(chan struct{})}
	srv := &Server{Handler: h}
	addr := serve(t, srv)
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(h.release) }) }
	t.Cleanup(release) // runs before serve's cleanup closes the server
	c := dialGreeted(t, addr)
	regTransaction(c)
	c.send("Subject: r9\r\n\r\nbody\r\n.\r\n")
	select {
	case <-h.entered:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "OnMessage never ran")
	}

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
	require.Equal(t, regClose421, regReadToEnd(t, c), "the client is closed as by Close, with no 250")

	waited := make(chan struct{})
	go func() { srv.Wait(); close(waited) }()
	time.Sleep(100 * time.Millisecond) // give a wrong Wait the chance to return
	select {
	case <-waited:
		require.FailNow(t, "Wait returned while OnMessage was still running")
	default:
	}
	release()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Wait did not return after OnMessage was released")
	}
}
