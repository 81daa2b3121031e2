//go:build linux

package smtpd

import (
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

// parker is the process's poller of parked sessions: one epoll instance and one
// goroutine for every Server. Each parked connection is registered one-shot with a
// token (not its descriptor) that names the session, so that a descriptor number
// reused by another connection can never wake the wrong session.
var parker struct {
	once   sync.Once
	epfd   int
	ok     bool
	mu     sync.Mutex
	next   uint64
	parked map[uint64]*parkedSession
	burst  int         // sessions parked since memory was last returned
	settle *time.Timer // returns it once a burst has settled
}

// A burst of parkBurst sessions parking is followed, burstSettle after the last
// of them, by a return of freed memory (their goroutines' stacks) to the operating
// system.
const (
	parkBurst   = 256
	burstSettle = 300 * time.Millisecond
)

func returnBurstMemory() {
	parker.mu.Lock()
	parker.burst = 0
	parker.mu.Unlock()
	runtime.GC()         // the pooled buffers of the parked sessions move to the pools' victim caches,
	debug.FreeOSMemory() // and this collection frees them with the stacks, and returns the memory
}

// parkedSession is a session waiting in the poller.
type parkedSession struct {
	s     *Session
	fd    int
	timer *time.Timer // the line's deadline
}

// parkPolled registers s with the poller; false when it cannot (no epoll, no
// descriptor): s then waits in a goroutine.
func parkPolled(s *Session) bool {
	parker.once.Do(startParker)
	fd, ok := connFD(s)
	if !parker.ok || !ok {
		return false
	}
	p := &parkedSession{s: s, fd: fd}
	parker.mu.Lock()
	defer parker.mu.Unlock()
	parker.next++
	id := parker.next
	s.parkID.Store(id)
	// Shutdown and Close set their flag before they look for a parked session: a
	// session that parks while they begin sees the flag here, or they see its id
	// (and wait for the registration below to finish, under mu).
	if s.aborted.Load() || s.srv.isClosing.Load() {
		s.parkID.Store(0)
		return false
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(id), Pad: int32(id >> 32)}
	if syscall.EpollCtl(parker.epfd, syscall.EPOLL_CTL_ADD, fd, &ev) != nil {
		s.parkID.Store(0)
		return false
	}
	parker.parked[id] = p
	if !s.lineDeadline.IsZero() {
		p.timer = time.AfterFunc(time.Until(s.lineDeadline), func() { wake(id, os.ErrDeadlineExceeded) })
	}
	if parker.burst++; parker.burst >= parkBurst {
		// A burst of sessions went idle: once it settles, the stacks of their
		// goroutines go back to the operating system.
		if parker.settle == nil {
			parker.settle = time.AfterFunc(burstSettle, returnBurstMemory)
		} else {
			parker.settle.Reset(burstSettle)
		}
	}
	return true
}

// tightenParked gives srv's parked sessions at most d more to send their next
// line: stress mode began, and the wait they parked with may be longer.
func tightenParked(srv *Server, d time.Duration) {
	parker.once.Do(startParker)
	at := time.Now().Add(d)
	parker.mu.Lock()
	defer parker.mu.Unlock()
	for id, p := range parker.parked {
		s := p.s
		if s.srv != srv || !s.lineDeadline.IsZero() && s.lineDeadline.Before(at) {
			continue
		}
		s.lineDeadline = at
		s.raw.SetReadDeadline(at)
		if p.timer != nil {
			p.timer.Stop()
		}
		p.timer = time.AfterFunc(d, func() { wake(id, os.ErrDeadlineExceeded) })
	}
}

// connFD returns the descriptor of s's TCP connection.
func connFD(s *Session) (int, bool) {
	sc, ok := s.raw.(syscall.Conn)
	if !ok {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd := -1
	if rc.Control(func(d uintptr) { fd = int(d) }) != nil || fd < 0 {
		return 0, false
	}
	return fd, true
}

// unpark wakes s if it is parked: why is the reason (nil: the client sent
// something). It must be called before s's connection is closed.
func unpark(s *Session, why error) {
	if id := s.parkID.Load(); id != 0 {
		wake(id, why)
	}
}

// wake resumes the session parked under id, if it still is: a timer armed for one
// park never wakes a later one.
func wake(id uint64, why error) {
	if p := take(id); p != nil {
		go p.s.resume(why)
	}
}

// take removes a parked session from the poller; nil when another waker took it.
// The descriptor leaves the poller under mu, so no waker can close it in between.
func take(id uint64) *parkedSession {
	parker.mu.Lock()
	defer parker.mu.Unlock()
	p := parker.parked[id]
	if p == nil {
		return nil
	}
	delete(parker.parked, id)
	if p.timer != nil {
		p.timer.Stop()
	}
	syscall.EpollCtl(parker.epfd, syscall.EPOLL_CTL_DEL, p.fd, nil)
	p.s.parkID.Store(0)
	return p
}

// startParker makes the epoll instance and starts the poller's goroutine.
func startParker() {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return
	}
	parker.epfd, parker.ok = fd, true
	parker.parked = make(map[uint64]*parkedSession)
	go pollParked()
}

// pollParked wakes the sessions whose clients sent something (or hung up).
func pollParked() {
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(parker.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond) // not expected; never a busy loop
			continue
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if p := take(id); p != nil {
				go p.s.resume(nil)
			}
		}
	}
}
