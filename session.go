package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
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
	EncodingBody string   // "", "7bit" or "8bitmime" (MAIL FROM BODY=)
	EncodingUTF8 string   // "" or "utf8" (MAIL FROM SMTPUTF8)
}

// Message is the message of the current transaction while it is received.
type Message struct {
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
	Helo          string // the domain the client sent with HELO/EHLO
	LocalIP       string
	LocalHost     string // reverse DNS of LocalIP with DNSReverseLookup, else LocalIP
	LocalPort     int
	RemoteIP      string
	RemoteHost    string // reverse DNS of RemoteIP with DNSReverseLookup, else RemoteIP
	RemotePort    int
	ConnectedAt   time.Time
	Exceptions    int // error replies (4xx/5xx) sent in this session

	AuthorizationID  string
	AuthenticationID string
	AuthenticatedAt  time.Time // zero until AUTH succeeded
	EncryptedAt      time.Time // zero until TLS is on

	Envelope Envelope
	Message  Message

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

	implicitTLS  bool
	overLimit    bool // accepted over MaxConnections: 421 after OnConnect
	state        sessionState
	authFailures int
	quit         bool
	idle         atomic.Bool  // blocked waiting for a command line
	aborted      atomic.Bool  // Close has taken the connection over
	final        bool         // the queued replies end the session (221 or a closing 421)
	bye          atomic.Int32 // who sends the last reply: byeNone, byeSession or byeAbort
}

// Who sends a session's last reply: exactly one of the session goroutine (its 221 or
// closing 421) and Close (its 421) does.
const (
	byeNone int32 = iota
	byeSession
	byeAbort
)

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
	s.logger = srv.cfg.logger.With(
		slog.String("remote", net.JoinHostPort(s.RemoteIP, strconv.Itoa(s.RemotePort))),
		slog.String("session", s.ID))
	s.debug = s.logger.Enabled(context.Background(), slog.LevelDebug)
	return s
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
	if s.logger == nil {
		return slog.Default()
	}
	return s.logger
}

// TLSState returns the TLS connection state once TLS is on.
func (s *Session) TLSState() (tls.ConnectionState, bool) {
	if s.tlsState == nil {
		return tls.ConnectionState{}, false
	}
	return *s.tlsState, true
}

// serve runs the session from connect to disconnect.
func (s *Session) serve() {
	defer s.cancel()
	defer s.closeConn()
	s.lookupHosts()
	s.LocalResponse = s.LocalHost + " says welcome!"
	s.HeloResponse = s.LocalHost + " at your service!"
	s.w = bufio.NewWriterSize(s.raw, 1024)
	s.logger.Debug("connected", "local", net.JoinHostPort(s.LocalIP, strconv.Itoa(s.LocalPort)))
	defer s.disconnect()
	defer s.recoverPanic()
	s.run()
}

// run is the session's life between connect and disconnect.
func (s *Session) run() {
	if err := s.h.OnConnect(s); err != nil {
		if _, ok := asSMTPError(err); !ok {
			err = fmt.Errorf("OnConnect: %w: %w", err, SMTPError421)
		}
		s.replyError(err, true)
		return
	}
	if s.overLimit {
		s.logger.Warn("too many connections; refused", "max_connections", s.cfg.maxConnections)
		s.replyError(errBusy, true)
		return
	}
	if !s.acquireSlot() {
		return
	}
	defer s.releaseSlot()
	s.r = newLineReader(s.raw, s.cfg.bufferMax) // only now: waiting sessions stay small
	if s.implicitTLS && !s.handshake() {
		return
	}
	s.reply(220, oneLine(s.LocalResponse))
	s.commandLoop()
}

// disconnect flushes what is pending and runs OnDisconnect.
func (s *Session) disconnect() {
	defer func() {
		if v := recover(); v != nil {
			s.logger.Error("panic in OnDisconnect", "panic", v, "stack", string(debug.Stack()))
		}
	}()
	s.flush()
	s.logger.Debug("disconnected", "exceptions", s.Exceptions)
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

// recoverPanic turns a panic in a hook into a log line with its stack and a 421.
func (s *Session) recoverPanic() {
	if v := recover(); v != nil {
		s.logger.Error("panic in session; connection closed", "panic", v, "stack", string(debug.Stack()))
		s.replyError(SMTPError421, true)
	}
}

// acquireSlot waits for one of MaxProcessings slots; false when the server closes first.
func (s *Session) acquireSlot() bool {
	select {
	case s.srv.slots <- struct{}{}:
	case <-s.srv.closing:
		s.replyError(SMTPError421, true)
		return false
	}
	if s.srv.isClosing.Load() { // select picks at random when both are ready
		<-s.srv.slots
		s.replyError(SMTPError421, true)
		return false
	}
	s.srv.processings.Add(1)
	return true
}

func (s *Session) releaseSlot() {
	s.srv.processings.Add(-1)
	<-s.srv.slots
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

// commandLoop reads and runs command lines until QUIT, an error that closes the
// connection, or the server shutting down.
func (s *Session) commandLoop() {
	for !s.quit {
		line, err := s.readLine(true)
		if err != nil {
			s.readFailed(err)
			return
		}
		if s.srv.isClosing.Load() {
			s.replyError(SMTPError421, true)
			return
		}
		text, err := commandText(line, s.cfg.crlfMode)
		switch {
		case err != nil:
			s.traceCommandBytes(text)
			s.replyError(errCRLF, false)
		case !s.cfg.pipelining && s.r.hasLine():
			s.traceCommandBytes(text)
			s.replyError(errPipelining, false)
		default:
			s.dispatch(string(text))
		}
	}
}

// readLine reads one line. A deadline of IOCmdTimeout is set for the whole line when
// it is not already buffered, and pending replies are flushed before blocking. With
// command true the session counts as idle while it waits (Shutdown interrupts it).
func (s *Session) readLine(command bool) ([]byte, error) {
	if s.aborted.Load() {
		return nil, errAborted
	}
	if !s.r.hasLine() {
		if err := s.flush(); err != nil {
			return nil, errWrite
		}
		if s.cfg.timeout > 0 {
			s.raw.SetReadDeadline(time.Now().Add(s.cfg.timeout))
		}
		if command {
			s.idle.Store(true)
			defer s.idle.Store(false)
			if s.srv.isClosing.Load() {
				return nil, errShuttingDown
			}
		}
	}
	return s.r.readLine()
}

var (
	errShuttingDown = errors.New("smtpd: server shutting down")
	errAborted      = errors.New("smtpd: connection closed by Close")
	errWrite        = errors.New("smtpd: writing a reply failed")
)

// readFailed answers the reason a line could not be read, where one is owed.
func (s *Session) readFailed(err error) {
	var ne net.Error
	switch {
	case err == errAborted || err == errWrite:
		s.logger.Debug("session ended", "err", err)
	case err == errShuttingDown || s.srv.isClosing.Load():
		s.replyError(SMTPError421, true)
	case err == errLineLimit:
		s.logger.Warn("line over IOBufferMaxSize; closing", "limit", s.cfg.bufferMax)
		s.replyError(errLineTooLong, true)
	case errors.As(err, &ne) && ne.Timeout():
		s.logger.Info("client timed out; closing", "timeout", s.cfg.timeout)
		s.replyError(errTimeout, true)
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		s.logger.Debug("client closed the connection")
	default:
		s.logger.Debug("read failed", "err", err)
	}
}

// interruptIdle makes a session that waits for a command see the shutdown now.
func (s *Session) interruptIdle() {
	if s.idle.Load() {
		s.raw.SetReadDeadline(time.Unix(1, 0))
	}
}

// abort sends reply and closes the connection from outside the session goroutine.
// Exactly one closing reply reaches the client: the session's own or this one.
func (s *Session) abort(reply *SMTPError) {
	if !s.aborted.CompareAndSwap(false, true) {
		return
	}
	defer s.cancel() // only once the 421 is out: a hook woken by it can reply nothing
	// A short deadline first, so that a flush to a client that does not read gives
	// the lock up soon (flush re-checks aborted after setting its own deadline).
	s.raw.SetWriteDeadline(time.Now().Add(time.Second))
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.bye.CompareAndSwap(byeNone, byeAbort) && s.canReply() {
		io.WriteString(s.conn, formatReply(reply.Code, reply.EnhancedCode, reply.Message))
	}
	s.raw.Close() // before unlocking: no reply may follow the 421
}

// canReply reports whether a reply can be sent now: not on an implicit-TLS port
// before the handshake, where plaintext would be garbage to the client.
func (s *Session) canReply() bool {
	return !s.implicitTLS || s.IsEncrypted()
}

// reply queues a reply; it is sent at the next flush.
func (s *Session) reply(code int, text string) {
	s.writeReply(code, "", text)
}

// replyError answers err: an *SMTPError in its chain with its code and text, any
// other error with 451. It counts the exception and logs it. A 421 (or closeAfter)
// ends the session.
func (s *Session) replyError(err error, closeAfter bool) {
	se, ok := asSMTPError(err)
	closing := se.Code == 421 || closeAfter
	s.Exceptions++
	switch {
	case !ok:
		s.logger.Error("hook failed; replied 451", "err", err)
	case closing:
		s.logger.Info("closing with error reply", "reply", se.Code, "err", err)
	default:
		s.logger.Info("error reply", "reply", se.Code, "err", err)
	}
	if !closing {
		s.writeReply(se.Code, se.EnhancedCode, se.Message)
		return
	}
	s.quit = true
	if !s.canReply() {
		return
	}
	s.final = true
	s.writeReply(se.Code, se.EnhancedCode, se.Message)
	s.flush()
}

// writeReply queues a reply; a text with line breaks becomes a multi-line reply. CR
// and LF never reach the client from a text. A reply that does not fit in the rest of
// the buffer flushes it first, so the buffer never writes on its own (without the
// lock and the deadline of flush).
func (s *Session) writeReply(code int, enhanced, text string) {
	need := len(text) + len(enhanced) + 7
	if need > s.w.Size() || strings.IndexByte(text, '\n') >= 0 || strings.IndexByte(text, '\r') >= 0 {
		s.writeLong(formatReply(code, enhanced, text))
		return
	}
	if need > s.w.Available() {
		s.flush()
	}
	var num [3]byte
	s.w.Write(strconv.AppendInt(num[:0], int64(code), 10))
	s.w.WriteByte(' ')
	if enhanced != "" {
		s.w.WriteString(enhanced)
		s.w.WriteByte(' ')
	}
	s.w.WriteString(text)
	s.w.WriteString("\r\n")
	if s.debug {
		s.trace(">>> ", formatReply(code, enhanced, text))
	}
}

// writeLong queues a formatted reply; one larger than the buffer is sent at once.
func (s *Session) writeLong(r string) {
	s.trace(">>> ", r)
	if len(r) > s.w.Available() {
		s.flush()
	}
	if len(r) <= s.w.Available() {
		s.w.WriteString(r)
		return
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.prepareWrite()
	if s.mayWrite() {
		s.w.WriteString(r) // bufio writes a string this long straight through
	}
}

// flush sends the queued replies, with IOCmdTimeout as write deadline.
func (s *Session) flush() error {
	if s.w.Buffered() == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.flushLocked()
}

// flushLocked is flush for a caller that holds wmu.
func (s *Session) flushLocked() error {
	s.prepareWrite()
	if !s.mayWrite() {
		s.w.Reset(s.conn) // Close has sent its 421 in place of these replies
		return net.ErrClosed
	}
	err := s.w.Flush()
	if err != nil {
		s.quit = true
		s.logger.Debug("write failed", "err", err)
	}
	return err
}

// prepareWrite sets the write deadline for a write under wmu.
func (s *Session) prepareWrite() {
	if s.cfg.timeout > 0 {
		s.raw.SetWriteDeadline(time.Now().Add(s.cfg.timeout))
	}
	if s.aborted.Load() { // keep abort's short deadline (it may have been set before ours)
		s.raw.SetWriteDeadline(time.Now().Add(time.Second))
	}
}

// mayWrite reports, under wmu, whether the queued replies may go out: always, unless
// they end the session and Close already sent its 421 instead.
func (s *Session) mayWrite() bool {
	if !s.final {
		return s.bye.Load() != byeAbort && !s.aborted.Load()
	}
	return s.bye.CompareAndSwap(byeNone, byeSession) || s.bye.Load() == byeSession
}

// trace logs a protocol line at Debug level.
func (s *Session) trace(dir, line string) {
	if s.debug {
		s.logger.Debug(dir + strings.TrimRight(line, "\r\n"))
	}
}

// traceCommand traces a received command line, hiding AUTH's initial response and
// any line that may be an AUTH response sent out of turn (one base64 word that is
// not a command: after a refused AUTH, a client's credentials arrive as commands).
func (s *Session) traceCommand(line string) {
	if !s.debug {
		return
	}
	if maybeCredential(line) {
		s.trace("<<< ", "*** (a base64 word, hidden: it may be a credential)")
		return
	}
	s.trace("<<< ", redactAuth(line))
}

// traceCommandBytes is traceCommand for a line not yet converted to a string.
func (s *Session) traceCommandBytes(line []byte) {
	if s.debug {
		s.traceCommand(string(line))
	}
}

// maybeCredential reports whether line is a single base64 word that is not an
// SMTP verb.
func maybeCredential(line string) bool {
	if len(line) == 0 {
		return false
	}
	for _, c := range []byte(line) {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	switch strings.ToUpper(line) {
	case "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "STARTTLS", "AUTH", "VRFY", "EXPN", "HELP":
		return false
	}
	return true
}

// formatReply renders a reply; a text with line breaks becomes a multi-line reply.
func formatReply(code int, enhanced, text string) string {
	var b strings.Builder
	lines := strings.Split(strings.ReplaceAll(text, "\r", ""), "\n")
	for i, l := range lines {
		b.WriteString(strconv.Itoa(code))
		if i < len(lines)-1 {
			b.WriteByte('-')
		} else {
			b.WriteByte(' ')
		}
		if enhanced != "" {
			b.WriteString(enhanced)
			b.WriteByte(' ')
		}
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	return b.String()
}

// oneLine removes CR and LF, and surrounding spaces, from a hook-set response text.
func oneLine(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r", "", "\n", "").Replace(s)
	}
	return strings.TrimSpace(s)
}

// resetTransaction forgets the envelope and the message (RSET, end of DATA, HELO).
func (s *Session) resetTransaction() {
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
