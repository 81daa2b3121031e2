// Package mailauth checks the authentication of inbound mail for an smtpd server.
package mailauth
