package smtpd

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/midismtp/smtpd/internal/certs"
	"github.com/midismtp/smtpd/internal/hostport"
)

// Cipher suite presets for Server.TLSCipherSuites: MidiSmtpServer's OpenSSL cipher
// strings (after the OWASP cheat sheet) in crypto/tls suite IDs, strongest first.
// They choose TLS 1.2 suites only: TLS 1.3 is always on with Go's own suites, and TLS
// 1.2 is the minimum version. The README lists which OpenSSL name maps to which suite
// and the ones Go does not offer.
var (
	// TLSCiphersAdvancedPlus is "Advanced+ (A+)", the default: ECDHE with AES-GCM and ChaCha20.
	TLSCiphersAdvancedPlus = certs.AdvancedPlus
	// TLSCiphersAdvanced is "Advanced (A)".
	TLSCiphersAdvanced = certs.Advanced
	// TLSCiphersBroadCompatibility is "Broad Compatibility (B)".
	TLSCiphersBroadCompatibility = certs.BroadCompatibility
	// TLSCiphersWidestCompatibility is "Widest Compatibility (C)".
	TLSCiphersWidestCompatibility = certs.WidestCompatibility
	// TLSCiphersLegacy is "Legacy (C-)": it includes suites Go considers insecure.
	TLSCiphersLegacy = certs.Legacy
)

var errStartTLSSyntax = fmt.Errorf("STARTTLS takes no parameter: %w", SMTPError501)

// setupTLS makes the active TLS configuration, once: TLSConfig as given, else the
// certificate files, else a self-signed certificate for the hosts and bound addresses.
func (srv *Server) setupTLS(addrs []hostport.Addr, bound []boundListener) error {
	if srv.cfg.tlsMode == TLSForbidden {
		return nil
	}
	srv.tlsMu.Lock()
	defer srv.tlsMu.Unlock()
	if srv.activeTLS != nil {
		return nil
	}
	if srv.TLSConfig != nil {
		srv.activeTLS = srv.TLSConfig
		return nil
	}
	var cert tls.Certificate
	var err error
	if srv.TLSCertPath != "" {
		cert, err = certs.Load(srv.TLSCertPath, srv.TLSKeyPath)
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
		cn, san := certs.Names(srv.TLSCertCN, srv.TLSCertSAN, hosts, ips)
		cert, err = certs.SelfSigned(cn, san, time.Now())
		if err == nil {
			srv.cfg.logger.Info("using a self-signed certificate", "cn", cn, "san", san)
		}
	}
	if err != nil {
		return fmt.Errorf("smtpd: TLS certificate: %w", err)
	}
	srv.activeTLS = certs.Config(cert, srv.TLSCipherSuites)
	return nil
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
	s.reply(220, "Ready to start TLS")
	if s.flush() != nil {
		return nil
	}
	if n := s.r.discardBuffered(); n > 0 {
		s.logger.Warn("discarded plaintext sent after STARTTLS (command injection?)", "bytes", n)
	}
	if !s.handshake() {
		return nil
	}
	s.Helo = ""
	s.AuthorizationID, s.AuthenticationID, s.AuthenticatedAt = "", "", time.Time{}
	s.resetTransaction()
	s.state = stateGreet
	return nil
}

// handshake turns the connection into TLS within IOCmdTimeout. On failure the
// session ends (nothing can be answered).
func (s *Session) handshake() bool {
	tc := tls.Server(s.raw, s.srv.ActiveTLSConfig())
	if s.cfg.timeout > 0 {
		s.raw.SetDeadline(time.Now().Add(s.cfg.timeout))
	}
	if err := tc.HandshakeContext(s.ctx); err != nil {
		s.logger.Info("TLS handshake failed; closing", "err", err)
		s.quit = true
		return false
	}
	s.raw.SetDeadline(time.Time{})
	s.wmu.Lock()
	s.conn = tc
	s.wmu.Unlock()
	s.r.br.Reset(tc)
	s.w.Reset(tc)
	st := tc.ConnectionState()
	s.tlsState = &st
	s.EncryptedAt = time.Now().UTC()
	s.logger.Debug("TLS on", "version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
	return true
}
