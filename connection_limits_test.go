package smtpd

// MaxConnections and MaxProcessings: who is refused with 421, who waits without a
// banner, and that the check follows the order of accept.

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMaxConnectionsRefusesWith421(t *testing.T) {
	srv := &Server{MaxProcessings: 2, MaxConnections: 2}
	addr := serve(t, srv)
	a := dialGreeted(t, addr)
	b := dialGreeted(t, addr)
	c := dial(t, addr)
	c.protoExpect(421, protoText421Busy)
	c.expectClosed()
	a.cmd("QUIT", 221)
	a.expectClosed()
	// A slot is free again once the server saw a leave.
	require.Eventually(t, func() bool { return srv.Connections() == 1 }, 5*time.Second, 5*time.Millisecond)
	d := dial(t, addr)
	d.protoExpect(220, protoTextBanner)
	b.cmd("NOOP", 250)
	d.cmd("NOOP", 250)
}

// countConnects sends on connects at each OnConnect.
type countConnects struct {
	BaseHandler
	connects chan struct{}
}

func (h countConnects) OnConnect(*Session) error {
	h.connects <- struct{}{}
	return nil
}

// The 421 and waiting rules of MaxProcessings 1 + MaxConnections 2.
func TestMaxProcessingsWaitAndMaxConnectionsRefuse(t *testing.T) {
	h := countConnects{connects: make(chan struct{}, 10)}
	srv := &Server{MaxProcessings: 1, MaxConnections: 2, Handler: h}
	addr := serve(t, srv)
	first := dial(t, addr)
	first.protoExpect(220, protoTextBanner)
	first.cmd("EHLO first.example", 250)

	second := dial(t, addr)
	second.expectSilent(300 * time.Millisecond)
	require.Eventually(t, func() bool { return srv.Connections() == 2 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 1, srv.Processings())

	third := dial(t, addr)
	third.protoExpect(421, protoText421Busy)
	third.expectClosed()
	// OnConnect ran for all three, as in Ruby.
	require.Eventually(t, func() bool { return len(h.connects) == 3 }, 5*time.Second, 5*time.Millisecond)

	first.cmd("QUIT", 221)
	first.expectClosed()
	second.protoExpect(220, protoTextBanner)
	second.cmd("EHLO second.example", 250)
	second.cmd("QUIT", 221)
}

// MaxConnections used to count connections whose check had not run yet, so a burst
// could refuse the wrong ones (or none). The check is now made in accept order.
type barrierConnect struct {
	BaseHandler
	n    atomic.Int32
	want int32
	all  chan struct{}
}

func (h *barrierConnect) OnConnect(*Session) error {
	if h.n.Add(1) == h.want {
		close(h.all)
	}
	select { // every OnConnect waits until all the connections are open
	case <-h.all:
	case <-time.After(testTimeout):
	}
	return nil
}

func TestMaxConnectionsCheckedInAcceptOrder(t *testing.T) {
	for round := range 10 {
		h := &barrierConnect{want: 3, all: make(chan struct{})}
		srv := &Server{Handler: h, MaxProcessings: 2, MaxConnections: 2}
		addr, waitClosed := serveUntilClosed(t, srv)
		var cls []*client
		for i := range 3 {
			c := dial(t, addr)
			cls = append(cls, c)
			if i < 2 { // accepted (and held in OnConnect) before the next dial
				require.Eventually(t, func() bool { return srv.Connections() == i+1 },
					5*time.Second, time.Millisecond, "round %d: connection %d not accepted", round, i+1)
			}
		}
		cls[0].expect(220)
		cls[1].expect(220)
		require.Equal(t, protoText421Busy, cls[2].expect(421), "round %d", round)
		cls[2].expectClosed()
		cls[0].cmd("QUIT", 221)
		cls[1].cmd("QUIT", 221)
		require.NoError(t, srv.Close())
		waitClosed()
		for _, c := range cls {
			c.conn.Close()
		}
	}
}
