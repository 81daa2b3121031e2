// Package smtpd is an embeddable, highly customizable SMTP server: the Go port of
// Ruby's MidiSmtpServer. An application sets the options of a Server, implements the
// Handler hooks it cares about (connect, HELO, AUTH, MAIL FROM, RCPT TO, the DATA
// stream, the finished message, unknown commands) by embedding BaseHandler, and calls
// Start. The library does nothing with a message but hand it to OnMessage.
//
// Standards covered:
//   - RFC 5321: SMTP (commands, replies, command sequencing, path syntax and length
//     limits, DATA and dot-stuffing, <CRLF>.<CRLF> as the only end of data)
//   - RFC 1869 / RFC 5321 4.1.1.11: ESMTP parameters (unknown ones: 555)
//   - RFC 2920: PIPELINING (off by default)
//   - RFC 6152: 8BITMIME, and RFC 6531: SMTPUTF8 (Internationalization)
//   - RFC 4954: AUTH, with RFC 4616 PLAIN and the LOGIN mechanism
//   - RFC 3207: STARTTLS, and RFC 8314: implicit TLS ports
//   - RFC 3463 enhanced status codes, where a hook's SMTPError carries one
//
// Where MidiSmtpServer breaks an RFC or is unsafe (SMTP smuggling, STARTTLS command
// injection, state kept across STARTTLS, plaintext AUTH), this package follows the
// RFC; docs/midi-smtp-server.md lists each difference.
package smtpd
