package smtpd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults used where an option is left at its zero value.
const (
	DefaultHosts           = "127.0.0.1"
	DefaultPorts           = "2525"
	DefaultMaxProcessings  = 100
	DefaultIOCmdTimeout    = 30 * time.Second
	DefaultIOBufferMaxSize = 1 << 20
	DefaultMaxAuthFailures = 3
	DefaultMaxMessageSize  = 32 << 20
	DefaultMaxRecipients   = 1000
	DefaultWaitTimeout     = 30 * time.Second
	DefaultMaxBufferedData = 512 << 20
	DefaultMaxErrors       = 20  // Postfix's smtpd_hard_error_limit
	DefaultMaxJunkCommands = 100 // Postfix's smtpd_junk_command_limit
)

// AuthMode says whether AUTH is offered and whether mail needs it.
type AuthMode int

const (
	// AuthForbidden (the default): no AUTH keyword; the AUTH command is answered 500.
	AuthForbidden AuthMode = iota
	// AuthOptional offers AUTH with Server.AuthMechanisms (LOGIN and PLAIN by
	// default); mail may be sent without it.
	AuthOptional
	// AuthRequired offers AUTH; MAIL, RCPT and DATA get "530 Authentication required"
	// until it succeeded.
	AuthRequired
)

// TLSMode says whether STARTTLS is offered and whether mail needs it.
type TLSMode int

const (
	// TLSForbidden (the default): no STARTTLS.
	TLSForbidden TLSMode = iota
	// TLSOptional offers STARTTLS.
	TLSOptional
	// TLSRequired offers STARTTLS and answers every command but EHLO, HELO, NOOP, QUIT
	// and STARTTLS with "530 Encryption required, must issue STARTTLS command first"
	// until TLS is on (AUTH gets 538).
	TLSRequired
)

// Server is an SMTP server. Set its exported fields, then call Start (or Serve); the
// fields must not change after that: they are read once, at the first Start, Serve,
// Shutdown or Close, so a Server whose options were refused stays refused (make a new
// one). The zero value serves 127.0.0.1:2525 with BaseHandler.
type Server struct {
	// Handler receives the session events; nil means BaseHandler.
	Handler Handler
	// Hosts lists the addresses to listen on, comma separated: IP literals, host names
	// (every address they resolve to) or "*" (every local IPv4 and IPv6 address, no
	// link-local). Default "127.0.0.1". A duplicate address fails Start.
	Hosts string
	// Ports lists the ports, comma separated: item i for host i, the last one for every
	// further host; "2525:3535" gives one host several ports. Default "2525"; "0" picks
	// a free port (see Addrs).
	Ports string
	// MaxProcessings is how many sessions are served at once (default 100;
	// MidiSmtpServer's 4 lets four slow clients hold the whole server). Further
	// connections wait without a banner, watched (see WaitTimeout), and are admitted
	// round-robin by remote address as slots free; while any waits, the server is in
	// stress mode (see the README): sessions get a 10 s timeout per request, at most
	// one error and one junk command, and must send message data at 500 bytes/s.
	MaxProcessings int
	// WaitTimeout is how long a connection may wait for a processing slot before it
	// gets "421 Service too busy, try again later". 0 means 30 s, < 0 for ever (as
	// MidiSmtpServer). A client that leaves while waiting frees its place at once; one
	// that sends anything before its banner gets 554 and is closed (a pregreet).
	WaitTimeout time.Duration
	// MaxConnections is how many connections may be open at once, waiting ones
	// included; 0 is unlimited. One more gets "421 Service too busy or not available,
	// closing transmission channel" (after OnConnect, as in MidiSmtpServer) and is
	// closed. It must be 0 or at least MaxProcessings.
	MaxConnections int
	// CRLFMode is the line-end policy; the default is CRLFEnsure.
	CRLFMode CRLFMode
	// IOCmdTimeout is the time a client has to send a whole line (and the TLS
	// handshake's deadline, and the write deadline of a reply). 0 means 30 s, < 0 none.
	IOCmdTimeout time.Duration
	// IOBufferMaxSize is the longest line, in bytes, a client may send; longer input
	// gets 421 and the connection is closed. 0 means 1 MiB; the least is 512 (RFC
	// 5321's command line), but message text lines may be 1000 octets and AUTH
	// responses 12288, so values under 12288 refuse some valid clients.
	IOBufferMaxSize int
	// MaxMessageSize is the largest message, in bytes after dot-unstuffing, that is
	// stored; a larger one is read to its end and answered 552. 0 means 32 MiB, < 0 none.
	MaxMessageSize int
	// MaxRecipients is how many RCPT TO one transaction may have; each one more is
	// answered "452 Too many recipients" (RFC 5321 4.5.3.1.10: the client sends the
	// rest later). Those refusals count against MaxErrors only past another
	// MaxRecipients of them in the transaction, as Postfix's
	// smtpd_recipient_overshoot_limit. 0 means 1000, < 0 none.
	MaxRecipients int
	// MaxBufferedData is the total of message bytes all sessions together may hold in
	// memory; a message that would pass it is read to its end, discarded, and
	// answered 452 so that its sender retries later. What counts is the capacity of
	// the buffers holding data received (both copies while one grows); a SIZE= the
	// client declared reserves nothing. Streamed messages (MessageStreamer) are not
	// buffered. 0 means 512 MiB, < 0 none.
	MaxBufferedData int
	// MaxErrors is how many error replies (4xx/5xx) a session may get without
	// delivering a message; one more is answered 421 and the connection closed
	// (Postfix's smtpd_hard_error_limit). 0 means 20, < 0 none.
	MaxErrors int
	// MaxJunkCommands is how many NOOP, RSET, VRFY, EXPN, HELP and repeated HELO/EHLO
	// a session may send without delivering a message; one more is answered 421 and
	// the connection closed (Postfix's smtpd_junk_command_limit). 0 means 100, < 0 none.
	MaxJunkCommands int
	// MaxConnectionsPerIP is how many connections one remote address (after PROXY
	// and XCLIENT) may have open; one more gets 421 and is closed
	// (Postfix's smtpd_client_connection_count_limit). 0 means unlimited.
	MaxConnectionsPerIP int
	// GreetDelay holds the banner back this long; a client that talks first gets
	// "554 Protocol error" and is closed (postscreen's greet wait). 0 is off.
	GreetDelay time.Duration
	// MinDataRate is the least average rate, in bytes/s, of a message transfer
	// (after a 2 s grace); a slower one is ended with 421. 0 is off (500 in stress mode).
	MinDataRate int
	// AuthFailureDelay is how long every 535 (failed AUTH) is held back, so that
	// guessing passwords is slow even across reconnects (Dovecot's
	// auth_failure_delay). 0 is off.
	AuthFailureDelay time.Duration
	// ProxyTrustedNetworks lists, comma separated, the CIDR prefixes or IPs of load
	// balancers that send a PROXY protocol header (v1 or v2, auto-detected). A
	// connection from them must start with one within IOCmdTimeout, else it is
	// closed without a banner; its source becomes RemoteIP/RemotePort and the proxy's
	// address Session.ProxyIP. Headers from anyone else are never honoured. Empty: off.
	ProxyTrustedNetworks string
	// XClientTrustedNetworks lists, like ProxyTrustedNetworks, the clients that may
	// use Postfix's XCLIENT command to set the session's client attributes; others
	// get 550. Empty: off (XCLIENT is then an unknown command).
	XClientTrustedNetworks string
	// Pipelining enables RFC 2920 PIPELINING. Off (the default), a command line
	// that is followed in the input buffer by any byte — the client sent more
	// before it had the line's reply — is refused with "500 Bad input, PIPELINING
	// is not allowed"; the last line of such a burst runs.
	Pipelining bool
	// Internationalization advertises and accepts 8BITMIME and SMTPUTF8.
	Internationalization bool
	// EnhancedStatusCodes advertises ENHANCEDSTATUSCODES (RFC 2034): every reply but
	// the banner, the HELO/EHLO reply, 334 and 354 carries an RFC 3463 code — the
	// reply's EnhancedCode (a hook's own, or the predefined SMTPError's), else its
	// class default X.0.0. Off, no reply carries one, a hook's own EnhancedCode
	// neither (RFC 2034 allows codes only once the extension is announced), as in
	// MidiSmtpServer.
	EnhancedStatusCodes bool
	// Chunking advertises CHUNKING and BINARYMIME (RFC 3030): BDAT <n> [LAST] sends
	// the message in chunks of exactly n octets, never parsed as commands, without
	// dot-stuffing. Off, BDAT is answered 502 (its octets read and discarded).
	Chunking bool
	// DSN advertises DSN (RFC 3461): RET= and ENVID= on MAIL, NOTIFY= and ORCPT= on
	// RCPT are checked and kept in the Envelope. Off, they are unknown parameters (555).
	DSN bool
	// LMTP makes the server speak LMTP (RFC 2033) instead of SMTP: LHLO replaces
	// HELO/EHLO, and after the message one reply per accepted recipient is sent, in
	// RCPT order (see RecipientHandler for a reply of the handler's per recipient).
	LMTP bool
	// AuthMode enables AUTH; default AuthForbidden.
	AuthMode AuthMode
	// AuthMechanisms lists the SASL mechanisms AUTH offers, in the order EHLO
	// lists them: MechanismLogin, MechanismPlain (to OnAuth), MechanismOAuthBearer,
	// MechanismXOAuth2 (to a TokenAuthHandler), MechanismExternal (the TLS client
	// certificate, to an ExternalAuthHandler; offered only to a client that sent
	// one). nil means LOGIN and PLAIN. Start refuses an unknown or repeated name, and
	// a mechanism whose hook the Handler lacks.
	AuthMechanisms []string
	// MaxAuthFailures is how many failed AUTH attempts (answered 535) one session may
	// make; the last one is answered 421 and the connection closed. 0 means 3, < 0 no limit.
	MaxAuthFailures int
	// TLSMode enables STARTTLS; default TLSForbidden.
	TLSMode TLSMode
	// TLSConfig, when set, is used as given for STARTTLS and implicit TLS (so
	// GetCertificate-based reloading works). Otherwise the certificate comes from
	// TLSCertPath/TLSKeyPath, or is a self-signed one made at Start.
	TLSConfig *tls.Config
	// TLSCertPath is a PEM certificate file (a chain may follow the leaf).
	TLSCertPath string
	// TLSKeyPath is its PEM key file; empty: the key is in TLSCertPath.
	TLSKeyPath string
	// TLSCertCN is the common name of the self-signed certificate; default: the first
	// name of TLSCertSAN, else the first host or bound address, but "localhost.local"
	// when that is localhost, 127.0.0.1 or ::1 (MidiSmtpServer's rule).
	TLSCertCN string
	// TLSCertSAN lists, comma separated, the subject alternative names of the
	// self-signed certificate; default: the hosts and bound addresses.
	TLSCertSAN string
	// TLSClientAuth says whether a TLS client is asked for a certificate and whether
	// it is verified (tls.RequireAndVerifyClientCert: against TLSClientCAs), for AUTH
	// EXTERNAL and for hooks that read s.TLSState(); default tls.NoClientCert. It
	// applies to the configuration the server makes and to a copy of TLSConfig.
	TLSClientAuth tls.ClientAuthType
	// TLSClientCAs are the certificate authorities client certificates are verified
	// against; nil: the system's roots.
	TLSClientCAs *x509.CertPool
	// RequireTLS advertises REQUIRETLS (RFC 8689) to clients over TLS: "MAIL FROM
	// ... REQUIRETLS" asks that the message travel over TLS only, and sets
	// Envelope.RequireTLS; on a plaintext session it is answered 530 (5.7.10 with
	// EnhancedStatusCodes). Off, REQUIRETLS is an unknown parameter (555).
	RequireTLS bool
	// TLSCipherSuites are the TLS 1.2 cipher suites offered, strongest first; nil means
	// TLSCiphersAdvancedPlus. TLS 1.3 is always on; TLS 1.2 is the minimum.
	TLSCipherSuites []uint16
	// ImplicitTLSPorts, in the Ports syntax, picks bound ports that speak TLS from the
	// first byte (RFC 8314, "port 465"). A port listed here but not bound fails Start.
	ImplicitTLSPorts string
	// DNSReverseLookup fills LocalHost and RemoteHost by reverse DNS; off, they are the IPs.
	DNSReverseLookup bool
	// Logger receives the server's and every session's log; nil means slog.Default().
	Logger *slog.Logger

	initOnce sync.Once
	initErr  error
	cfg      config

	mu        sync.Mutex
	started   bool
	listeners []net.Listener
	addrs     []net.Addr
	conns     map[*conn]struct{}
	loops     sync.WaitGroup // accept loops
	served    sync.WaitGroup // connections being served
	closing   chan struct{}  // closed when Shutdown or Close begins
	isClosing atomic.Bool

	connections  atomic.Int64
	adm          *admission
	perIP        map[string]int // open connections by remote IP (MaxConnectionsPerIP); under mu
	stats        serverStats
	buffered     budget // MaxBufferedData
	lastWaitWarn atomic.Int64
	nextID       atomic.Uint64
	idPrefix     string // random per Server, so session IDs differ across restarts

	baseCtx    context.Context
	cancelBase context.CancelFunc

	warnOnce  sync.Once
	tlsMu     sync.Mutex
	activeTLS *tls.Config
}

// Addrs returns the addresses the server listens on, in the order of Hosts and Ports
// (with the real port where "0" was asked).
func (srv *Server) Addrs() []net.Addr {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return append([]net.Addr(nil), srv.addrs...)
}

// Connections returns the number of open client connections, waiting ones
// included. It is Stats().ConnectionsOpen.
func (srv *Server) Connections() int { return int(srv.connections.Load()) }

// Processings returns the number of sessions holding a processing slot (see
// MaxProcessings): greeted, or about to be. It is Stats().SessionsActive.
func (srv *Server) Processings() int { return int(srv.stats.SessionsActive.Load()) }

// ActiveTLSConfig returns the TLS configuration in use (Ruby's ssl_context), e.g. to
// read the generated self-signed certificate; nil when TLS is forbidden or before Start.
// (It cannot be called TLSConfig: that is the option's name.)
func (srv *Server) ActiveTLSConfig() *tls.Config {
	srv.tlsMu.Lock()
	defer srv.tlsMu.Unlock()
	return srv.activeTLS
}

// Wait blocks until the server has been stopped by Shutdown or Close and every
// session and listener goroutine has ended.
func (srv *Server) Wait() {
	if srv.init() != nil {
		return
	}
	<-srv.closing
	srv.loops.Wait()
	srv.served.Wait()
}

// Shutdown stops the server gracefully: the listeners close at once; idle sessions
// (and those still waiting for a processing slot) get 421 and are closed; a session
// in the middle of DATA finishes its message (250 or the hook's error) and then gets
// 421. When ctx ends first, the remaining sessions are closed as by Close and ctx's
// error is returned at once (as net/http does: a hook still running is not waited
// for; Wait waits for it).
func (srv *Server) Shutdown(ctx context.Context) error {
	if err := srv.init(); err != nil {
		return err
	}
	srv.beginClose()
	for _, c := range srv.connList() {
		c.interruptIdle()
	}
	done := make(chan struct{})
	go func() {
		srv.loops.Wait()
		srv.served.Wait()
		close(done)
	}()
	select {
	case <-done:
		srv.cancelBase()
		return nil
	case <-ctx.Done():
		srv.Close() // hooks still running finish on their own; Wait waits for them
		return ctx.Err()
	}
}

// Close stops the server at once: the listeners close and every session gets
// "421 Service not available, closing transmission channel" and is closed; session
// contexts are cancelled. A message whose OnMessage has not returned nil is never
// acknowledged. Close returns when every session has had its 421 (a client that does
// not read gets at most a second's grace).
func (srv *Server) Close() error {
	if err := srv.init(); err != nil {
		return err
	}
	srv.beginClose()
	var wg sync.WaitGroup
	for _, c := range srv.connList() {
		wg.Go(c.abort) // concurrently: each may wait ~1 s on a stuck write
	}
	wg.Wait()
	srv.cancelBase()
	return nil
}

// beginClose marks the server closing and closes its listeners, once.
func (srv *Server) beginClose() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.isClosing.Load() {
		return
	}
	srv.isClosing.Store(true)
	close(srv.closing)
	for _, l := range srv.listeners {
		l.Close()
	}
}

// connList returns the connections being served now.
func (srv *Server) connList() []*conn {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	list := make([]*conn, 0, len(srv.conns))
	for c := range srv.conns {
		list = append(list, c)
	}
	return list
}

// randomPrefix returns a few random base-36 characters and a dash.
func randomPrefix() string {
	return strconv.FormatUint(rand.Uint64N(36*36*36*36*36*36), 36) + "-"
}
