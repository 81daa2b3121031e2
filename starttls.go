package smtpd

import (
	"crypto/tls"
	"time"
)

// This file is STARTTLS (RFC 3207) and the TLS handshake of every connection that
// turns to TLS: after STARTTLS, on an implicit-TLS port (RFC 8314), and from a TLS
// listener given to Serve.

// cmdStartTLS: RFC 3207 4. Plaintext the client sent after the command is
// discarded, never executed (4.2's injection: CVE-2011-0411); every piece of
// session state learned before TLS is forgotten (4.2: "The server MUST discard any
// knowledge obtained from the client ... which was not obtained from the TLS
// negotiation itself").
func (c *conn) cmdStartTLS(args string) error {
	switch {
	case args != "":
		return SMTPError501
	case c.cfg.tlsMode == TLSForbidden:
		return SMTPError500
	case c.s.IsEncrypted() || c.phase == phaseGreet:
		return SMTPError503
	}
	c.send(replyStartTLS)
	if c.flush() != nil {
		return nil
	}
	if n := c.r.discardBuffered(); n > 0 {
		c.log().Warn("discarded plaintext sent after STARTTLS (command injection?)", "bytes", n)
	}
	if !c.handshake() {
		return nil
	}
	c.s.Helo, c.xclientHelo = "", false
	c.s.AuthorizationID, c.s.AuthenticationID, c.s.AuthenticatedAt, c.s.AuthMechanism = "", "", time.Time{}, ""
	c.resetTransaction()
	c.phase = phaseGreet
	return nil
}

// handshake turns the connection into TLS within IOCmdTimeout (shorter in stress
// mode). Close during it writes nothing and closes the connection, which ends it.
// On failure the session ends: nothing can be answered.
func (c *conn) handshake() bool {
	prev := connState(c.state.Load())
	if !c.enter(connHandshake) {
		return false
	}
	tc, _ := c.raw.(*tls.Conn) // from a TLS listener
	if !c.tlsAccepted {
		tc = tls.Server(c.reader(), c.srv.ActiveTLSConfig())
	}
	c.early = nil
	if t := c.timeout(); t > 0 {
		c.raw.SetDeadline(time.Now().Add(t))
	}
	err := tc.HandshakeContext(c.context())
	c.raw.SetDeadline(time.Time{})
	if err != nil {
		c.srv.stats.TLSFailures.Add(1)
		c.log().Info("TLS handshake failed; closing", "err", err)
		c.enter(connClosing)
		return false
	}
	c.srv.stats.TLSHandshakes.Add(1)
	c.wmu.Lock()
	c.nc = tc
	c.s.EncryptedAt = time.Now().UTC() // under wmu: Close's canReply reads it
	c.wmu.Unlock()
	if c.r != nil {
		c.r.reset(tc)
	}
	if c.w != nil {
		c.w.Reset(tc)
	}
	st := tc.ConnectionState()
	c.tlsState = &st
	c.log().Debug("TLS on", "version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
	return c.enter(prev) // false when Close came meanwhile
}
