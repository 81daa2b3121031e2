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
func (s *Session) admit() bool {
	w := &waiter{ip: s.RemoteIP, wake: func() { s.raw.SetReadDeadline(time.Unix(1, 0)) }}
	admitted, first := s.srv.adm.enter(w)
	if admitted {
		return true
	}
	s.srv.warnWaiting(s)
	if first { // stress mode begins: idle sessions get its shorter wait
		tightenParked(s.srv, s.timeout())
	}
	res := s.watchSilence(s.cfg.waitTimeout, w.granted.Load)
	if res == watchReady || s.srv.adm.withdraw(w) {
		s.raw.SetReadDeadline(time.Time{})
		if res == watchReady {
			return true
		}
		s.srv.adm.release() // granted just as the wait ended otherwise
	}
	s.watchFailed(res)
	return false
}

// watchSilence waits up to d (< 0: for ever) until ready reports true (nil: never),
// reading the connection meanwhile: on a plain port any byte is a pregreet; on an
// implicit-TLS port the bytes (the ClientHello) are kept for the handshake.
func (s *Session) watchSilence(d time.Duration, ready func() bool) watchResult {
	var deadline time.Time
	if d >= 0 {
		deadline = time.Now().Add(d)
	}
	s.idle.Store(true)
	defer s.idle.Store(false)
	var buf [512]byte
	for {
		s.raw.SetReadDeadline(deadline)
		switch {
		case ready != nil && ready():
			return watchReady
		case s.srv.isClosing.Load():
			return watchClosing
		case !deadline.IsZero() && !time.Now().Before(deadline):
			return watchTimeout
		}
		n, err := s.raw.Read(buf[:])
		if n > 0 {
			if !s.implicitTLS || len(s.early)+n > maxEarlyTLS {
				return watchTalked
			}
			s.early = append(s.early, buf[:n]...)
		}
		if err != nil && !isTimeout(err) {
			return watchGone
		}
	}
}

// watchFailed answers the end of a watched wait that did not bring a slot.
func (s *Session) watchFailed(res watchResult) {
	switch res {
	case watchTalked:
		s.srv.stats.limit(&s.srv.stats.Pregreet)
		s.log().Info("client talked before the banner; closing")
		s.closeWith(errPregreet)
	case watchGone:
		s.srv.stats.limit(&s.srv.stats.WaitGone)
		s.log().Debug("client left while waiting")
	case watchClosing:
		s.replyError(SMTPError421, true)
	case watchTimeout:
		s.srv.stats.limit(&s.srv.stats.WaitTimeout)
		s.log().Warn("no processing slot within WaitTimeout; closing", "wait_timeout", s.cfg.waitTimeout)
		s.closeWith(errWaitTimeout)
	}
}

// reader is the connection as the TLS handshake reads it: on an implicit-TLS port,
// the bytes read while waiting (the ClientHello) come first.
func (s *Session) reader() net.Conn {
	if len(s.early) == 0 {
		return s.raw
	}
	return &earlyConn{Conn: s.raw, r: primedReader{r: s.raw, pending: s.early}}
}

// earlyConn is a connection whose first reads return what was read early.
type earlyConn struct {
	net.Conn
	r primedReader
}

func (c *earlyConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// warnWaiting logs at Warn that connections wait for a slot: the first time, then
// at most once a second, so a flood of waiting connections is not a flood of logs.
func (srv *Server) warnWaiting(s *Session) {
	if !onceASecond(&srv.lastWaitWarn) {
		return
	}
	s.log().Warn("all processing slots busy; connection waits (stress mode on)",
		"max_processings", srv.cfg.maxProcessings, "waiting", srv.adm.waitingNow())
}
