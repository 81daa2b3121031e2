package smtpd

import (
	"errors"
	"net"
	"time"
)

// This file parks idle sessions. A session's goroutine has a deep stack (hooks,
// TLS, logging) that the runtime does not shrink while it is blocked in a read.
// When a client has sent nothing for parkAfter, the session's goroutine ends and a
// fresh one, with a small stack, waits for the client's next bytes and then runs
// the session on: an idle connection costs a few KiB, not a deep stack. Busy
// clients never park, so their commands cost no goroutine hand-off.

// parkAfter is how long a client may be silent before its session parks.
const parkAfter = 200 * time.Millisecond

// errParked is readCommand's word that the session parked.
var errParked = errors.New("smtpd: session parked")

// waitOrPark waits for the client's next bytes: up to parkAfter in place, then
// parked (errParked), both within the line's deadline. It holds no read buffer.
func (s *Session) waitOrPark() error {
	deadline := s.lineDeadline
	short := time.Now().Add(parkAfter)
	if !deadline.IsZero() && !short.Before(deadline) {
		return s.r.waitIdle()
	}
	s.raw.SetReadDeadline(short)
	err := s.r.waitIdle()
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() && !s.srv.isClosing.Load() &&
		(deadline.IsZero() || time.Now().Before(deadline)) {
		s.raw.SetReadDeadline(deadline)
		return errParked
	}
	s.raw.SetReadDeadline(deadline)
	if s.srv.isClosing.Load() && err != nil {
		return errShuttingDown
	}
	return err
}

// park hands the wait for the client to a new goroutine and lets the caller's end.
func (s *Session) park() { go s.resume() }

// resume waits, parked, for the client's next bytes (or the line's deadline, or
// Shutdown interrupting it, or Close), then runs the session on.
func (s *Session) resume() {
	if s.srv.isClosing.Load() {
		s.parkErr = errShuttingDown
	} else {
		s.parkErr = s.r.peekWait()
	}
	s.resumed = true
	s.loop()
}
