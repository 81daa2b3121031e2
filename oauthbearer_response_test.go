package smtpd_test

import (
	"testing"
)

// TestAuthOAuthBearerEmptyResponseAfterRefusal: after the RFC 7628 3.2.2 error
// challenge of a refused token the client must send %x01. One that sends an
// empty response instead (an empty line, or "=") must get the refusal, 535, as
// for any other wrong response. go-sasl's OAUTHBEARER server indexes response[0]
// without checking its length there (`len(response) != 1 && response[0] != 0x01`),
// so the empty response panics inside cmdAuth: the client gets 421 and the
// connection is closed, and every such attempt logs a panic with its stack.
func TestAuthOAuthBearerEmptyResponseAfterRefusal(t *testing.T) {
	for _, resp := range []string{"", "="} {
		_, c, _ := mechServer(t, &mechHandler{}, []string{"OAUTHBEARER"})
		c.StartTLS(nil)
		c.Cmd("EHLO client.example", 250)
		bad := "n,a=carol@example.org,\x01auth=Bearer bad-token\x01\x01"
		c.Cmd("AUTH OAUTHBEARER "+b64s(bad), 334)
		c.Cmd(resp, 535) // today: 421, after a recovered panic
		c.Cmd("NOOP", 250)
	}
}
