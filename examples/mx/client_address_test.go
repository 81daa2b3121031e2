package main

import (
	"strings"
	"testing"
)

// TestClientAddressChecked: behind XCLIENT (-xclient-trusted) and a PROXY header
// (-proxy-trusted), the client address they name is the one mailauth checks
// (our field's iprev names it), the one the milters are told, and the one the
// .json records. With DNS at hand (nsd) the e2e tests check the SPF and iprev
// verdicts for it too.
func TestClientAddressChecked(t *testing.T) {
	cases := []struct {
		name, client, proxy string
		args                []string
		begin               func(t *testing.T, mx *mxRun) *mxConn
	}{
		{"XCLIENT", "192.0.2.7", "", []string{"-xclient-trusted", "127.0.0.1"}, func(t *testing.T, mx *mxRun) *mxConn {
			c := mx.dial(t)
			c.Cmd("EHLO client.test", 250)
			c.Cmd("XCLIENT ADDR=192.0.2.7 PORT=4000 NAME=[UNAVAILABLE]", 220)
			c.Cmd("EHLO relay.client.test", 250)
			return c
		}},
		{"PROXY v1", "198.51.100.9", "127.0.0.1", []string{"-proxy-trusted", "127.0.0.0/8"}, func(t *testing.T, mx *mxRun) *mxConn {
			c := dialRaw(t, mx)
			c.Send("PROXY TCP4 198.51.100.9 127.0.0.1 5000 25\r\n")
			c.Expect(220)
			c.Cmd("EHLO relay.client.test", 250)
			return c
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tm := startTestMilter(t, 0, nil)
			mx := startMX(t, append(tc.args, "-milter", tm.Addr)...)
			c := tc.begin(t, mx)
			if code, text := send(t, c, "alice@example.test", []string{"bob@dest.test"}, plainMessage); code != 250 {
				t.Fatalf("%d %s", code, text)
			}
			m := only(t, mx.Out)
			field, _ := ourField(t, m.EML)
			if !strings.Contains(field, "policy.iprev="+tc.client) {
				t.Errorf("our field does not check %s:\n%s", tc.client, field)
			}
			if m.Rec.RemoteIP != tc.client || m.Rec.ProxyIP != tc.proxy || m.Rec.Helo != "relay.client.test" {
				t.Errorf("remote_ip %q proxy_ip %q helo %q", m.Rec.RemoteIP, m.Rec.ProxyIP, m.Rec.Helo)
			}
			if got := tm.Client(); got != tc.client {
				t.Errorf("the milter was told %q", got)
			}
		})
	}
}

// TestUntrustedClaimsIgnored: XCLIENT and PROXY from a client not trusted for
// them change nothing: XCLIENT is refused, a PROXY line is a bad command.
func TestUntrustedClaimsIgnored(t *testing.T) {
	mx := startMX(t, "-xclient-trusted", "192.0.2.0/24")
	c := mx.dial(t)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("XCLIENT ADDR=192.0.2.7", 550)
	if code, _ := send(t, c, "alice@example.test", []string{"bob@dest.test"}, plainMessage); code != 250 {
		t.Fatal(code)
	}
	if m := only(t, mx.Out); m.Rec.RemoteIP != "127.0.0.1" || !strings.Contains(m.Rec.AuthResults, "policy.iprev=127.0.0.1") {
		t.Errorf("remote_ip %q, auth_results %q", m.Rec.RemoteIP, m.Rec.AuthResults)
	}
}
