package smtptest

import (
	"net"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/internal/certs"
)

// giveTestCertificate gives a server that turns TLS on without a certificate
// (no TLSConfig, no TLSCertPath) the self-signed certificate the library would
// make for it, through TLSConfig: the same names (TLSCertCN and TLSCertSAN, else
// localhost.local and 127.0.0.1) and the same settings (TLSCipherSuites, TLS 1.2
// at least). The server then does not log the warning that a self-signed
// certificate is in use: a real program needs it, a test does not.
func giveTestCertificate(s *smtpd.Server) error {
	if s.TLSMode == smtpd.TLSForbidden || s.TLSConfig != nil || s.TLSCertPath != "" || s.TLSKeyPath != "" {
		return nil
	}
	cn, san := certs.Names(s.TLSCertCN, s.TLSCertSAN, nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	cert, err := certs.SelfSigned(cn, san, time.Now())
	if err != nil {
		return err
	}
	s.TLSConfig = certs.Config(cert, s.TLSCipherSuites)
	return nil
}
