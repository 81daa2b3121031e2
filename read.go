package smtpd

import (
	"errors"
	"io"
	"net"
	"time"
)

// This file reads the client: a command line, waiting for an idle client in little
// memory; a line of an AUTH exchange or of message data; the deadline of each
// request, which Shutdown and stress mode may shorten; and the reply owed when a
// line cannot be read.

var (
	errShuttingDown = errors.New("smtpd: server shutting down")
	errAborted      = errors.New("smtpd: connection closed by Close")
	errWrite        = errors.New("smtpd: writing a reply failed")
	errQuiet        = errors.New("smtpd: the client is quiet: its wait goes to a fresh goroutine")
)

// keepBuffers is how long a session waiting for its client's next command keeps
// its read and reply buffers: a busy client's next command finds them; a quiet
// one's session gives them back and waits in a small read (see waitForClient).
const keepBuffers = 200 * time.Millisecond

// quietAfter is how long a session that holds no buffers (a new one after its
// banner) waits in place before its wait moves to a fresh goroutine (conn.run):
// long enough for a client on the same network to answer the banner, short enough
// that a burst of connections that stay silent is not a burst of 4 KiB stacks.
const quietAfter = 20 * time.Millisecond

// readCommand reads the next command line, of at most soft bytes (longer:
// errSoftLimit, the line dropped). Pending replies are flushed before the client is
// waited for; the whole line has one deadline, however slowly it drips in.
func (c *conn) readCommand(soft int) ([]byte, error) {
	if err := c.await(false); err != nil {
		return nil, err
	}
	return c.r.readLine(soft)
}

// await makes sure the client's next line has begun to arrive: when none is
// buffered, the pending replies are flushed and the client waited for. With
// handOff, a client gone quiet is errQuiet: the caller hands the wait to a fresh
// goroutine (conn.run).
func (c *conn) await(handOff bool) error {
	if c.r.hasLine() {
		return nil
	}
	if err := c.flush(); err != nil {
		return errWrite
	}
	if c.r.buffered() {
		return nil // the line has begun to arrive: readLine waits for the rest under its deadline
	}
	return c.waitForClient(handOff)
}

// waitForClient waits, idle, until the client sends something. A session that
// holds a read buffer (a busy client's) waits with its buffers for keepBuffers;
// after that it gives them back (the long-line buffer too) and waits in a small
// read at this shallow depth of the goroutine's stack, under the line's deadline,
// so that an idle connection costs little. A session that holds none — a new one
// after its banner, one back from being idle — waits in the small read at once,
// without taking a buffer it may not need for minutes. Shutdown and stress mode
// reach the wait through its deadline (interruptIdle, tighten).
func (c *conn) waitForClient(handOff bool) error {
	if !c.enter(connIdle) {
		return errAborted
	}
	defer c.enter(connActive)
	if !c.r.holdsBuffer() { // a new session after its banner, or a quiet one's fresh goroutine
		c.releaseWriter()
		wait := time.Duration(0)
		if handOff {
			wait = quietAfter // a prompt client's next command finds this goroutine waiting
		}
		line, err := c.armRead(true, wait)
		if err != nil {
			return err
		}
		err = c.r.peekWait()
		if handOff && isTimeout(err) && (line.IsZero() || time.Now().Before(line)) && !c.srv.isClosing.Load() {
			return errQuiet
		}
		return c.afterWait(err)
	}
	if _, err := c.armRead(true, keepBuffers); err != nil {
		return err
	}
	err := c.r.fill()
	if err == nil || !isTimeout(err) {
		return c.afterWait(err)
	}
	c.releaseWriter()
	c.r.release()
	if handOff {
		return errQuiet
	}
	if err := c.rearm(); err != nil {
		return err
	}
	return c.afterWait(c.r.peekWait())
}

// afterWait ends an idle wait: the rest of a line that came in part is read
// under the line's deadline; a wait that Shutdown interrupted is errShuttingDown.
func (c *conn) afterWait(err error) error {
	switch {
	case err == nil && !c.r.hasLine():
		c.dmu.Lock()
		c.setReadDeadline(c.lineDeadline)
		c.dmu.Unlock()
	case err != nil && c.srv.isClosing.Load():
		return errShuttingDown
	}
	return err
}

// readLine reads one line of an AUTH exchange or of message data, of at most soft
// bytes, under the request's deadline when it is not buffered already.
func (c *conn) readLine(soft int) ([]byte, error) {
	if !c.live() {
		return nil, errAborted
	}
	if !c.r.hasLine() {
		if err := c.flush(); err != nil {
			return nil, errWrite
		}
		if _, err := c.armRead(false, 0); err != nil {
			return nil, err
		}
	}
	return c.r.readLine(soft)
}

// armRead computes the deadline of the next request — the command timeout,
// shorter in stress mode; inside a transfer the moment it falls under the minimum
// data rate — and sets it on the connection, or the end of a first wait of up to
// wait when that comes sooner; an idle wait while the server shuts down is
// errShuttingDown. It holds dmu, as Shutdown's interrupt and stress mode's
// tightening do, so that neither is lost to a deadline set at the same moment.
func (c *conn) armRead(idle bool, wait time.Duration) (time.Time, error) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if idle && c.srv.isClosing.Load() {
		return time.Time{}, errShuttingDown
	}
	now := time.Now()
	c.rateDeadline = false
	var deadline time.Time
	if timeout := c.timeout(); timeout > 0 {
		deadline = now.Add(timeout)
	}
	if at, ok := c.dataRateDeadline(); ok && (deadline.IsZero() || at.Before(deadline)) {
		deadline, c.rateDeadline = at, true
	}
	c.lineDeadline = deadline
	set := deadline
	if short := now.Add(wait); wait > 0 && (set.IsZero() || short.Before(set)) {
		set = short
	}
	c.setReadDeadline(set)
	return deadline, nil
}

// rearm puts the line's deadline (shortened meanwhile, perhaps) back on the
// connection after a first wait; errShuttingDown when the server shuts down.
func (c *conn) rearm() error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.srv.isClosing.Load() {
		return errShuttingDown
	}
	c.setReadDeadline(c.lineDeadline)
	return nil
}

// setReadDeadline sets the connection's read deadline and remembers it; dmu held.
func (c *conn) setReadDeadline(t time.Time) {
	c.readDeadline = t
	c.raw.SetReadDeadline(t)
}

// interruptIdle makes a session that waits for its client — for a command, or
// for a processing slot — see the shutdown now.
func (c *conn) interruptIdle() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if st := connState(c.state.Load()); st == connIdle || st == connWaiting {
		c.setReadDeadline(time.Unix(1, 0))
	}
}

// tighten gives a session at most until at for the line it waits for: stress mode
// began, and the deadline it waits under may be later. (Later lines get stress
// mode's deadline from armRead.)
func (c *conn) tighten(at time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	st := connState(c.state.Load())
	if st != connIdle && st != connActive || !c.lineDeadline.IsZero() && c.lineDeadline.Before(at) {
		return
	}
	c.lineDeadline = at
	if c.readDeadline.IsZero() || at.Before(c.readDeadline) {
		c.setReadDeadline(at)
	}
}

// readFailed answers the reason a line could not be read, where one is owed, and
// ends the session.
func (c *conn) readFailed(err error) {
	switch {
	case err == errAborted || err == errWrite:
		c.log().Debug("session ended", "err", err)
	case err == errShuttingDown || c.srv.isClosing.Load():
		c.replyError(SMTPError421, true)
	case err == errLineLimit:
		c.srv.stats.limit(&c.srv.stats.LineTooLong)
		c.log().Warn("line over IOBufferMaxSize; closing", "limit", c.cfg.bufferMax)
		c.replyError(errLineTooLong, true)
	case isTimeout(err) && c.rateDeadline:
		c.srv.stats.limit(&c.srv.stats.MinDataRate)
		c.log().Info("data transfer under the minimum rate; closing", "bytes", c.dataBytes, "rate", c.minDataRate())
		c.replyError(errSlowData, true)
	case isTimeout(err):
		c.srv.stats.limit(&c.srv.stats.CommandTimeout)
		c.log().Info("client timed out; closing", "timeout", c.timeout())
		c.replyError(errTimeout, true)
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		c.log().Debug("client closed the connection")
	default:
		c.log().Debug("read failed", "err", err)
	}
	c.enter(connClosing)
}

// isTimeout reports whether err is a read deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
