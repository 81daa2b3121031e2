package smtpd

import "strings"

// This file is the greeting: HELO, EHLO and LMTP's LHLO (RFC 5321 4.1.1.1, RFC 2033
// 4.1), and the EHLO keyword list.

// cmdEhlo runs EHLO, and LHLO in LMTP.
func (c *conn) cmdEhlo(domain string) error { return c.greet("EHLO", domain) }

// cmdHelo runs HELO.
func (c *conn) cmdHelo(domain string) error { return c.greet("HELO", domain) }

// greet runs HELO, EHLO and LHLO. RFC 5321 4.1.4: it may come again at any time
// outside DATA and resets the transaction, and then it is a junk command. The
// domain must be at most 255 bytes without control characters.
func (c *conn) greet(verb, domain string) error {
	if !validHelo(domain) {
		return errBadHelo
	}
	if c.phase != phaseGreet && !c.countJunk() {
		return nil
	}
	c.resetTransaction()
	if err := c.h.OnHelo(c.s, domain); err != nil {
		return err
	}
	if !c.xclientHelo {
		c.s.Helo = domain
	}
	c.phase = phaseReady
	if verb == "HELO" {
		c.sendText(250, oneLine("OK "+oneLine(c.s.HeloResponse)))
		return nil
	}
	c.sendText(250, strings.Join(c.ehloLines(), "\n"))
	return nil
}

// validHelo reports whether a HELO/EHLO argument is acceptable: present, at most 255
// bytes (RFC 5321 4.5.3.1.2's domain), no control characters.
func validHelo(domain string) bool {
	return domain != "" && len(domain) <= 255 && !hasControl(domain)
}

// ehloLines is the EHLO reply: the greeting, then the extensions that are on, in
// MidiSmtpServer's order, then the newer ones.
func (c *conn) ehloLines() []string {
	cfg := c.cfg
	lines := []string{oneLine(c.s.HeloResponse)}
	if cfg.i18n {
		lines = append(lines, "8BITMIME", "SMTPUTF8")
	}
	if cfg.pipelining {
		lines = append(lines, "PIPELINING")
	}
	if kw := c.authKeyword(); kw != "" && c.authOffered() {
		lines = append(lines, kw)
	}
	if cfg.tlsMode != TLSForbidden && !c.s.IsEncrypted() {
		lines = append(lines, "STARTTLS")
	}
	lines = append(lines, sizeKeyword(cfg.maxMessage))
	if cfg.enhancedCodes {
		lines = append(lines, "ENHANCEDSTATUSCODES")
	}
	if cfg.chunking {
		lines = append(lines, "CHUNKING", "BINARYMIME")
	}
	if cfg.dsn {
		lines = append(lines, "DSN")
	}
	if cfg.requireTLS && c.s.IsEncrypted() {
		lines = append(lines, "REQUIRETLS") // RFC 8689 4: only over TLS
	}
	if c.xclientOK {
		lines = append(lines, "XCLIENT "+xclientAttrs)
	}
	return append(lines, "OK")
}
