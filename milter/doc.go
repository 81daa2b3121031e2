// Package milter is a milter client for smtpd: it wraps a Handler and calls mail
// filters — rspamd, OpenDKIM, OpenDMARC, SpamAssassin (spamass-milter), ClamAV
// (clamav-milter) — over the Sendmail milter protocol (version 6, through
// github.com/d--j/go-milter) at every stage Postfix calls its smtpd_milters, with
// Postfix's macros, replies and default actions, and applies their changes to
// the message and envelope the program's handler gets, byte for byte as
// Postfix's cleanup writes them.
//
//	ms, _ := milter.ParseMilters("inet:127.0.0.1:8891, unix:/run/rspamd/milter.sock")
//	srv := &smtpd.Server{Handler: milter.Wrap(myHandler, milter.Config{Milters: ms})}
//
// Standards: RFC 5321 (SMTP replies and parameters), RFC 5322 (header fields),
// RFC 3463 and RFC 2034 (enhanced status codes, sent when the server has
// EnhancedStatusCodes on), RFC 3461 (DSN parameters a milter gives with a
// recipient or sender it sets), RFC 3030 (BDAT: the first BDAT is the DATA
// stage). The milter protocol itself is Sendmail's (libmilter); Postfix's
// MILTER_README and its milter8.c and cleanup_milter.c are the reference for
// what each event and answer means.
//
// # Stages
//
// Each SMTP session has its own connection to each milter (as Postfix), opened
// at connect and closed with QUIT when the session ends. The program's hook runs
// first at each stage (its refusals are the server's own, as Postfix's
// restrictions); then the milters, in order:
//
//	connect   OnConnect         SMFIC_CONNECT, with the real client behind PROXY or XCLIENT
//	HELO      OnHelo            SMFIC_HELO (again after STARTTLS, with the TLS macros)
//	MAIL      OnMailFrom        SMFIC_MAIL, the ESMTP parameters as sent, one C string each
//	RCPT      OnRcptTo          SMFIC_RCPT; refused recipients too, to milters asking for them
//	DATA      OnDataCommand     SMFIC_DATA, before 354 (and at the first BDAT)
//	header    as lines arrive   SMFIC_HEADER for each field
//	EOH       at the empty line SMFIC_EOH
//	body      as lines arrive   SMFIC_BODY in chunks of at most 65535 bytes
//	EOM       at the final dot  SMFIC_BODYEOB; then the changes are applied
//	abort     OnReset, and after every message (as Postfix)   SMFIC_ABORT
//	unknown   OnUnknown         SMFIC_UNKNOWN, for a command the program does not know either
//	quit      OnDisconnect      SMFIC_QUIT
//
// After XCLIENT the milters are connected anew and told the client XCLIENT names
// (Postfix does the same), at the next EHLO.
//
// Several milters: each event goes to each milter in order; the first that
// refuses ends it. A milter comes after the changes of the milters before it: its
// content is the message as they changed it (Postfix: "each milter sees the
// result of any changes made by a preceding milter"). So the first milter, and
// every following one as long as the milters before it did not negotiate header
// or body changes, gets the content as it arrives; a milter after one that may
// change the content gets it at the end of the message, after that milter's
// changes.
//
// # Macros
//
// Postfix's default lists (milter_*_macros), with the client's own macros added
// at connect; a milter that asks for its own lists when it negotiates gets those
// instead (for every stage: go-milter replaces all the lists):
//
//	connect  j {daemon_name} {daemon_addr} {daemon_port} v _ {client_addr} {client_port}
//	         {client_name} {client_ptr} {client_resolve}
//	HELO     {tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer} (with TLS)
//	MAIL     i {auth_type} {auth_authen} {mail_addr} {mail_host} {mail_mailer}
//	RCPT     i {rcpt_addr} {rcpt_host} {rcpt_mailer}
//	DATA, EOH, EOM   i
//
// i is the session's Message.ID, from the first accepted recipient on (Postfix's
// queue ID: its queue file opens then; so the first RCPT event has none).
// {client_name} and {client_ptr} are "unknown"
// when the session has no host name for the client (the connect event then
// names it "[address]"); {client_addr} has RFC 5321's "IPv6:" before an IPv6
// address. {mail_mailer} and {rcpt_mailer} are "smtp" for an address with a
// domain, "local" without: this server does not route mail. A macro without a
// value is not sent.
//
// # Answers
//
// As Postfix (milter8.c, smtpd.c, cleanup_milter.c):
//
//	             connect, HELO                 MAIL, RCPT, DATA, unknown     header ... EOM
//	continue     next milter                   next milter                   next milter
//	accept       milter done for the session   milter done for the message   milter done for the message
//	reject       550 5.7.1 for the session(*)  550 5.7.1 Command rejected    550 5.7.1 at the final dot
//	tempfail     451 4.7.1 for the session(*)  451 4.7.1 Service unavailable 451 4.7.1 at the final dot
//	reply        its own code and text(*)      its own code and text         its own, at the final dot
//	discard      ignored                       message accepted with 250, not delivered; no more milter events
//	quarantine   -                             -                             delivered; Quarantined tells h
//
// A refusal at RCPT refuses that recipient only. A reply keeps its RFC 3463
// code (EnhancedCode) and its lines (a multi-line Message); "%%" becomes "%".
// (*) At connect a 5xx answer refuses the connection with 554, a 421 with 421;
// any other refusal at connect or HELO lets HELO pass (250) and answers MAIL
// FROM and AUTH for the rest of the session. A refused DATA answers any later
// DATA of the transaction alike. At the unknown stage only a 4xx answer
// replaces the server's own 500. A discarded message gets 250 and h's
// OnMessage (or OnMessageStream, or LMTP's OnMessageRecipient) is not called.
//
// # Changes
//
// Header fields (add at the end; insert at an index counting every field;
// change or delete the index-th field of a name, 1-based, any case, an index of
// 0 being 1, a missing field being added; a field is written "Name: value", no
// space added when the milter negotiated SMFIP_HDR_LEADSPC, every line of a
// folded value ending with CRLF and a continuation line without a leading blank
// getting a TAB), the body (its "\n" and a last line without one written with
// CRLF), the sender and the recipients (with their ESMTP arguments in
// Envelope.FromParams and ToParams; RET=, ENVID=, NOTIFY= and ORCPT= read into
// the DSN fields; a recipient already there with the same arguments is not added
// twice). Fields the milters did not touch keep their bytes. Header values go to
// a milter with their folded lines separated by "\n" and, unless it negotiated
// SMFIP_HDR_LEADSPC (OpenDKIM does, spamass-milter does not), without the one
// space after the colon. Fields the program adds in OnDataStart (its own
// Received:) are not shown to milters; a change's index does not count them, an
// insert's does — as Postfix with its own Received:.
//
// h sees the changes in OnMessage (Message.Data and Bytesize) or
// OnMessageStream (the reader), and in s.Envelope; after h returns, the envelope
// is put back as the client sent it (LMTP answers the client's RCPTs).
//
// # Buffered and streaming handlers
//
// A handler that buffers (no MessageStreamer) gets the message from the server's
// Message.Data, within its MaxBufferedData accounting: the milters get its lines
// from there as they arrive, and a changed message is rebuilt in the same buffer
// when it fits (else in a new one). A MessageStreamer's message is spooled while
// the milters decide — in memory up to 64 KiB, then in a temporary file in
// Config.TempDir, unlinked as soon as it is made, so no outcome leaves one —
// bounded by the server's MaxMessageSize; the handler then reads it, as changed,
// from the spool. Without a milter that takes the content, h reads the stream
// itself.
//
// # Failures
//
// Each milter has a connect timeout (dial, negotiation and the connect event), a
// command timeout (HELO, MAIL, RCPT, DATA, unknown, abort) and a content timeout
// (header, EOH, body, EOM). A milter that is down, times out, closes its
// connection, or sends something that is not the protocol (a packet over 1 MiB or
// of length 0, an unknown code, more than MaxReplyBytes in one answer) has failed:
// it is logged once, it gets no more events in the session, and DefaultAction
// answers in its place from then on — TempFail: 451 4.7.1 (never a 250 for a
// message the milters did not pass), Reject: 550 5.5.0, Accept: the milter is
// skipped and mail goes on as if it were not configured. The server's close ends
// every milter wait at once.
//
// # Differences from Postfix
//
//   - A refusal at connect closes the connection after its 554 (Postfix keeps it
//     open, refusing every command). After XCLIENT the new connect event comes
//     with the next EHLO; a 5xx answer to it persists (MAIL gets it) instead of a
//     554 greeting.
//   - go-milter's client does not know SMFIR_SHUTDOWN: a milter that sends it
//     has failed (DefaultAction; Postfix answers 421).
//   - After a milter quarantines a message, the milters after it still get the
//     message (Postfix stops at the first quarantine).
//   - A message whose body is empty gets one empty SMFIC_BODY event (go-milter
//     needs one before the end of the message; Postfix sends none).
//   - A milter that gets the content live has seen it even when a milter before
//     it refuses the message at its end: it then gets SMFIC_ABORT.
//   - A header field longer than 102400 bytes reaches milters cut there (as
//     Postfix's header_size_limit) but is delivered whole; a header section of
//     more than 10000 fields is refused (552 5.3.4).
//   - The macros {auth_author}, {client_connections}, {cert_*} of untrusted
//     certificates and {tls_sni} are not sent; milter_macro_defaults has no
//     counterpart.
package milter
