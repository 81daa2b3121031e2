// Package smtpd is an SMTP server to embed in a Go program. It began as the Go port
// of Ruby's MidiSmtpServer (its hook names and reply texts) and has grown what an
// Internet-facing receiver needs: ESMTP extensions, AUTH mechanisms, abuse limits,
// PROXY protocol and XCLIENT, streaming, LMTP and counters.
//
// A program sets the options of a [Server], writes the hooks it cares about on a
// type that embeds [BaseHandler], and calls [Server.Start]. The library speaks the
// protocol, enforces the limits and hands over each message; what happens to it —
// a queue, a mailbox, a test assertion — is the program's code:
//
//	type handler struct{ smtpd.BaseHandler } // the defaults: accept, deny AUTH, 500 for unknown commands
//
//	func (handler) OnRcptTo(s *smtpd.Session, to string) (string, error) {
//		if to == "nobody@example.com" {
//			return "", smtpd.SMTPError550 // the client gets 550
//		}
//		return "", nil // "" keeps the address as sent
//	}
//
//	func (handler) OnMessage(s *smtpd.Session) error {
//		fmt.Printf("%s: <%s> to %q, %d bytes\n", s.Message.ID, s.Envelope.From, s.Envelope.To, len(s.Message.Data))
//		return nil // nil answers 250: only now is the message the program's
//	}
//
//	func main() {
//		srv := &smtpd.Server{Handler: handler{}, Hosts: "127.0.0.1", Ports: "2525"}
//		if err := srv.Start(); err != nil { // binds every address or none
//			log.Fatal(err)
//		}
//		srv.Wait() // until Shutdown (on SIGTERM, say) or Close
//	}
//
// # Hooks
//
// The [Handler] hooks run for every connection: OnConnect, OnHelo, OnAuth,
// OnMailFrom, OnRcptTo, OnDataStart, OnDataReceiving, OnDataHeaders, OnMessage,
// OnUnknown, OnDisconnect. One session's hooks run one at a time, different
// sessions' concurrently. Each sees the [Session]: the client, the [Envelope], the
// [Message], and UserData for the program's own per-session value; Message.ID
// names each message ("<Session.ID>-<n>").
//
// Not every message goes to OnMessage. By default a message is gathered in
// Message.Data and OnMessage gets it whole; a Handler that implements
// [MessageStreamer] gets it in OnMessageStream as an io.Reader while it arrives,
// OnMessage is not called, and memory per session stays bounded whatever the size.
// The optional interfaces, found by type assertion as net/http finds http.Flusher:
//
//   - [MessageStreamer]: OnMessageStream, each message as a stream;
//   - [RecipientHandler]: OnMessageRecipient, one reply per recipient in LMTP;
//   - [DataCommandHandler]: OnDataCommand, at DATA before the 354 (a filter's DATA stage);
//   - [ResetHandler]: OnReset, when a transaction MAIL FROM began ends, however it ends;
//   - [TokenAuthHandler]: OnAuthToken, the bearer token of OAUTHBEARER and XOAUTH2;
//   - [ExternalAuthHandler]: OnAuthExternal, EXTERNAL with the TLS client certificate.
//
// A hook answers with an [SMTPError] or an error wrapping one; any other error is
// answered 451, and a hook that panics or calls runtime.Goexit gets the client a
// 421 and ends its session. A method named like a hook that
// the server never calls (OnRcpt for OnRcptTo) compiles, since BaseHandler supplies
// the real hook: [CheckHandler] reports it, Start logs it at Warn, and
// smtptest.NewServer fails the test.
//
// # Standards and extensions
//
//   - RFC 5321: SMTP — commands, replies, sequencing, path syntax and length limits,
//     DATA with dot-stuffing and <CRLF>.<CRLF> as its only end (no SMTP smuggling).
//   - RFC 1869 and RFC 5321 4.1.1.11: ESMTP parameters (an unknown one: 555).
//   - RFC 1870: SIZE, always advertised (Server.MaxMessageSize).
//   - RFC 2034 and RFC 3463: ENHANCEDSTATUSCODES (EnhancedStatusCodes); enhanced
//     codes, a program's own included, are sent only while it is on.
//   - RFC 2920: PIPELINING (Pipelining; off by default).
//   - RFC 3030: CHUNKING and BINARYMIME, the BDAT command (Chunking).
//   - RFC 3461: DSN — RET, ENVID, NOTIFY, ORCPT kept in the Envelope (DSN).
//   - RFC 6152: 8BITMIME and RFC 6531: SMTPUTF8 (Internationalization).
//   - RFC 2033: LMTP instead of SMTP (LMTP).
//   - RFC 4954: AUTH (AuthMode, AuthMechanisms) with the SASL mechanisms PLAIN
//     (RFC 4616), LOGIN, OAUTHBEARER (RFC 7628), XOAUTH2 (Google's) and EXTERNAL
//     (RFC 4422) with the TLS client certificate (TLSClientAuth, TLSClientCAs).
//   - RFC 3207: STARTTLS (TLSMode), and RFC 8314: implicit TLS (ImplicitTLSPorts).
//   - RFC 8689: REQUIRETLS, advertised over TLS only (RequireTLS), and the
//     TLS-Required header field.
//   - HAProxy's PROXY protocol, versions 1 and 2 (ProxyTrustedNetworks).
//   - Postfix's XCLIENT (XClientTrustedNetworks).
//
// # Options
//
// The fields of Server, each documented there; the zero value of every one works:
//
//   - listening: Hosts, Ports, ImplicitTLSPorts (or Server.Serve with a listener);
//   - slots and connections: MaxProcessings, WaitTimeout, MaxConnections,
//     MaxConnectionsPerIP;
//   - timeouts and abuse limits: IOCmdTimeout, IOBufferMaxSize, MaxErrors,
//     MaxJunkCommands, GreetDelay, MinDataRate — tightened in stress mode, while
//     connections wait for a slot;
//   - messages: MaxMessageSize, MaxRecipients, MaxBufferedData, CRLFMode;
//   - extensions: Pipelining, Internationalization, EnhancedStatusCodes, Chunking,
//     DSN, LMTP, RequireTLS;
//   - AUTH: AuthMode, AuthMechanisms (MechanismPlain, MechanismLogin,
//     MechanismOAuthBearer, MechanismXOAuth2, MechanismExternal), MaxAuthFailures,
//     AuthFailureDelay;
//   - TLS: TLSMode, TLSConfig, TLSCertPath, TLSKeyPath, TLSCertCN, TLSCertSAN,
//     TLSCipherSuites, TLSClientAuth, TLSClientCAs;
//   - front ends: ProxyTrustedNetworks, XClientTrustedNetworks;
//   - DNSReverseLookup, Logger (log/slog).
//
// # Memory
//
// Each connection has one goroutine at a time; an idle one gives its buffers back
// and waits in a small read, on a fresh goroutine with a small stack. Message data
// is bounded by MaxMessageSize per message, MaxBufferedData for all buffered
// messages together, and streaming; a SIZE= a client declares never reserves
// memory. The library never forces a garbage collection, never hands memory back
// to the operating system itself, and sets no GC percentage, memory limit or
// processor count: memory policy is the program's, for example a memory limit in
// its environment or set in its main (the README's Memory section shows how).
//
// Where MidiSmtpServer breaks an RFC or is unsafe (SMTP smuggling, STARTTLS
// command injection, state kept across STARTTLS, plaintext AUTH), this package
// follows the RFC; docs/midi-smtp-server.md in the repository lists each
// difference. The smtptest package runs a server for one test, as net/http/httptest
// does for HTTP.
package smtpd
