package smtpd

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// This file holds the abuse limits of a session: connection counts, errors, junk
// commands, the data rate, the server-wide budget of buffered message data, and
// stress mode, which tightens them while connections wait for a slot.

// Stress mode's limits (Postfix's stress-dependent defaults): while any connection
// waits for a processing slot, sessions run under these.
const (
	stressTimeout     = 10 * time.Second // per request, or IOCmdTimeout if lower
	stressMaxErrors   = 1
	stressMaxJunk     = 1
	stressMinDataRate = 500 // bytes/s over a DATA or BDAT transfer
)

// dataRateGrace is how long a transfer runs before its average rate is held to the
// minimum: a slow start (TCP slow start, a hook's first work) is not punished.
const dataRateGrace = 2 * time.Second

// stressed reports whether the server is in stress mode: connections wait for a slot.
func (s *Session) stressed() bool { return s.srv.adm.waitingNow() > 0 }

// timeout is the time a client has for one request (a whole line): IOCmdTimeout,
// at most stressTimeout in stress mode; 0 is none.
func (s *Session) timeout() time.Duration {
	t := s.cfg.timeout
	if s.stressed() && (t == 0 || t > stressTimeout) {
		t = stressTimeout
	}
	return t
}

// stressLimit returns limit, or lower in stress mode; limit < 0 means none (the
// operator's explicit choice, kept under stress too).
func (s *Session) stressLimit(limit, stress int) int {
	if limit >= 0 && s.stressed() && (limit == 0 || limit > stress) {
		return stress
	}
	return limit
}

// overErrorLimit reports whether the error just counted is one past MaxErrors.
func (s *Session) overErrorLimit() bool {
	max := s.stressLimit(s.cfg.maxErrors, stressMaxErrors)
	return max >= 0 && s.errors > max
}

// countJunk counts a junk command; past MaxJunkCommands it answers 421 and
// returns false.
func (s *Session) countJunk() bool {
	s.junk++
	max := s.stressLimit(s.cfg.maxJunk, stressMaxJunk)
	if max < 0 || s.junk <= max {
		return true
	}
	s.srv.stats.limit(&s.srv.stats.MaxJunkCommands)
	s.log().Warn("too many junk commands; closing", "junk", s.junk)
	s.replyError(errTooManyJunk, true)
	return false
}

// minDataRate is the least average rate, in bytes/s, of a message transfer; 0 is none.
func (s *Session) minDataRate() int {
	r := s.cfg.minDataRate
	if s.stressed() && r < stressMinDataRate {
		r = stressMinDataRate
	}
	return r
}

// dataRateDeadline is, inside a transfer, the moment its average rate falls under
// the minimum if no more bytes come.
func (s *Session) dataRateDeadline() (time.Time, bool) {
	rate := s.minDataRate()
	if s.dataStart.IsZero() || rate <= 0 {
		return time.Time{}, false
	}
	allowed := time.Duration(float64(s.dataBytes) / float64(rate) * float64(time.Second))
	return s.dataStart.Add(dataRateGrace + allowed), true
}

// withinConnectionLimits refuses a connection over MaxConnections or
// MaxConnectionsPerIP with 421.
func (s *Session) withinConnectionLimits() bool {
	switch {
	case s.overLimit:
		s.srv.stats.limit(&s.srv.stats.MaxConnections)
		s.log().Warn("too many connections; refused", "max_connections", s.cfg.maxConnections)
		s.replyError(errBusy, true)
		return false
	case !s.srv.countIP(s):
		s.refusePerIP()
		return false
	}
	return true
}

// refusePerIP answers a connection over MaxConnectionsPerIP (counted under its
// address as sent, or as PROXY or XCLIENT gave it) with 421: counted and logged.
func (s *Session) refusePerIP() {
	s.srv.stats.limit(&s.srv.stats.MaxConnectionsPerIP)
	s.log().Warn("too many connections from one address; refused", "max_per_ip", s.cfg.maxPerIP)
	s.replyError(errPerIP, true)
}

// countIP counts s against MaxConnectionsPerIP under its RemoteIP; false when that
// address has its maximum already.
func (srv *Server) countIP(s *Session) bool {
	if srv.cfg.maxPerIP <= 0 {
		return true
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.perIP[s.RemoteIP] >= srv.cfg.maxPerIP {
		return false
	}
	srv.perIP[s.RemoteIP]++
	s.ipCounted = s.RemoteIP
	return true
}

// uncountIP takes s out of the per-address counts.
func (srv *Server) uncountIP(s *Session) {
	if s.ipCounted == "" {
		return
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.perIP[s.ipCounted]--; srv.perIP[s.ipCounted] <= 0 {
		delete(srv.perIP, s.ipCounted)
	}
	s.ipCounted = ""
}

// reserveBuffered grows this session's share of MaxBufferedData to size bytes;
// false when the server-wide budget does not allow it.
func (s *Session) reserveBuffered(size int) bool {
	if size <= s.reserved {
		return true
	}
	if !s.srv.buffered.reserve(int64(size-s.reserved), int64(s.cfg.maxBuffered)) {
		return false
	}
	s.reserved = size
	return true
}

// releaseBuffered gives this session's buffered message data, and its share of
// MaxBufferedData, back.
func (s *Session) releaseBuffered() {
	s.Message.Data = nil
	if s.reserved > 0 {
		s.srv.buffered.release(int64(s.reserved))
		if s.reserved >= collectAfterGrowth {
			runtime.GC() // its memory reused by the next message, not added to
			s.srv.returnMemory()
		}
		s.reserved = 0
	}
}

// returnMemory gives the memory of large messages back to the operating system at
// once (not minutes later, as the runtime's scavenger would), at most once a second.
func (srv *Server) returnMemory() {
	if !onceASecond(&srv.lastFreeOS) {
		return
	}
	go debug.FreeOSMemory() // a GC and a scavenge; the session need not wait
}

// onceASecond reports whether a second has passed since it last said yes for last
// (the time in Unix nanoseconds), and then takes the turn: of concurrent callers
// only one does.
func onceASecond(last *atomic.Int64) bool {
	now := time.Now().UnixNano()
	prev := last.Load()
	return now-prev >= int64(time.Second) && last.CompareAndSwap(prev, now)
}

// accepted records a message delivered to rcpts recipients: counted, logged once
// at Info, and the error and junk counts start again (Postfix's limits are
// "without delivering mail").
func (s *Session) accepted(size, rcpts int) {
	s.srv.stats.MessagesAccepted.Add(1)
	s.srv.stats.BytesAccepted.Add(int64(size))
	s.errors, s.junk = 0, 0
	if !s.cfg.logger.Enabled(context.Background(), slog.LevelInfo) {
		return // the session's logger is not even made
	}
	s.log().LogAttrs(context.Background(), slog.LevelInfo, "message accepted",
		slog.String("from", excerpt(s.Envelope.From)), slog.Int("rcpts", rcpts),
		slog.Int("bytes", size), slog.Duration("duration", time.Since(s.Message.ReceivedAt).Round(time.Millisecond)))
}

// greetDelay holds the banner back for GreetDelay; a client that talks first is a
// pregreet: 554 and closed.
func (s *Session) greetDelay() bool {
	if s.cfg.greetDelay <= 0 {
		return true
	}
	// The end of the wait is answered as a slot wait's is: a client that talked
	// first gets its 554 and is counted (it used to be closed without a reply).
	switch res := s.watchSilence(s.cfg.greetDelay, nil); res {
	case watchTimeout:
		return true
	case watchGone:
		s.log().Debug("client left during GreetDelay")
	default:
		s.watchFailed(res)
	}
	return false
}
