package smtpd

import "io"

// Handler receives the events of every session: the port of MidiSmtpServer's
// on_*_event methods. Applications embed BaseHandler and override the methods they
// need; `return h.BaseHandler.OnUnknown(s, line)` is Ruby's `super`.
//
// A hook that returns an *SMTPError (or an error wrapping one) makes the server reply
// with that error's code and text; SMTPError421 also closes the connection. Any other
// error is logged and answered "451 Requested action aborted: local error in
// processing". A panic is recovered, logged with its stack, answered 421 and that
// connection is closed; so is a hook that calls runtime.Goexit (t.FailNow in a
// test's handler). Hooks of one session run one at a time, on the connection's
// goroutine (OnMessageStream on one of its own, while the session waits); hooks of
// different sessions run concurrently.
//
// A Handler may also implement the optional interfaces MessageStreamer,
// RecipientHandler, DataCommandHandler, ResetHandler, TokenAuthHandler and
// ExternalAuthHandler; the server finds them by type assertion, as net/http finds
// http.Flusher. A method named like a hook that the server never calls (a
// misspelling such as OnRcpt, or an optional hook with the wrong signature)
// compiles, since the embedded BaseHandler supplies the real hook: CheckHandler
// reports it, and Start logs it at Warn.
type Handler interface {
	// OnConnect runs when a client connects, before the banner. It may change
	// s.LocalResponse and s.HeloResponse. An error refuses the connection: its reply
	// (421 for a plain error) is sent and the connection is closed.
	OnConnect(s *Session) error
	// OnDisconnect runs once when the connection ends, however it ends.
	OnDisconnect(s *Session)
	// OnHelo runs on HELO and EHLO with the client's domain; it may change s.HeloResponse.
	OnHelo(s *Session, helo string) error
	// OnAuth checks the credentials of the PLAIN and LOGIN mechanisms (LOGIN sends
	// no authorizationID). A non-empty return becomes s.AuthorizationID; else the
	// requested authorizationID, else authenticationID. Return SMTPError535 to deny.
	// Tokens (OAUTHBEARER, XOAUTH2) go to TokenAuthHandler, client certificates
	// (EXTERNAL) to ExternalAuthHandler: see Server.AuthMechanisms.
	OnAuth(s *Session, authorizationID, authenticationID, password string) (string, error)
	// OnMailFrom runs on MAIL FROM with the reverse-path without angle brackets ("" for
	// <>). A non-empty return replaces it in s.Envelope.From.
	OnMailFrom(s *Session, from string) (string, error)
	// OnRcptTo runs on each RCPT TO with the forward-path without angle brackets. A
	// non-empty return replaces it in s.Envelope.To.
	OnRcptTo(s *Session, to string) (string, error)
	// OnDataStart runs once per message when its first line arrives, before anything is
	// stored in s.Message.Data: the place to add a Received header.
	OnDataStart(s *Session) error
	// OnDataReceiving runs after each line has been appended to s.Message.Data.
	OnDataReceiving(s *Session) error
	// OnDataHeaders runs at the empty line that ends the header section, before that
	// line is appended: headers appended here land before the body.
	OnDataHeaders(s *Session) error
	// OnMessage runs after the final dot with the complete message in s.Message.Data
	// (s.Message.Bytesize and DeliveredAt set). The client gets 250 only if it returns nil.
	OnMessage(s *Session) error
	// OnUnknown runs for a command line the server does not know. Returning nil answers
	// "250 OK"; the default returns SMTPError500.
	OnUnknown(s *Session, line string) error
}

// BaseHandler is the Handler whose hooks accept everything, except OnAuth, which
// denies every login (535), and OnUnknown, which answers 500. Embed it in a handler.
type BaseHandler struct{}

var _ Handler = BaseHandler{}

// OnConnect accepts the connection.
func (BaseHandler) OnConnect(*Session) error { return nil }

// OnDisconnect does nothing.
func (BaseHandler) OnDisconnect(*Session) {}

// OnHelo accepts any domain.
func (BaseHandler) OnHelo(*Session, string) error { return nil }

// OnAuth denies every login with SMTPError535.
func (BaseHandler) OnAuth(*Session, string, string, string) (string, error) {
	return "", SMTPError535
}

// OnMailFrom accepts the sender unchanged.
func (BaseHandler) OnMailFrom(*Session, string) (string, error) { return "", nil }

// OnRcptTo accepts the recipient unchanged.
func (BaseHandler) OnRcptTo(*Session, string) (string, error) { return "", nil }

// OnDataStart does nothing.
func (BaseHandler) OnDataStart(*Session) error { return nil }

// OnDataReceiving does nothing.
func (BaseHandler) OnDataReceiving(*Session) error { return nil }

// OnDataHeaders does nothing.
func (BaseHandler) OnDataHeaders(*Session) error { return nil }

// OnMessage accepts the message and discards it.
func (BaseHandler) OnMessage(*Session) error { return nil }

// OnUnknown answers "500 Syntax error, command unrecognised ...".
func (BaseHandler) OnUnknown(*Session, string) error { return SMTPError500 }

// DataCommandHandler is an optional interface of a Handler: OnDataCommand runs when
// the DATA command is accepted (the sequence and AUTH checks passed), before the 354
// reply, and at the first BDAT of a transaction before its octets are stored. An
// error is DATA's reply (for BDAT the chunk's, after its octets were read and
// discarded); the transaction stays, as after any refused DATA. It is the place of a
// filter's DATA stage (the milter protocol's SMFIC_DATA); OnDataStart runs later, at
// the first line of the message.
type DataCommandHandler interface {
	OnDataCommand(s *Session) error
}

// ResetHandler is an optional interface of a Handler: OnReset runs when a
// transaction that MAIL FROM began ends, however it ends — its message answered
// (250 or an error, the server's own refusals included), RSET, a new
// HELO/EHLO/LHLO, STARTTLS, XCLIENT, a command other than BDAT or NOOP in the
// middle of a BDAT transfer, or the connection ending (then before OnDisconnect).
// s.Envelope and s.Message still hold the transaction while it runs. It is the
// place of a filter's end of transaction (the milter protocol's SMFIC_ABORT).
type ResetHandler interface {
	OnReset(s *Session)
}

// MessageStreamer is an optional interface of a Handler, as http.Flusher is of an
// http.ResponseWriter. A Handler that implements it gets each message (DATA or
// BDAT) as a reader of the dot-unstuffed, CRLF-mode-processed bytes, and nothing is
// gathered in Message.Data, so memory per session stays bounded by the buffers
// whatever the message size.
//
// OnDataStart runs first, as for the buffered path; OnDataReceiving and
// OnDataHeaders do not run; OnMessage is not called. The reader ends (io.EOF) at the
// real end of data — <CRLF>.<CRLF> or the LAST chunk, the smuggling rules unchanged —
// or fails with an error wrapping SMTPError552 past MaxMessageSize, with one wrapping
// the CRLFStrict reply when the message had a bare line end, or with
// io.ErrUnexpectedEOF when the client left. What the hook leaves unread is read and
// discarded; its return value answers the final dot as OnMessage's would (nil: 250),
// unless the data broke a rule, whose reply wins. Message.Bytesize is the number of
// bytes streamed. OnMessageStream runs on a goroutine of its own while the session
// reads the data; it must not touch the Session's Message, and it returns before
// any other hook of the session runs.
type MessageStreamer interface {
	OnMessageStream(s *Session, r io.Reader) error
}

// RecipientHandler is an optional interface of a Handler, as http.Flusher is of an
// http.ResponseWriter: in LMTP mode, after OnMessage returned nil, the server calls
// OnMessageRecipient once per accepted recipient, in RCPT order, and answers that
// recipient with its result (nil: "250 OK <rcpt>"; an SMTPError: its reply; any other
// error: 451). A 421 among them is sent in its place and closes the connection once
// every recipient has its reply. Without it every recipient gets 250.
type RecipientHandler interface {
	OnMessageRecipient(s *Session, rcpt string) error
}
