package milter

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// This file is the connection to one milter as go-milter sees it: a net.Conn that
// gives every read and write the current stage's timeout (go-milter has one read
// timeout for all), fails a packet whose length header is 0 or absurd before
// go-milter allocates it, and bounds the bytes one answer may carry.

// maxPacket is the largest packet a milter may send. Its legitimate packets are a
// reply text, a header, or a body-replacement chunk: all under 64 KiB in practice
// (libmilter's chunk is 65535 bytes); go-milter would allocate up to 512 MiB.
const maxPacket = 1 << 20

// Errors of a milter that breaks the protocol.
var (
	errBadPacket = errors.New("milter: bad packet length")
	errTooMuch   = errors.New("milter: answer over the size limit")
	errClosing   = errors.New("milter: SMTP session ended")
)

// guardConn is a milter connection as go-milter uses it. Its writes are
// buffered until the next read (or Flush): go-milter writes a packet's length and
// its data apart, and the macros before their command; buffered, an event is one
// write and its answer one read.
type guardConn struct {
	net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration // of the stage being run; set by the caller before each call
	budget  int64         // bytes the milter may still send in answer to the current call
	dead    atomic.Bool   // the SMTP session ended: every wait ends at once

	hdr    [4]byte // the length header being read
	hdrN   int
	remain uint32 // bytes of the current packet still to read
}

// stage sets the timeout and the size budget of the next call.
func (c *guardConn) stage(timeout time.Duration, budget int64) {
	c.timeout, c.budget = timeout, budget
}

// deadline is when a wait that starts now must end.
func (c *guardConn) deadline() time.Time {
	if c.dead.Load() {
		return time.Unix(1, 0)
	}
	return time.Now().Add(c.timeout)
}

// SetReadDeadline replaces go-milter's one read timeout by the stage's.
func (c *guardConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		return c.Conn.SetReadDeadline(t)
	}
	return c.Conn.SetReadDeadline(c.deadline())
}

// SetWriteDeadline replaces go-milter's write timeout by the stage's.
func (c *guardConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		return c.Conn.SetWriteDeadline(t)
	}
	return c.Conn.SetWriteDeadline(c.deadline())
}

// Read checks the packet framing as go-milter reads it: a 4-byte length, then
// that many bytes. A length of 0 (which go-milter would index out of range) or
// over maxPacket, or a packet past the call's budget, fails the read.
func (c *guardConn) Read(p []byte) (int, error) {
	if c.dead.Load() {
		return 0, errClosing
	}
	if err := c.Flush(); err != nil {
		return 0, err
	}
	if c.remain == 0 {
		p = p[:min(len(p), len(c.hdr)-c.hdrN)]
		n, err := c.r.Read(p)
		copy(c.hdr[c.hdrN:], p[:n])
		c.hdrN += n
		if c.hdrN < len(c.hdr) {
			return n, err
		}
		c.hdrN = 0
		size := binary.BigEndian.Uint32(c.hdr[:])
		switch {
		case size == 0 || size > maxPacket:
			return 0, fmt.Errorf("%w: %d", errBadPacket, size)
		case int64(size) > c.budget:
			return 0, errTooMuch
		}
		c.budget -= int64(size)
		c.remain = size
		return n, err
	}
	p = p[:min(len(p), int(c.remain))]
	n, err := c.r.Read(p)
	c.remain -= uint32(n)
	return n, err
}

// Write buffers p; Flush (or the next Read) sends it.
func (c *guardConn) Write(p []byte) (int, error) {
	if c.dead.Load() {
		return 0, errClosing
	}
	return c.w.Write(p)
}

// Flush sends what Write buffered, within the stage's timeout.
func (c *guardConn) Flush() error {
	if c.w.Buffered() == 0 {
		return nil
	}
	c.Conn.SetWriteDeadline(c.deadline())
	return c.w.Flush()
}

// Close sends what is buffered (a QUIT), waiting a second at most, and closes
// the connection.
func (c *guardConn) Close() error {
	if c.w.Buffered() > 0 && !c.dead.Load() {
		c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		c.w.Flush()
	}
	return c.Conn.Close()
}

// kill makes every wait of the connection end now (the SMTP session is over).
func (c *guardConn) kill() {
	c.dead.Store(true)
	c.Conn.SetDeadline(time.Unix(1, 0))
}

// dialer dials one milter for go-milter (its Dialer interface) within the
// connect timeout, and keeps the guarded connection for the session.
type dialer struct {
	ctx     context.Context
	timeout time.Duration
	conn    *guardConn
}

// Dial connects to the milter.
func (d *dialer) Dial(network, address string) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	c, err := nd.DialContext(d.ctx, network, address)
	if err != nil {
		return nil, err
	}
	d.conn = &guardConn{Conn: c, r: bufio.NewReaderSize(c, 4096), w: bufio.NewWriterSize(c, 8192),
		timeout: d.timeout, budget: maxPacket}
	return d.conn, nil
}
