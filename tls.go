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
		srv.activeTLS = withClientAuth(c.tlsConfig, c)
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
	srv.activeTLS = withClientAuth(certs.Config(cert, c.cipherSuites), c)
	return nil
}

// withClientAuth applies TLSClientAuth and TLSClientCAs to a copy of cfg; without
// them, cfg is used as given (so GetCertificate-based reloading works).
func withClientAuth(cfg *tls.Config, c *config) *tls.Config {
	if c.clientAuth == tls.NoClientCert && c.clientCAs == nil {
		return cfg
	}
	cfg = cfg.Clone()
	cfg.ClientAuth = c.clientAuth
	if c.clientCAs != nil {
		cfg.ClientCAs = c.clientCAs
	}
	return cfg
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
