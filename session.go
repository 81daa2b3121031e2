package smtpd

import (
	"context"
	"crypto/tls"
	"log/slog"
	"time"
)

// Envelope is the SMTP envelope of the current transaction.
type Envelope struct {
	From         string   // reverse-path without angle brackets; "" for <>
	To           []string // forward-paths without angle brackets, in order
	EncodingBody string   // "", "7bit", "8bitmime" or "binarymime" (MAIL FROM BODY=)
	EncodingUTF8 string   // "" or "utf8" (MAIL FROM SMTPUTF8)
	Size         int      // MAIL FROM SIZE= (RFC 1870), the size the client declared (a claim: it reserves nothing); 0 when not given

	// With Server.RequireTLS (RFC 8689): the client sent MAIL FROM ... REQUIRETLS
	// (over TLS): the message must be relayed over TLS only.
	RequireTLS bool
	// TLSRequiredNo reports that the message has a "TLS-Required: No" header field
	// (RFC 8689 5): its sender asks relays to deliver it even where TLS fails. It is
	// set once the header section has arrived: before OnDataHeaders and OnMessage on
	// the buffered path, after OnMessageStream returned on the streaming path (so
	// a stream hook does not see it; LMTP's OnMessageRecipient does).
	TLSRequiredNo bool

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
	// ID names the message in logs, file names and queues: "<Session.ID>-<n>",
	// unique within the process as Session.ID is. n counts, from 1, the session's
	// MAIL FROM commands that passed the server's checks and reached OnMailFrom: ID
	// is set before OnMailFrom runs (and cleared again if it refuses), kept until
	// the transaction ends, and never reused, so a refused or abandoned transaction
	// leaves a gap in the numbers.
	ID          string
	ReceivedAt  time.Time // when DATA was accepted (354)
	DeliveredAt time.Time // when the final dot arrived
	Headers     bool      // the empty line ending the header section has been seen
	Bytesize    int       // len(Data) when OnMessage runs; the bytes streamed, once OnMessageStream returned
	CRLF        string    // the line end hooks should use when appending: "\r\n" (CRLFLeave: the last line's)
	Data        []byte    // the message as received, dot-unstuffed, hook additions included
}

// Session is what the hooks of one client connection see: MidiSmtpServer's ctx,
// flattened, as http.Request is what an http.Handler sees. Hooks read it and may
// change LocalResponse and HeloResponse (CR and LF are removed when they are sent),
// append to Message.Data and keep their own value in UserData. A Session must not be
// used after its OnDisconnect returned.
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
	AuthMechanism    string    // the SASL mechanism of the successful AUTH (MechanismPlain, ...); "" until then, and after XCLIENT LOGIN=
	AuthenticatedAt  time.Time // zero until AUTH succeeded
	EncryptedAt      time.Time // zero until TLS is on

	Envelope Envelope
	Message  Message

	// UserData is the program's own per-session value: nil at connect, never read
	// or changed by the library. Hooks of one session run one at a time, so it needs
	// no lock within the session.
	UserData any

	c      *conn           // the connection behind it; nil for NewSession's
	ctx    context.Context // NewSession's; a connection's is made by conn.context
	logger *slog.Logger    // NewSession's; a connection's is made by conn.log
}

// NewSession returns a Session that belongs to no connection, for calling a hook
// directly (a unit test of OnMailFrom, say), as http.NewRequestWithContext makes a
// Request for a handler: Context returns ctx, Logger returns logger (nil:
// slog.Default()) with a "session" attribute of id. Everything else is zero; the
// caller sets what the hook expects. smtptest.NewSession builds on it.
func NewSession(ctx context.Context, logger *slog.Logger, id string) *Session {
	if logger == nil {
		logger = slog.Default()
	}
	return &Session{ID: id, ctx: ctx, logger: logger.With(slog.String("session", id)), Message: Message{CRLF: "\r\n"}}
}

// IsAuthenticated reports whether AUTH succeeded in this session.
func (s *Session) IsAuthenticated() bool { return !s.AuthenticatedAt.IsZero() }

// IsEncrypted reports whether the connection is TLS (STARTTLS or implicit).
func (s *Session) IsEncrypted() bool { return !s.EncryptedAt.IsZero() }

// Context is cancelled when the connection ends and when the server is closed (by
// Close, or by Shutdown's deadline); hooks pass it to the work they start. A
// Session made by hand (a test's &Session{}) has context.Background().
func (s *Session) Context() context.Context {
	if s.c != nil {
		return s.c.context()
	}
	if s.ctx == nil {
		return context.Background()
	}
	return s.ctx
}

// Logger returns the session's logger, with "remote" and "session" attributes.
// A Session made by hand (a test's &Session{}) has slog.Default().
func (s *Session) Logger() *slog.Logger {
	switch {
	case s.c != nil:
		return s.c.log()
	case s.logger != nil:
		return s.logger
	}
	return slog.Default()
}

// TLSState returns the TLS connection state once TLS is on.
func (s *Session) TLSState() (tls.ConnectionState, bool) {
	if s.c == nil || s.c.tlsState == nil {
		return tls.ConnectionState{}, false
	}
	return *s.c.tlsState, true
}

// CommandParams returns the ESMTP parameters of the MAIL FROM or RCPT TO command
// whose hook (OnMailFrom, OnRcptTo) is running, as the client sent them ("KEY=value"
// or "KEY"), in order; nil in other hooks. Envelope.FromParams and ToParams keep
// those of the accepted commands.
func (s *Session) CommandParams() []string {
	if s.c == nil {
		return nil
	}
	return s.c.params
}
