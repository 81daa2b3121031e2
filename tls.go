package smtpd

import (
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/midismtp/smtpd/internal/certs"
	"github.com/midismtp/smtpd/internal/hostport"
)

// Cipher suite presets for Server.TLSCipherSuites: MidiSmtpServer's OpenSSL cipher
// strings (after the OWASP cheat sheet) in crypto/tls suite IDs, strongest first.
// Each is a copy: changing one changes no default and no other server. They choose
// TLS 1.2 suites only: TLS 1.3 is always on with Go's own suites, and TLS
// 1.2 is the minimum version. docs/midi-smtp-server.md lists which OpenSSL name maps to which suite
// and the ones Go does not offer.
var (
	// TLSCiphersAdvancedPlus is "Advanced+ (A+)", the default: ECDHE with AES-GCM.
	TLSCiphersAdvancedPlus = slices.Clone(certs.AdvancedPlus)
	// TLSCiphersAdvanced is "Advanced (A)".
	TLSCiphersAdvanced = slices.Clone(certs.Advanced)
	// TLSCiphersBroadCompatibility is "Broad Compatibility (B)".
	TLSCiphersBroadCompatibility = slices.Clone(certs.BroadCompatibility)
	// TLSCiphersWidestCompatibility is "Widest Compatibility (C)".
	TLSCiphersWidestCompatibility = slices.Clone(certs.WidestCompatibility)
	// TLSCiphersLegacy is "Legacy (C-)": it includes suites Go considers insecure.
	TLSCiphersLegacy = slices.Clone(certs.Legacy)
)

// setupTLS makes the active TLS configuration, once: TLSConfig as given, else the
// certificate files, else a self-signed certificate for the hosts and bound addresses.
func (srv *Server) setupTLS(addrs []hostport.Addr, bound []boundListener) error {
	c := &srv.cfg
	if c.tlsMode == TLSForbidden {
		if c.authMode != AuthForbidden {
			srv.warnOnce.Do(func() {
				c.logger.Warn("AUTH with TLS forbidden: passwords cross the network in plaintext")
			})
		}
		return nil
	}
	srv.tlsMu.Lock()
	defer srv.tlsMu.Unlock()
	if srv.activeTLS != nil {
		return nil
	}
	if c.tlsConfig != nil {
		srv.activeTLS = c.tlsConfig
		return nil
	}
	var cert tls.Certificate
	var err error
	if c.certPath != "" {
		cert, err = certs.Load(c.certPath, c.keyPath)
	} else {
		var hosts []string
		for _, a := range addrs {
			hosts = append(hosts, a.Host)
		}
		var ips []net.IP
		for _, l := range bound {
			if t, ok := l.Addr().(*net.TCPAddr); ok {
				ips = append(ips, t.IP)
			}
		}
		cn, san := certs.Names(c.certCN, c.certSAN, hosts, ips)
		cert, err = certs.SelfSigned(cn, san, time.Now())
		if err == nil {
			srv.cfg.logger.Warn("no certificate given: using a self-signed one, which clients that verify will refuse",
				"cn", cn, "san", certSANs(cert))
		}
	}
	if err != nil {
		return fmt.Errorf("smtpd: TLS certificate: %w", err)
	}
	srv.activeTLS = certs.Config(cert, c.cipherSuites)
	return nil
}

// certSANs lists the subject alternative names of cert's leaf, as they are in it.
func certSANs(cert tls.Certificate) []string {
	if cert.Leaf == nil {
		return nil
	}
	names := slices.Clone(cert.Leaf.DNSNames)
	for _, ip := range cert.Leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

// cmdStartTLS answers STARTTLS and runs the handshake (RFC 3207). Plaintext the client
// sent after the command is discarded, never executed; every piece of session state
// learned before TLS is forgotten.
func (s *Session) cmdStartTLS(args string) error {
	switch {
	case args != "":
		return errStartTLSSyntax
	case s.cfg.tlsMode == TLSForbidden:
		return SMTPError500
	case s.IsEncrypted() || s.state == stateGreet:
		return SMTPError503
	}
	s.send(replyStartTLS)
	if s.flush() != nil {
		return nil
	}
	if n := s.r.discardBuffered(); n > 0 {
		s.log().Warn("discarded plaintext sent after STARTTLS (command injection?)", "bytes", n)
	}
	if !s.handshake() {
		return nil
	}
	s.Helo, s.xclientHelo = "", false
	s.AuthorizationID, s.AuthenticationID, s.AuthenticatedAt, s.AuthMechanism = "", "", time.Time{}, ""
	s.abandonTransaction()
	s.state = stateGreet
	return nil
}

// handshake turns the connection into TLS within IOCmdTimeout. On failure the
// session ends (nothing can be answered).
func (s *Session) handshake() bool {
	tc := tls.Server(s.reader(), s.srv.ActiveTLSConfig())
	s.early = nil
	s.wmu.Lock()
	s.tlsBusy = true // Close sends no plaintext 421 into a handshake
	s.wmu.Unlock()
	if t := s.timeout(); t > 0 {
		s.raw.SetDeadline(time.Now().Add(t))
	}
	if err := tc.HandshakeContext(s.ctx); err != nil {
		s.srv.stats.TLSFailures.Add(1)
		s.log().Info("TLS handshake failed; closing", "err", err)
		s.quit = true
		return false
	}
	s.srv.stats.TLSHandshakes.Add(1)
	s.raw.SetDeadline(time.Time{})
	s.wmu.Lock()
	s.conn = tc
	s.EncryptedAt = time.Now().UTC() // under wmu: Close's canReply reads it
	s.tlsBusy = false
	s.wmu.Unlock()
	s.r.reset(tc)
	if s.w != nil {
		s.w.Reset(tc)
	}
	st := tc.ConnectionState()
	s.tlsState = &st
	s.log().Debug("TLS on", "version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
	return true
}
