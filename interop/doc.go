// Package interop holds the tests of github.com/midismtp/smtpd that drive programs
// we did not write, over loopback against the library's public API (smtpd and
// smtptest): real SMTP clients (swaks, Python's smtplib, openssl s_client, msmtp,
// curl, gnutls-cli, nodemailer, Go's net/smtp and go-smtp's client), private
// Postfix instances delivering with their smtp and lmtp clients, HAProxy sending
// PROXY headers, the bench scripts in miniature, and every command the READMEs
// tell a reader to run.
//
// It is a module of its own, so that the library's module needs only Go to test
// (go test ./... there) and names no client library. `make test` runs it; .ci/run
// installs the programs. A test whose program is missing is skipped, or fails
// when the environment variable CI is set.
//
// The package has no code of its own: everything is in its _test.go files.
package interop
