package smtpd

import (
	"context"
	"log/slog"
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
func (c *conn) stressed() bool { return c.srv.adm.waitingNow() > 0 }

// timeout is the time a client has for one request (a whole line): IOCmdTimeout,
// at most stressTimeout in stress mode; 0 is none.
func (c *conn) timeout() time.Duration {
	t := c.cfg.timeout
	if c.stressed() && (t == 0 || t > stressTimeout) {
		t = stressTimeout
	}
	return t
}

// stressLimit returns limit, or lower in stress mode; limit < 0 means none (the
// operator's explicit choice, kept under stress too).
func (c *conn) stressLimit(limit, stress int) int {
	if limit >= 0 && c.stressed() && (limit == 0 || limit > stress) {
		return stress
	}
	return limit
}

// overErrorLimit reports whether the error just counted is one past MaxErrors.
func (c *conn) overErrorLimit() bool {
	max := c.stressLimit(c.cfg.maxErrors, stressMaxErrors)
	return max >= 0 && c.errors > max
}

// countJunk counts a junk command; past MaxJunkCommands it answers 421 and
// returns false.
func (c *conn) countJunk() bool {
	c.junk++
	max := c.stressLimit(c.cfg.maxJunk, stressMaxJunk)
	if max < 0 || c.junk <= max {
		return true
	}
	c.srv.stats.limit(&c.srv.stats.MaxJunkCommands)
	c.log().Warn("too many junk commands; closing", "junk", c.junk)
	c.replyError(errTooManyJunk, true)
	return false
}

// minDataRate is the least average rate, in bytes/s, of a message transfer; 0 is none.
func (c *conn) minDataRate() int {
	r := c.cfg.minDataRate
	if c.stressed() && r < stressMinDataRate {
		r = stressMinDataRate
	}
	return r
}

// dataRateDeadline is, inside a transfer, the moment its average rate falls under
// the minimum if no more bytes come.
func (c *conn) dataRateDeadline() (time.Time, bool) {
	rate := c.minDataRate()
	if c.dataStart.IsZero() || rate <= 0 {
		return time.Time{}, false
	}
	allowed := time.Duration(float64(c.dataBytes) / float64(rate) * float64(time.Second))
	return c.dataStart.Add(dataRateGrace + allowed), true
}

// withinConnectionLimits refuses a connection over MaxConnections or
// MaxConnectionsPerIP with 421.
func (c *conn) withinConnectionLimits() bool {
	switch {
	case c.overLimit:
		c.srv.stats.limit(&c.srv.stats.MaxConnections)
		c.log().Warn("too many connections; refused", "max_connections", c.cfg.maxConnections)
		c.replyError(errBusy, true)
		return false
	case !c.srv.countIP(c):
		c.refusePerIP()
		return false
	}
	return true
}

// refusePerIP answers a connection over MaxConnectionsPerIP (counted under its
// address as sent, or as PROXY or XCLIENT gave it) with 421: counted and logged.
func (c *conn) refusePerIP() {
	c.srv.stats.limit(&c.srv.stats.MaxConnectionsPerIP)
	c.log().Warn("too many connections from one address; refused", "max_per_ip", c.cfg.maxPerIP)
	c.replyError(errPerIP, true)
}

// countIP counts s against MaxConnectionsPerIP under its RemoteIP; false when that
// address has its maximum already.
func (srv *Server) countIP(c *conn) bool {
	if srv.cfg.maxPerIP <= 0 {
		return true
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.perIP[c.s.RemoteIP] >= srv.cfg.maxPerIP {
		return false
	}
	srv.perIP[c.s.RemoteIP]++
	c.ipCounted = c.s.RemoteIP
	return true
}

// uncountIP takes s out of the per-address counts.
func (srv *Server) uncountIP(c *conn) {
	if c.ipCounted == "" {
		return
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.perIP[c.ipCounted]--; srv.perIP[c.ipCounted] <= 0 {
		delete(srv.perIP, c.ipCounted)
	}
	c.ipCounted = ""
}

// reserveBuffered grows this session's share of MaxBufferedData to size bytes;
// false when the server-wide budget does not allow it.
func (c *conn) reserveBuffered(size int) bool {
	if size <= c.reserved {
		return true
	}
	if !c.srv.buffered.reserve(int64(size-c.reserved), int64(c.cfg.maxBuffered)) {
		return false
	}
	c.reserved = size
	return true
}

// releaseBuffered gives this session's buffered message data, and its share of
// MaxBufferedData, back.
func (c *conn) releaseBuffered() {
	c.s.Message.Data = nil
	if c.reserved > 0 {
		c.srv.buffered.release(int64(c.reserved))
		c.reserved = 0
	}
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
func (c *conn) accepted(size, rcpts int) {
	c.srv.stats.MessagesAccepted.Add(1)
	c.srv.stats.BytesAccepted.Add(int64(size))
	c.errors, c.junk = 0, 0
	if !c.cfg.logger.Enabled(context.Background(), slog.LevelInfo) {
		return // the session's logger is not even made
	}
	c.log().LogAttrs(context.Background(), slog.LevelInfo, "message accepted", slog.String("id", c.s.Message.ID),
		slog.String("from", excerpt(c.s.Envelope.From)), slog.Int("rcpts", rcpts),
		slog.Int("bytes", size), slog.Duration("duration", time.Since(c.s.Message.ReceivedAt).Round(time.Millisecond)))
}

// greetDelay holds the banner back for GreetDelay; a client that talks first is a
// pregreet: 554 and closed.
func (c *conn) greetDelay() bool {
	if c.cfg.greetDelay <= 0 {
		return true
	}
	// The end of the wait is answered as a slot wait's is: a client that talked
	// first gets its 554 and is counted (it used to be closed without a reply).
	switch res := c.watchSilence(c.cfg.greetDelay, nil); res {
	case watchTimeout:
		return true
	case watchGone:
		c.log().Debug("client left during GreetDelay")
	default:
		c.watchFailed(res)
	}
	return false
}
