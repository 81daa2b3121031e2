package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one client connection: the machinery behind the Session its hooks see,
// as net/http's conn is behind a Request. Its serve method holds the connection's
// whole life on one goroutine — the PROXY header, OnConnect and the limits, the wait
// for a processing slot, the banner, the command loop with its idle waits, the end —
// and its lifecycle is one atomic state, which Shutdown and Close read.
type conn struct {
	srv *Server
	cfg *config
	h   Handler
	s   *Session // what the hooks see

	raw      net.Conn   // as accepted; deadlines are set on it
	wmu      sync.Mutex // guards nc and w while replies go out, and who sends the last one
	nc       net.Conn   // raw, or the TLS connection over it
	r        *lineReader
	w        *bufio.Writer // nil while idle (see releaseWriter)
	tlsState *tls.ConnectionState
	state    atomic.Int32 // a connState
	greeted  atomic.Bool  // the 220 banner went out: replies before it are greetings, never with an enhanced code

	dmu          sync.Mutex // guards the read deadline: the session sets it, Shutdown and stress mode shorten it
	lineDeadline time.Time  // the deadline of the request read now; zero: none
	readDeadline time.Time  // the read deadline set on raw now (a first idle wait's may come sooner)
	rateDeadline bool       // lineDeadline is MinDataRate's, not the timeout's

	ctxMu    sync.Mutex         // guards ctx, cancel and canceled: hooks' goroutines and Close reach them
	ctx      context.Context    // made at its first use (context): most sessions never need one
	cancel   context.CancelFunc // ctx's
	canceled bool               // the connection ended (or Close took it): a context made now is done
	logger   *slog.Logger       // made at its first use (log)
	debug    bool               // Debug is enabled: protocol traces are logged

	implicitTLS bool   // an implicit-TLS port: the handshake follows the wait for a slot
	tlsAccepted bool   // raw is a *tls.Conn from a TLS listener (Serve): the handshake comes first
	early       []byte // bytes of an implicit-TLS client read while it waited for a slot
	overLimit   bool   // accepted over MaxConnections: 421 after OnConnect
	connected   bool   // OnConnect may have run: OnDisconnect is owed
	holdsSlot   bool   // holds a processing slot
	finished    bool   // run's work returned normally (not by a panic or runtime.Goexit)
	ipCounted   string // the address counted against MaxConnectionsPerIP

	// The SMTP dialog and its counters.
	phase        phase
	xclientOK    bool // XCLIENT is allowed from this client
	xclientHelo  bool // Helo came from XCLIENT: a later HELO/EHLO does not replace it
	authFailures int
	errors       int      // error replies since the last delivered message (MaxErrors)
	junk         int      // junk commands since the last delivered message (MaxJunkCommands)
	overshoot    int      // RCPTs of this transaction refused past MaxRecipients
	commands     int      // command lines read
	transactions int      // MAIL FROM commands that reached OnMailFrom: Message.ID's counter
	params       []string // the ESMTP parameters of the MAIL or RCPT whose hook runs
	reserved     int      // bytes of MaxBufferedData this session holds
	xfer         transfer // the message being received
	bdat         *transfer
	lineRefused  error // a BDAT command line broke CRLFStrict: its octets are read, then this answers
	dataStart    time.Time
	dataBytes    int
}

// connState is where a connection is in its life. Only the session's goroutine
// moves it between the live states; Close moves it to connAborted from any of them.
type connState int32

const (
	connNew       connState = iota // before the banner: PROXY header, OnConnect, limits, GreetDelay
	connWaiting                    // waiting for a processing slot, watched
	connHandshake                  // a TLS handshake runs: no plaintext may be written
	connIdle                       // waiting for the client's next command line
	connActive                     // running a command: its arguments, its data, its hooks
	connClosing                    // the session ends; its last reply (221, 421), if any, goes out
	connAborted                    // Close took the connection over: its 421 was the last reply
)

// phase is where the session is in RFC 5321's command sequence (4.1.4).
type phase int

const (
	phaseGreet phase = iota // no HELO/EHLO yet
	phaseReady              // greeted, no transaction
	phaseMail               // MAIL accepted
	phaseRcpt               // at least one RCPT accepted
)

func newConn(srv *Server, nc net.Conn, implicitTLS bool) *conn {
	c := &conn{srv: srv, cfg: &srv.cfg, h: srv.cfg.handler, raw: nc, nc: nc, implicitTLS: implicitTLS}
	_, c.tlsAccepted = nc.(*tls.Conn)
	s := &Session{c: c, ConnectedAt: time.Now().UTC(), Message: Message{CRLF: "\r\n"}}
	s.LocalIP, s.LocalPort = splitAddr(nc.LocalAddr())
	s.RemoteIP, s.RemotePort = splitAddr(nc.RemoteAddr())
	s.ID = srv.idPrefix + strconv.FormatUint(srv.nextID.Add(1), 36)
	c.s = s
	c.setLogger()
	return c
}

// serve runs the connection from accept to close, on one goroutine at a time.
func (c *conn) serve() { c.run(c.open) }

// open is the connection's life from accept: a TLS listener's handshake, the
// PROXY header, the welcome, then the commands; it reports whether the client went
// quiet (see run).
func (c *conn) open() (quiet bool) {
	if c.tlsAccepted && !c.handshake() {
		return false
	}
	return c.readProxyHeader() && c.welcome() && c.commandLoop()
}

// run runs work on the current goroutine. However work ends — a return, a panic in
// a hook, a hook calling runtime.Goexit (as t.FailNow does) — the client gets its
// last reply, OnDisconnect runs and the slot is given back; unless the client went
// quiet: then the session goes on, waiting for it, on a new goroutine, and this
// one ends. A goroutine's stack grows with its first write (4 KiB: the write's
// system-call path does not fit in 2) and Go shrinks no stack below 4 KiB that
// more than a few hundred bytes of are in use, so a quiet session's wait starts on
// a fresh stack: the connection still has one goroutine, and an idle one costs 2
// KiB of stack instead of 4.
func (c *conn) run(work func() bool) {
	quiet := false
	defer func() {
		if quiet {
			go c.waitQuiet() // the last thing this goroutine does: the next one owns the conn
			return
		}
		c.end()
	}()
	defer c.recoverHook()
	c.finished = false
	quiet = work()
	c.finished = true
}

// waitQuiet is the first work of a fresh goroutine (see run): the wait for a
// quiet client, at the very top of its stack, then the commands.
func (c *conn) waitQuiet() {
	err := c.waitForClient(false)
	c.run(func() bool {
		if err != nil {
			c.readFailed(err)
			return false
		}
		return c.commandLoop()
	})
}

// welcome is the session's life up to its banner: OnConnect, the connection limits,
// the wait for a processing slot, GreetDelay, implicit TLS. False when the session
// ended there (its reply, if one was owed, sent).
func (c *conn) welcome() bool {
	s := c.s
	c.connected = true
	c.xclientOK = c.cfg.xclientNets != nil && inNetworks(c.cfg.xclientNets, s.RemoteIP)
	c.lookupHosts()
	s.LocalResponse = s.LocalHost + " says welcome!"
	s.HeloResponse = s.LocalHost + " at your service!"
	if c.debug {
		c.log().Debug("connected", "local", net.JoinHostPort(s.LocalIP, strconv.Itoa(s.LocalPort)))
	}
	if err := c.h.OnConnect(s); err != nil {
		if _, ok := asSMTPError(err); !ok {
			err = &wrappedReply{reply: SMTPError421, err: err}
		}
		c.replyError(err, true)
		return false
	}
	if !c.withinConnectionLimits() || !c.admit() {
		return false
	}
	c.holdsSlot = true
	c.srv.stats.SessionsActive.Add(1)
	if c.srv.isClosing.Load() { // a slot freed by Close or Shutdown: no banner now
		c.replyError(SMTPError421, true)
		return false
	}
	if !c.greetDelay() {
		return false
	}
	// Only now: waiting connections stay small. The raw connection: on an
	// implicit-TLS port the bytes read early go to the handshake, which resets r.
	c.r = newLineReader(c.raw, c.cfg.bufferMax)
	if c.implicitTLS && !c.handshake() {
		return false
	}
	if !c.enter(connActive) {
		return false
	}
	c.greeted.Store(true)
	c.sendText(220, oneLine(s.LocalResponse))
	return true
}

// enter moves the connection to the live state st; false when it is ending
// (closing, or aborted by Close).
func (c *conn) enter(st connState) bool {
	for {
		cur := c.state.Load()
		if connState(cur) >= connClosing {
			return false
		}
		if c.state.CompareAndSwap(cur, int32(st)) {
			return true
		}
	}
}

// live reports whether the session goes on: not closing, not aborted.
func (c *conn) live() bool { return connState(c.state.Load()) < connClosing }

// recoverHook turns a panic in a hook into a log line with its stack and a 421;
// a hook that ended the goroutine with runtime.Goexit (t.FailNow in a test's
// handler) gets a 421 too, never a 250.
func (c *conn) recoverHook() {
	v := recover()
	switch {
	case v != nil:
		c.log().Error("panic in session; connection closed", "panic", v, "stack", string(debug.Stack()))
	case !c.finished:
		c.log().Error("a hook called runtime.Goexit (t.FailNow?); connection closed")
	default:
		return
	}
	c.finished = true
	c.replyError(SMTPError421, true)
}

// end runs once, when the session is over: it gives the slot back, runs
// OnDisconnect, closes the connection and unregisters it — the last three deferred,
// so that they happen even when OnDisconnect (or OnReset) calls runtime.Goexit.
func (c *conn) end() {
	c.enter(connClosing)
	defer c.srv.forget(c)
	defer c.cancelContext()
	defer c.closeConn()
	if c.holdsSlot {
		c.holdsSlot = false
		c.srv.stats.SessionsActive.Add(-1)
		c.srv.adm.release()
	}
	if c.connected {
		defer c.srv.uncountIP(c)
		c.disconnect()
	}
}

// disconnect abandons an open transaction, flushes what is pending and runs
// OnDisconnect.
func (c *conn) disconnect() {
	defer func() {
		if v := recover(); v != nil {
			c.log().Error("panic in OnDisconnect", "panic", v, "stack", string(debug.Stack()))
		}
	}()
	c.resetTransaction()
	c.flush()
	c.log().Debug("disconnected", "exceptions", c.s.Exceptions)
	c.h.OnDisconnect(c.s)
}

// closeConn closes the connection (a TLS one sends its close_notify first), unless
// Close took it over: abort closes it.
func (c *conn) closeConn() {
	c.wmu.Lock()
	aborted := connState(c.state.Load()) == connAborted
	nc := c.nc
	c.wmu.Unlock()
	if aborted {
		return
	}
	if nc != c.raw {
		c.raw.SetWriteDeadline(time.Now().Add(time.Second))
		nc.Close()
	}
	c.raw.Close()
}

// abort is Close's end of the connection, from another goroutine: "421" and the
// connection closed, unless the session's own last reply is already on its way
// (then only its write deadline is shortened). Exactly one last reply reaches the
// client, and none during a TLS handshake.
func (c *conn) abort() {
	c.raw.SetWriteDeadline(time.Now().Add(time.Second)) // a flush to a client that does not read gives the lock up soon
	var prev connState
	for {
		prev = connState(c.state.Load())
		if prev >= connClosing {
			return
		}
		if c.state.CompareAndSwap(int32(prev), int32(connAborted)) {
			break
		}
	}
	defer c.cancelContext() // only once the 421 is out: a hook woken by it can reply nothing
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if prev != connHandshake && c.canReply() {
		c.nc.Write([]byte(formatReply(SMTPError421.Code, c.enhancedCode(SMTPError421), SMTPError421.Message)))
	}
	c.raw.Close() // before unlocking: no reply may follow the 421
}

// context is the session's context (Session.Context), made at the first call: a
// child of the server's, cancelled when the connection ends or Close takes it.
func (c *conn) context() context.Context {
	c.ctxMu.Lock()
	defer c.ctxMu.Unlock()
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithCancel(c.srv.baseCtx)
		if c.canceled {
			c.cancel()
		}
	}
	return c.ctx
}

// cancelContext cancels the session's context, now or as soon as it is made.
func (c *conn) cancelContext() {
	c.ctxMu.Lock()
	defer c.ctxMu.Unlock()
	c.canceled = true
	if c.cancel != nil {
		c.cancel()
	}
}

// setLogger makes the session's logger anew for its current remote address. The
// logger itself is made at its first use (log): most sessions of a quiet server
// never log, and its attributes cost allocations.
func (c *conn) setLogger() {
	c.logger = nil
	c.debug = c.cfg.logger.Enabled(context.Background(), slog.LevelDebug)
}

// log returns the session's logger, made at the first call.
func (c *conn) log() *slog.Logger {
	if c.logger == nil {
		s := c.s
		c.logger = c.cfg.logger.With(
			slog.String("remote", net.JoinHostPort(s.RemoteIP, strconv.Itoa(s.RemotePort))),
			slog.String("session", s.ID))
	}
	return c.logger
}

// lookupHosts fills LocalHost and RemoteHost.
func (c *conn) lookupHosts() {
	s := c.s
	s.LocalHost, s.RemoteHost = s.LocalIP, s.RemoteIP
	if !c.cfg.reverseLookup {
		return
	}
	ctx, cancel := context.WithTimeout(c.context(), 5*time.Second)
	defer cancel()
	if names, err := net.DefaultResolver.LookupAddr(ctx, s.LocalIP); err == nil && len(names) > 0 {
		s.LocalHost = strings.TrimSuffix(names[0], ".")
	}
	if names, err := net.DefaultResolver.LookupAddr(ctx, s.RemoteIP); err == nil && len(names) > 0 {
		s.RemoteHost = strings.TrimSuffix(names[0], ".")
	}
}

// resetTransaction ends the transaction, however it ends — RSET, a new HELO/EHLO,
// STARTTLS, XCLIENT, an abandoned BDAT transfer, the reply to its message, the
// connection ending: a ResetHandler hears of one that MAIL FROM began, then the
// envelope and the message are forgotten.
func (c *conn) resetTransaction() {
	if c.phase >= phaseMail {
		if rh, ok := c.h.(ResetHandler); ok {
			rh.OnReset(c.s)
		}
	}
	c.releaseBuffered()
	c.xfer.abandonStream() // a DATA or BDAT stream still open: closed, its hook waited for
	c.bdat = nil
	c.dataStart, c.dataBytes = time.Time{}, 0 // no data-rate clock outside a transfer
	c.overshoot = 0
	c.s.Envelope = Envelope{}
	c.s.Message = Message{CRLF: "\r\n"}
	if c.phase > phaseReady {
		c.phase = phaseReady
	}
}

func splitAddr(a net.Addr) (string, int) {
	if a == nil {
		return "", 0
	}
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String(), t.Port
	}
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String(), 0
	}
	p, _ := strconv.Atoi(port)
	return host, p
}
