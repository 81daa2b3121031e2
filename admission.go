package smtpd

import (
	"container/list"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// This file admits connections to the MaxProcessings slots. A connection that finds
// none free waits, watched: a client that leaves is gone at once, one that talks
// before its banner is a pregreet (554), one that waits past WaitTimeout gets 421.
// Freed slots go round-robin by remote address, first come first served within one
// address, so a crowd from one address cannot starve everyone else.

// admission hands out the processing slots.
type admission struct {
	mu      sync.Mutex
	free    int
	queues  map[string]*list.List // remote IP -> waiting *waiter, oldest first
	ring    []string              // addresses with waiters, in the order they came
	next    int                   // ring index served next
	waiting atomic.Int64
}

// waiter is one connection waiting for a slot.
type waiter struct {
	ip      string
	granted atomic.Bool
	wake    func() // interrupts the session's watching read
	elem    *list.Element
}

func newAdmission(slots int) *admission {
	return &admission{free: slots, queues: make(map[string]*list.List)}
}

// waitingNow is the number of connections waiting for a slot (none before the
// server's first Start or Serve made its admission).
func (a *admission) waitingNow() int64 {
	if a == nil {
		return 0
	}
	return a.waiting.Load()
}

// enter takes a free slot (true) or queues w (false); first reports that w is
// the only one waiting (stress mode begins).
func (a *admission) enter(w *waiter) (admitted, first bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.free > 0 && len(a.ring) == 0 {
		a.free--
		return true, false
	}
	q := a.queues[w.ip]
	if q == nil {
		q = list.New()
		a.queues[w.ip] = q
		a.ring = append(a.ring, w.ip)
	}
	w.elem = q.PushBack(w)
	return false, a.waiting.Add(1) == 1
}

// withdraw takes w out of the queue; it reports whether w was granted a slot in the
// meantime (the caller then holds it).
func (a *admission) withdraw(w *waiter) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if w.granted.Load() {
		return true
	}
	a.remove(w)
	return false
}

// remove unlinks w from its address's queue, and the address from the ring when its
// queue is empty. Under mu.
func (a *admission) remove(w *waiter) {
	q := a.queues[w.ip]
	q.Remove(w.elem)
	a.waiting.Add(-1)
	if q.Len() > 0 {
		return
	}
	delete(a.queues, w.ip)
	for i, ip := range a.ring {
		if ip == w.ip {
			a.ring = append(a.ring[:i], a.ring[i+1:]...)
			if a.next > i {
				a.next--
			}
			break
		}
	}
}

// release frees a slot: it goes to the oldest waiter of the next address in the
// ring, else back to the pool.
func (a *admission) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.ring) == 0 {
		a.free++
		return
	}
	if a.next >= len(a.ring) {
		a.next = 0
	}
	ip := a.ring[a.next]
	w := a.queues[ip].Front().Value.(*waiter)
	a.next++
	a.remove(w)
	w.granted.Store(true)
	w.wake()
}

// watchResult is how a watched wait ended.
type watchResult int

const (
	watchReady   watchResult = iota // the awaited event (a slot) came
	watchTimeout                    // the time ran out
	watchTalked                     // the client sent bytes before its banner
	watchGone                       // the client closed the connection
	watchClosing                    // the server is shutting down
)

// maxEarlyTLS caps what an implicit-TLS client may send while it waits: its
// ClientHello flight (a TLS record is at most 16 KiB plus its header).
const maxEarlyTLS = 16<<10 + 512

// admit waits for a processing slot, watched; false when the session ends instead
// (its reply, if one is owed, sent).
func (c *conn) admit() bool {
	w := &waiter{ip: c.s.RemoteIP, wake: func() { c.raw.SetReadDeadline(time.Unix(1, 0)) }}
	admitted, first := c.srv.adm.enter(w)
	if admitted {
		return true
	}
	c.srv.warnWaiting(c)
	if first {
		c.srv.stressBegins()
	}
	res := c.watchSilence(c.cfg.waitTimeout, w.granted.Load)
	if res == watchReady || c.srv.adm.withdraw(w) {
		c.raw.SetReadDeadline(time.Time{})
		if res == watchReady {
			return true
		}
		c.srv.adm.release() // granted just as the wait ended otherwise
	}
	c.watchFailed(res)
	return false
}

// watchSilence waits up to d (< 0: for ever) until ready reports true (nil: never),
// reading the connection meanwhile: on a plain port any byte is a pregreet; on an
// implicit-TLS port the bytes (the ClientHello) are kept for the handshake.
func (c *conn) watchSilence(d time.Duration, ready func() bool) watchResult {
	var deadline time.Time
	if d >= 0 {
		deadline = time.Now().Add(d)
	}
	if !c.enter(connWaiting) {
		return watchGone
	}
	defer c.enter(connNew)
	var buf [512]byte
	for {
		c.raw.SetReadDeadline(deadline)
		switch {
		case ready != nil && ready():
			return watchReady
		case c.srv.isClosing.Load():
			return watchClosing
		case !deadline.IsZero() && !time.Now().Before(deadline):
			return watchTimeout
		}
		n, err := c.raw.Read(buf[:])
		if n > 0 {
			if !c.implicitTLS || len(c.early)+n > maxEarlyTLS {
				return watchTalked
			}
			c.early = append(c.early, buf[:n]...)
		}
		if err != nil && !isTimeout(err) {
			return watchGone
		}
	}
}

// watchFailed answers the end of a watched wait that did not bring a slot.
func (c *conn) watchFailed(res watchResult) {
	switch res {
	case watchTalked:
		c.srv.stats.limit(&c.srv.stats.Pregreet)
		c.log().Info("client talked before the banner; closing")
		c.closeWith(errPregreet)
	case watchGone:
		c.srv.stats.limit(&c.srv.stats.WaitGone)
		c.log().Debug("client left while waiting")
	case watchClosing:
		c.replyError(SMTPError421, true)
	case watchTimeout:
		c.srv.stats.limit(&c.srv.stats.WaitTimeout)
		c.log().Warn("no processing slot within WaitTimeout; closing", "wait_timeout", c.cfg.waitTimeout)
		c.closeWith(errWaitTimeout)
	}
}

// reader is the connection as the TLS handshake reads it: on an implicit-TLS port,
// the bytes read while waiting (the ClientHello) come first.
func (c *conn) reader() net.Conn {
	if len(c.early) == 0 {
		return c.raw
	}
	return &earlyConn{Conn: c.raw, r: primedReader{r: c.raw, pending: c.early}}
}

// earlyConn is a connection whose first reads return what was read early.
type earlyConn struct {
	net.Conn
	r primedReader
}

func (c *earlyConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// warnWaiting logs at Warn that connections wait for a slot: the first time, then
// at most once a second, so a flood of waiting connections is not a flood of logs.
func (srv *Server) warnWaiting(c *conn) {
	if !onceASecond(&srv.lastWaitWarn) {
		return
	}
	c.log().Warn("all processing slots busy; connection waits (stress mode on)",
		"max_processings", srv.cfg.maxProcessings, "waiting", srv.adm.waitingNow())
}

// stressBegins gives every idle session stress mode's shorter wait for its next
// line, whenever its silence began: the first connection now waits for a slot.
func (srv *Server) stressBegins() {
	at := time.Now().Add(stressTimeout)
	if t := srv.cfg.timeout; t > 0 && t < stressTimeout {
		at = time.Now().Add(t)
	}
	for _, c := range srv.connList() {
		c.tighten(at)
	}
}
