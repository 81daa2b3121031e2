package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd/smtptest"
)

// TestLimitsOn: with no limit flags (there are none), mx answers as its limits
// say: the extensions of EHLO, SIZE at MAIL, the error, junk, recipient,
// per-client and data-rate limits.
func TestLimitsOn(t *testing.T) {
	mx := startMX(t)
	t.Run("banner and EHLO", func(t *testing.T) {
		c := (&smtptest.Server{Addr: mx.Addr}).Dial(t)
		if banner := c.Expect(220); banner != "mx.test ESMTP" {
			t.Errorf("banner %q", banner)
		}
		ehlo := c.Cmd("EHLO client.test", 250)
		for _, want := range []string{"mx.test", "SIZE 10240000", "STARTTLS", "PIPELINING", "8BITMIME", "SMTPUTF8",
			"CHUNKING", "DSN", "ENHANCEDSTATUSCODES"} {
			if !strings.Contains(ehlo, want) {
				t.Errorf("EHLO lacks %s:\n%s", want, ehlo)
			}
		}
		if strings.Contains(ehlo, "AUTH") {
			t.Errorf("EHLO offers AUTH on port 25:\n%s", ehlo)
		}
	})
	t.Run("SIZE", func(t *testing.T) {
		c := mx.dial(t)
		c.Cmd("EHLO client.test", 250)
		if text := c.Cmd(fmt.Sprintf("MAIL FROM:<a@example.test> SIZE=%d", maxMessageSize+1), 552); !strings.HasPrefix(text, "5.3.4") {
			t.Errorf("SIZE over the limit: %q", text)
		}
	})
	t.Run("errors", func(t *testing.T) {
		c := mx.dial(t)
		for range maxErrors {
			c.Cmd("BOGUS", 500)
		}
		c.Cmd("BOGUS", 421)
		c.ExpectClosed()
	})
	t.Run("junk", func(t *testing.T) {
		c := mx.dial(t)
		c.Send(strings.Repeat("NOOP\r\n", maxJunk+1)) // PIPELINING
		for range maxJunk {
			c.Expect(250)
		}
		c.Expect(421)
		c.ExpectClosed()
	})
	t.Run("recipients", func(t *testing.T) {
		c := mx.dial(t)
		c.Cmd("EHLO client.test", 250)
		c.Cmd("MAIL FROM:<a@example.test>", 250)
		var b strings.Builder
		for i := range maxRecipients + 1 {
			fmt.Fprintf(&b, "RCPT TO:<r%d@dest.test>\r\n", i)
		}
		c.Send(b.String())
		for range maxRecipients {
			c.Expect(250)
		}
		c.Expect(452)
	})
}

// TestLimitPerClient: the 51st connection of one client address gets 421.
func TestLimitPerClient(t *testing.T) {
	mx := startMX(t)
	for range maxPerIP {
		mx.dial(t)
	}
	c := (&smtptest.Server{Addr: mx.Addr}).Dial(t)
	c.Expect(421)
}

// TestLimitDataRate: a client that stops sending in the middle of DATA is cut
// with 421 by the data rate (after its 2 s grace), long before the 5-minute
// command timeout.
func TestLimitDataRate(t *testing.T) {
	t.Parallel()
	mx := startMX(t)
	c := mx.dial(t)
	c.Timeout = 20 * time.Second
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<a@example.test>", 250)
	c.Cmd("RCPT TO:<b@dest.test>", 250)
	c.Cmd("DATA", 354)
	start := time.Now()
	c.Send("Subject: slow\r\n\r\n")
	c.Expect(421)
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("cut after %s", d)
	}
}
