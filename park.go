package smtpd

import (
	"errors"
	"net"
	"time"
)

// This file parks idle sessions. A session's goroutine has a deep stack (hooks,
// TLS, logging) that the runtime does not shrink while it is blocked in a read.
// When a client has sent nothing for parkAfter, the session's goroutine ends; on
// Linux one poller (park_linux.go) watches every parked connection with epoll and
// starts a goroutine for a session when its client sends again, its line's
// deadline passes, or the server stops it; elsewhere a small goroutine per parked
// session waits in a read. An idle connection costs its Session and buffers of a
// few hundred bytes, no goroutine. Busy clients never park, so their commands cost
// no hand-off.

// parkAfter is how long a client may be silent before its session parks.
const parkAfter = 200 * time.Millisecond

// errParked is readCommand's word that the session parked.
var errParked = errors.New("smtpd: session parked")

// waitOrPark waits for the client's next bytes: up to parkAfter in place (into the
// read buffer), then parked (errParked, the buffers given back), both within the
// line's deadline.
func (s *Session) waitOrPark() error {
	deadline := s.lineDeadline
	short := time.Now().Add(parkAfter)
	if !deadline.IsZero() && !short.Before(deadline) {
		s.raw.SetReadDeadline(deadline)
		return s.r.fill()
	}
	s.raw.SetReadDeadline(short)
	err := s.r.fill()
	switch {
	case err == nil && s.r.hasLine():
		return nil // the line is here: no read needs the deadline (the next one sets its own)
	case err == nil:
		s.raw.SetReadDeadline(deadline) // the rest of the line comes under the line's deadline
		return nil
	case isTimeout(err) && !s.srv.isClosing.Load() &&
		(deadline.IsZero() || time.Now().Before(deadline)):
		s.raw.SetReadDeadline(deadline)
		s.releaseWriter() // a parked session holds no buffers
		s.r.release()
		return errParked
	case s.srv.isClosing.Load():
		return errShuttingDown
	}
	return err
}

// isTimeout reports whether err is a read deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// park hands the wait for the client to the poller, or to a new goroutine where
// there is none, and lets the caller's goroutine end.
func (s *Session) park() {
	if !parkPolled(s) {
		go s.resume(nil)
	}
}

// resume runs a parked session on: why is the reason its wait ended without the
// client's bytes (a deadline, Shutdown, Close), or nil: then it reads them (or, in
// the goroutine fallback, waits for them).
func (s *Session) resume(why error) {
	switch {
	case why != nil:
		s.parkErr = why
	case s.aborted.Load():
		s.parkErr = errAborted
	case s.srv.isClosing.Load():
		s.parkErr = errShuttingDown
	default:
		s.parkErr = s.r.peekWait()
	}
	s.resumed = true
	s.loop()
}
