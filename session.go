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

// Envelope is the SMTP envelope of the current transaction.
type Envelope struct {
	From         string   // reverse-path without angle brackets; "" for <>
	To           []string // forward-paths without angle brackets, in order
	EncodingBody string   // "", "7bit", "8bitmime" or "binarymime" (MAIL FROM BODY=)
	EncodingUTF8 string   // "" or "utf8" (MAIL FROM SMTPUTF8)
	Size         int      // MAIL FROM SIZE= (RFC 1870), the size the client declared; 0 when not given

	// With Server.DSN (RFC 3461):
	DSNRet        string         // MAIL FROM RET=: "FULL", "HDRS" or ""
	DSNEnvID      string         // MAIL FROM ENVID=, xtext-decoded; "" when not given
	DSNRecipients []RecipientDSN // the RCPT TO parameters of To[i], same index

	// The ESMTP parameters as the client sent them ("KEY=value", or "KEY" alone),
	// in order, for programs that relay them or hand them to a filter: those of MAIL
	// FROM, and those of each RCPT TO (ToParams[i] belongs to To[i]; nil when none).
	FromParams []string
	ToParams   [][]string
}

// RecipientDSN are the RFC 3461 parameters of one RCPT TO.
type RecipientDSN struct {
	Notify []string // NOTIFY=: ["NEVER"], or some of "SUCCESS", "FAILURE", "DELAY"; nil when not given
	ORcpt  string   // ORCPT=, xtext-decoded: "rfc822;user@example.org"; "" when not given
}

// Message is the message of the current transaction while it is received.
type Message struct {
	// ID names the message in logs, file names and queues: "<Session.ID>-<n>", n
	// counting the session's transactions from 1. It is set when MAIL FROM is
	// accepted (before OnMailFrom runs), so unique within the process, and kept
	// until the transaction ends.
	ID          string
	ReceivedAt  time.Time // when DATA was accepted (354)
	DeliveredAt time.Time // when the final dot arrived
	Headers     bool      // the empty line ending the header section has been seen
	Bytesize    int       // len(Data) when OnMessage runs
	CRLF        string    // the line end hooks should use when appending: "\r\n" (CRLFLeave: the last line's)
	Data        []byte    // the message as received, dot-unstuffed, hook additions included
}

// Session is one client connection: MidiSmtpServer's ctx, flattened. Hooks read it
// and may change LocalResponse and HeloResponse (CR and LF are removed when they are
// sent) and append to Message.Data. A Session must not be used after its
// OnDisconnect returned.
type Session struct {
	// ID is unique per connection: the "session" attribute of every log line of the
	// session, e.g. "q7k2m9-1f". It is the server's random prefix and a counter.
	ID string

	LocalResponse string // banner text after "220 "; default "<LocalHost> says welcome!"
	HeloResponse  string // text of the HELO/EHLO reply; default "<LocalHost> at your service!"
	Helo          string // the domain the client sent with HELO/EHLO (or XCLIENT HELO=)
	LocalIP       string
	LocalHost     string // reverse DNS of LocalIP with DNSReverseLookup, else LocalIP
	LocalPort     int
	RemoteIP      string // the client: from the PROXY header or XCLIENT when trusted
	RemoteHost    string // reverse DNS of RemoteIP with DNSReverseLookup (or XCLIENT NAME=), else RemoteIP
	RemotePort    int
	ProxyIP       string // the proxy that sent a PROXY header; "" when not proxied
	ConnectedAt   time.Time
	Exceptions    int // error replies (4xx/5xx) sent in this session

	AuthorizationID  string
	AuthenticationID string
	AuthMechanism    string    // the SASL mechanism of the successful AUTH ("PLAIN", "LOGIN"); "" until then
	AuthenticatedAt  time.Time // zero until AUTH succeeded
	EncryptedAt      time.Time // zero until TLS is on

	Envelope Envelope
	Message  Message

	// UserData is the program's own per-session value: nil at connect, never read
	// or changed by the library. Hooks of one session run one at a time, so it needs
	// no lock within the session.
	UserData any

	srv    *Server
	cfg    *config
	h      Handler
	logger *slog.Logger
	debug  bool
	ctx    context.Context
	cancel context.CancelFunc

	raw      net.Conn // the TCP connection; deadlines are set on it
	wmu      sync.Mutex
	conn     net.Conn // raw, or the TLS connection over it; guarded by wmu
	r        *lineReader
	w        *bufio.Writer
	tlsState *tls.ConnectionState
	early    []byte    // bytes of an implicit-TLS client read while it waited for a slot
	bdat     *transfer // the message BDAT chunks are being received for (&xfer), or nil
	xfer     transfer  // the message being received
	// lineRefused is set when a BDAT command line broke CRLFStrict: its octets are
	// still read, then it is answered with this.
	lineRefused error

	tlsBusy      bool // a TLS handshake is running; guarded by wmu
	implicitTLS  bool
	overLimit    bool // accepted over MaxConnections: 421 after OnConnect
	xclientOK    bool // XCLIENT is allowed from this client
	xclientHelo  bool // Helo came from XCLIENT: a later HELO/EHLO does not replace it
	ipCounted    string
	params       []string // the ESMTP parameters of the MAIL or RCPT whose hook runs (CommandParams)
	transactions int      // MAIL FROM commands accepted: Message.ID's counter
	state        sessionState
	authFailures int
	errors       int // error replies since the last delivered message (MaxErrors)
	junk         int // junk commands since the last delivered message (MaxJunkCommands)
	commands     int // command lines read
	reserved     int // bytes of MaxBufferedData this session holds
	dataStart    time.Time
	dataBytes    int
	quit         bool
	idle         atomic.Bool   // blocked waiting for a command line or a slot
	aborted      atomic.Bool   // Close has taken the connection over
	final        bool          // the queued replies end the session (221 or a closing 421)
	bye          atomic.Int32  // who sends the last reply: byeNone, byeSession or byeAbort
	rateDeadline bool          // the read deadline is MinDataRate's, not the timeout's
	stage        int           // stageNew ... stageEnded
	lineDeadline time.Time     // the read deadline of the line being waited for
	resumed      bool          // the wait for the next command was done parked
	parkID       atomic.Uint64 // the poller's token while parked (park_linux.go); 0 otherwise
	parkErr      error         // how that wait ended
}

// sessionState is where the session is in the RFC 5321 command sequence.
type sessionState int

const (
	stateGreet sessionState = iota // no HELO/EHLO yet
	stateReady                     // greeted, no transaction
	stateMail                      // MAIL accepted
	stateRcpt                      // at least one RCPT accepted
)

func newSession(srv *Server, c net.Conn, implicitTLS bool) *Session {
	s := &Session{
		srv:         srv,
		cfg:         &srv.cfg,
		h:           srv.cfg.handler,
		raw:         c,
		conn:        c,
		implicitTLS: implicitTLS,
		ConnectedAt: time.Now().UTC(),
		Message:     Message{CRLF: "\r\n"},
	}
	s.ctx, s.cancel = context.WithCancel(srv.baseCtx)
	s.LocalIP, s.LocalPort = splitAddr(c.LocalAddr())
	s.RemoteIP, s.RemotePort = splitAddr(c.RemoteAddr())
	s.ID = srv.idPrefix + strconv.FormatUint(srv.nextID.Add(1), 36)
	s.setLogger()
	return s
}

// setLogger makes the session's logger anew for its current remote address. The
// logger itself is made at its first use (log): most sessions of a quiet server
// never log, and its attributes cost allocations.
func (s *Session) setLogger() {
	s.logger = nil
	s.debug = s.cfg.logger.Enabled(context.Background(), slog.LevelDebug)
}

// log returns the session's logger, made at the first call.
func (s *Session) log() *slog.Logger {
	if s.logger == nil {
		s.logger = s.cfg.logger.With(
			slog.String("remote", net.JoinHostPort(s.RemoteIP, strconv.Itoa(s.RemotePort))),
			slog.String("session", s.ID))
	}
	return s.logger
}

// IsAuthenticated reports whether AUTH succeeded in this session.
func (s *Session) IsAuthenticated() bool { return !s.AuthenticatedAt.IsZero() }

// IsEncrypted reports whether the connection is TLS (STARTTLS or implicit).
func (s *Session) IsEncrypted() bool { return !s.EncryptedAt.IsZero() }

// Context is cancelled when the connection ends and when the server is closed (by
// Close, or by Shutdown's deadline); hooks pass it to the work they start.
// A Session not made by the server (a test's &Session{}) has context.Background().
func (s *Session) Context() context.Context {
	if s.ctx == nil {
		return context.Background()
	}
	return s.ctx
}

// Logger returns the session's logger, with "remote" and "session" attributes.
// A Session not made by the server (a test's &Session{}) has slog.Default().
func (s *Session) Logger() *slog.Logger {
	if s.srv == nil && s.logger == nil {
		return slog.Default()
	}
	return s.log()
}

// CommandParams returns the ESMTP parameters of the MAIL FROM or RCPT TO command
// whose hook (OnMailFrom, OnRcptTo) is running, as the client sent them ("KEY=value"
// or "KEY"), in order; nil in other hooks. Envelope.FromParams and ToParams keep
// those of the accepted commands.
func (s *Session) CommandParams() []string { return s.params }

// TLSState returns the TLS connection state once TLS is on.
func (s *Session) TLSState() (tls.ConnectionState, bool) {
	if s.tlsState == nil {
		return tls.ConnectionState{}, false
	}
	return *s.tlsState, true
}

// serve runs the session from connect to its first wait for a command; the rest
// runs in loop, which may park the session (see park.go) and resume it on another
// goroutine. end runs once, when the session is over.
func (s *Session) serve() {
	defer s.recoverPanic()
	if !s.readProxyHeader() {
		s.end()
		return
	}
	s.stage = stageConnected
	s.xclientOK = s.cfg.xclientNets != nil && inNetworks(s.cfg.xclientNets, s.RemoteIP)
	s.lookupHosts()
	s.LocalResponse = s.LocalHost + " says welcome!"
	s.HeloResponse = s.LocalHost + " at your service!"
	if s.debug {
		s.log().Debug("connected", "local", net.JoinHostPort(s.LocalIP, strconv.Itoa(s.LocalPort)))
	}
	if !s.welcome() {
		s.end()
		return
	}
	s.loop()
}

// welcome is the session's life up to its banner: OnConnect, the connection limits,
// the wait for a processing slot, GreetDelay, implicit TLS. False when the session
// ended there (its reply, if one was owed, sent).
func (s *Session) welcome() bool {
	if err := s.h.OnConnect(s); err != nil {
		if _, ok := asSMTPError(err); !ok {
			err = &wrappedReply{reply: SMTPError421, err: err}
		}
		s.replyError(err, true)
		return false
	}
	if !s.withinConnectionLimits() || !s.admit() {
		return false
	}
	s.stage = stageAdmitted
	s.srv.stats.SessionsActive.Add(1)
	if s.srv.isClosing.Load() { // a slot freed by Close or Shutdown: no banner now
		s.replyError(SMTPError421, true)
		return false
	}
	if !s.greetDelay() {
		return false
	}
	// Only now: waiting sessions stay small. The raw connection: on an implicit-TLS
	// port the bytes read early go to the handshake, which resets s.r to TLS.
	s.r = newLineReader(s.raw, s.cfg.bufferMax)
	if s.implicitTLS && !s.handshake() {
		return false
	}
	s.sendText(220, oneLine(s.LocalResponse))
	return true
}

// loop runs commands until the session ends (then end) or parks.
func (s *Session) loop() {
	defer s.recoverPanic()
	if s.commandLoop() == loopParked {
		s.park()
		return
	}
	s.end()
}

// Stages of a session's life, for end: what it must undo.
const (
	stageNew       = iota // nothing yet (a refused PROXY header)
	stageConnected        // counted by address, OnConnect may have run
	stageAdmitted         // holds a processing slot
	stageEnded
)

// end runs once when the session is over, on whichever goroutine it runs: it gives
// the slot back, runs OnDisconnect, closes the connection and unregisters it.
func (s *Session) end() {
	if s.stage == stageEnded {
		return
	}
	if s.stage >= stageAdmitted {
		s.srv.stats.SessionsActive.Add(-1)
		s.srv.adm.release()
	}
	if s.stage >= stageConnected {
		s.disconnect()
		s.srv.uncountIP(s)
	}
	s.stage = stageEnded
	s.closeConn()
	s.cancel()
	s.srv.endSession(s)
	s.srv.conns.Done()
}

// disconnect flushes what is pending and runs OnDisconnect.
func (s *Session) disconnect() {
	defer func() {
		if v := recover(); v != nil {
			s.log().Error("panic in OnDisconnect", "panic", v, "stack", string(debug.Stack()))
		}
	}()
	s.abandonTransaction()
	s.flush()
	s.log().Debug("disconnected", "exceptions", s.Exceptions)
	s.h.OnDisconnect(s)
}

// closeConn closes the connection; a TLS connection first sends its close_notify.
func (s *Session) closeConn() {
	s.wmu.Lock()
	if s.aborted.Load() { // abort sends its 421 (unless a final reply went) and closes
		s.wmu.Unlock()
		return
	}
	s.bye.CompareAndSwap(byeNone, byeSession)
	c := s.conn
	s.wmu.Unlock()
	if c != s.raw {
		s.raw.SetWriteDeadline(time.Now().Add(time.Second))
		c.Close()
	}
	s.raw.Close()
}

// recoverPanic turns a panic in a hook into a log line with its stack and a 421,
// and ends the session.
func (s *Session) recoverPanic() {
	if v := recover(); v != nil {
		s.log().Error("panic in session; connection closed", "panic", v, "stack", string(debug.Stack()))
		s.replyError(SMTPError421, true)
		s.end()
	}
}

// lookupHosts fills LocalHost and RemoteHost.
func (s *Session) lookupHosts() {
	s.LocalHost, s.RemoteHost = s.LocalIP, s.RemoteIP
	if !s.cfg.reverseLookup {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	if names, err := net.DefaultResolver.LookupAddr(ctx, s.LocalIP); err == nil && len(names) > 0 {
		s.LocalHost = strings.TrimSuffix(names[0], ".")
	}
	if names, err := net.DefaultResolver.LookupAddr(ctx, s.RemoteIP); err == nil && len(names) > 0 {
		s.RemoteHost = strings.TrimSuffix(names[0], ".")
	}
}

// interruptIdle makes a session that waits for a command (or a slot) see the
// shutdown now.
func (s *Session) interruptIdle() {
	if s.idle.Load() {
		s.raw.SetReadDeadline(time.Unix(1, 0))
		unpark(s, errShuttingDown)
	}
}

// abandonTransaction ends a transaction that MAIL FROM began before its message was
// answered (RSET, HELO/EHLO, STARTTLS, XCLIENT, an abandoned BDAT transfer, the
// connection ending): a ResetHandler hears of it; then the transaction is reset.
func (s *Session) abandonTransaction() {
	if s.state >= stateMail {
		if rh, ok := s.h.(ResetHandler); ok {
			rh.OnReset(s)
		}
	}
	s.resetTransaction()
}

// resetTransaction forgets the envelope and the message (RSET, end of DATA, HELO).
func (s *Session) resetTransaction() {
	s.releaseBuffered()
	s.xfer.abandonStream() // a DATA or BDAT stream still open: closed, its hook waited for
	s.bdat = nil
	s.dataStart, s.dataBytes = time.Time{}, 0 // no data-rate clock outside a transfer
	s.Envelope = Envelope{}
	s.Message = Message{CRLF: "\r\n"}
	if s.state > stateReady {
		s.state = stateReady
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
