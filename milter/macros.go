package milter

import (
	"crypto/tls"
	"net/netip"
	"strconv"
	"strings"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
)

// The macros sent at each stage, unless a milter asks for its own lists when it
// negotiates (then go-milter sends those lists only). They are Postfix's defaults
// (milter_connect_macros and the others), with the client's own macros added at
// connect, which Postfix has (MILTER_README, "Sendmail macro emulation") but does
// not send unless configured: {client_addr}, {client_port}, {client_name},
// {client_ptr}, {client_resolve} and {daemon_port}.
var stageMacros = [...]struct {
	stage gomilter.MacroStage
	names []gomilter.MacroName
}{
	{gomilter.StageConnect, []string{"j", "{daemon_name}", "{daemon_addr}", "v", "_",
		"{client_addr}", "{client_port}", "{client_name}", "{client_ptr}", "{client_resolve}", "{daemon_port}"}},
	{gomilter.StageHelo, []string{"{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}"}},
	{gomilter.StageMail, []string{"i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}", "{mail_host}", "{mail_mailer}"}},
	{gomilter.StageRcpt, []string{"i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"}},
	{gomilter.StageData, []string{"i"}},
	{gomilter.StageEOH, []string{"i"}},
	{gomilter.StageEOM, []string{"i"}},
}

// macros holds the values of the macros of one SMTP session, as go-milter's
// Macros interface reads them. Values are set on the session goroutine at each
// event, before the milters are called, and only read while they are called (on
// the same goroutine, or on the stream hook's while the session waits for it), so
// it needs no lock.
type macros struct {
	v map[string]string
}

// GetEx returns a macro's value; ok is false when it has none (it is not sent).
func (m *macros) GetEx(name gomilter.MacroName) (string, bool) {
	v, ok := m.v[name]
	return v, ok
}

// Get returns a macro's value, "" when it has none.
func (m *macros) Get(name gomilter.MacroName) string { return m.v[name] }

func (m *macros) set(name, value string) { m.v[name] = value }

// setOrDelete sets a value, or removes the macro when the value is empty.
func (m *macros) setOrDelete(name, value string) {
	if value == "" {
		delete(m.v, name)
		return
	}
	m.v[name] = value
}

// connect sets the macros of the connection: the server's and the client's
// (the real client behind PROXY or XCLIENT: the session's Remote fields).
func (m *macros) connect(s *smtpd.Session, c *Config) {
	m.v = make(map[string]string, 24)
	m.set("j", c.Hostname)
	m.set("{daemon_name}", c.DaemonName)
	m.set("v", c.MTAVersion)
	m.set("{daemon_addr}", s.LocalIP)
	m.set("{daemon_port}", strconv.Itoa(s.LocalPort))
	m.client(s)
}

// client sets the client's macros from the session.
func (m *macros) client(s *smtpd.Session) {
	name, resolved := clientName(s)
	m.set("{client_addr}", rfcAddr(s.RemoteIP))
	m.set("{client_port}", strconv.Itoa(s.RemotePort))
	m.set("{client_name}", name)
	m.set("{client_ptr}", name)
	m.set("{client_resolve}", map[bool]string{true: "OK", false: "FAIL"}[resolved])
	m.set("_", name+" ["+s.RemoteIP+"]")
}

// clientName is Postfix's client name: the host name, or "unknown" when the
// session has none (RemoteHost is the address itself).
func clientName(s *smtpd.Session) (string, bool) {
	if s.RemoteHost == "" || s.RemoteHost == s.RemoteIP {
		return "unknown", false
	}
	return s.RemoteHost, true
}

// rfcAddr is Postfix's {client_addr}: an IPv6 address gets RFC 5321's "IPv6:".
func rfcAddr(ip string) string {
	if a, err := netip.ParseAddr(ip); err == nil && a.Is6() && !a.Is4In6() {
		return "IPv6:" + ip
	}
	return ip
}

// helo sets the TLS macros (Postfix sends them with HELO/EHLO).
func (m *macros) helo(s *smtpd.Session) {
	for _, k := range []string{"{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}"} {
		delete(m.v, k)
	}
	cs, ok := s.TLSState()
	if !ok {
		return
	}
	m.set("{tls_version}", tlsVersion(cs.Version))
	m.set("{cipher}", tls.CipherSuiteName(cs.CipherSuite))
	m.setOrDelete("{cipher_bits}", cipherBits(tls.CipherSuiteName(cs.CipherSuite)))
	if len(cs.VerifiedChains) > 0 && len(cs.PeerCertificates) > 0 { // Postfix: only a trusted certificate
		m.setOrDelete("{cert_subject}", cs.PeerCertificates[0].Subject.CommonName)
		m.setOrDelete("{cert_issuer}", cs.PeerCertificates[0].Issuer.CommonName)
	}
}

// tlsVersion names a TLS version as OpenSSL (and so Postfix) does: "TLSv1.3".
func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return tls.VersionName(v)
}

// cipherBits is the symmetric key size of a cipher suite, from its name.
func cipherBits(suite string) string {
	switch {
	case strings.Contains(suite, "_128_"):
		return "128"
	case strings.Contains(suite, "_256_"), strings.Contains(suite, "CHACHA20"):
		return "256"
	case strings.Contains(suite, "3DES"):
		return "112"
	}
	return ""
}

// mail sets the macros of a transaction at MAIL FROM. The message has no ID
// yet (macro i): as Postfix, whose queue file opens once a recipient is
// accepted (smtpd_delay_open_until_valid_rcpt), it comes with queued.
func (m *macros) mail(s *smtpd.Session, from string) {
	delete(m.v, "i")
	m.setOrDelete("{auth_type}", s.AuthMechanism)
	m.setOrDelete("{auth_authen}", s.AuthenticationID)
	m.set("{mail_addr}", from)
	m.setOrDelete("{mail_host}", domainOf(from))
	m.setOrDelete("{mail_mailer}", mailer(from))
	m.rcpt("")
}

// queued sets macro i, the message's ID, once a recipient was accepted.
func (m *macros) queued(s *smtpd.Session) { m.setOrDelete("i", s.Message.ID) }

// rcpt sets the macros of one RCPT TO ("" clears them).
func (m *macros) rcpt(to string) {
	if to == "" {
		delete(m.v, "{rcpt_addr}")
		delete(m.v, "{rcpt_host}")
		delete(m.v, "{rcpt_mailer}")
		return
	}
	m.set("{rcpt_addr}", to)
	m.setOrDelete("{rcpt_host}", domainOf(to))
	m.set("{rcpt_mailer}", mailer(to))
}

// rejectedRcpt sets the macros of a recipient the program refused, for milters
// that ask for refused recipients (Postfix: {rcpt_mailer} "error", {rcpt_host}
// the enhanced status code, {rcpt_addr} the reply text).
func (m *macros) rejectedRcpt(r *smtpd.SMTPError) {
	m.set("{rcpt_mailer}", "error")
	enh := r.EnhancedCode
	if enh == "" {
		enh = strconv.Itoa(r.Code/100) + ".0.0"
	}
	m.set("{rcpt_host}", enh)
	m.set("{rcpt_addr}", r.Message)
}

// endMail clears the macros of a transaction.
func (m *macros) endMail() {
	for _, k := range []string{"i", "{mail_addr}", "{mail_host}", "{mail_mailer}"} {
		delete(m.v, k)
	}
	m.rcpt("")
}

// domainOf is the domain of an address ("" for <> or a bare local part).
func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return ""
}

// mailer is the delivery agent a Postfix MTA names for an address: "smtp" for an
// address with a domain, "local" for a bare local part, "" (no macro) for <>.
// This server does not route mail, so it is a guess that milters only log.
func mailer(addr string) string {
	switch {
	case addr == "":
		return ""
	case strings.Contains(addr, "@"):
		return "smtp"
	}
	return "local"
}
