package smtpd_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// mechHandler checks every kind of credential: the password "secret", the token
// "good-token", a client certificate whose subject is "alice".
type mechHandler struct {
	smtptest.Recorder
	tokens    []smtpd.AuthToken
	externals []string
}

func (h *mechHandler) OnAuth(_ *smtpd.Session, _, user, pass string) (string, error) {
	if pass != "secret" {
		return "", smtpd.SMTPError535
	}
	return "", nil
}

func (h *mechHandler) OnAuthToken(_ *smtpd.Session, t smtpd.AuthToken) (string, error) {
	h.tokens = append(h.tokens, t)
	if t.Token != "good-token" {
		return "", smtpd.SMTPError535
	}
	return "", nil
}

func (h *mechHandler) OnAuthExternal(s *smtpd.Session, authzID string) (string, error) {
	st, _ := s.TLSState()
	h.externals = append(h.externals, authzID)
	if len(st.VerifiedChains) == 0 || st.PeerCertificates[0].Subject.CommonName != "alice" {
		return "", smtpd.SMTPError535
	}
	if authzID != "" && authzID != "alice" {
		return "", smtpd.SMTPError535
	}
	return "alice@example.org", nil
}

func b64s(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// mechServer is a server with STARTTLS and the given mechanisms, and a client
// after STARTTLS and EHLO; clientCert, when set, is presented in the handshake.
func mechServer(t *testing.T, h *mechHandler, mechs []string, opts ...func(*smtpd.Server)) (*smtptest.Server, *smtptest.Conn, []string) {
	t.Helper()
	ts := smtptest.NewServer(t, h, append([]func(*smtpd.Server){func(s *smtpd.Server) {
		s.TLSMode = smtpd.TLSOptional
		s.AuthMode = smtpd.AuthOptional
		s.AuthMechanisms = mechs
	}}, opts...)...)
	c := ts.DialGreeted(t)
	c.Cmd("EHLO client.example", 250)
	return ts, c, nil
}

func ehloAuthLine(t *testing.T, c *smtptest.Conn) string {
	t.Helper()
	for _, l := range strings.Split(c.Cmd("EHLO client.example", 250), "\n") {
		if strings.HasPrefix(l, "AUTH") {
			return l
		}
	}
	return ""
}

func TestAuthMechanismsOffered(t *testing.T) {
	for _, tc := range []struct {
		mechs []string
		want  string
	}{
		{nil, "AUTH LOGIN PLAIN"},
		{[]string{"plain"}, "AUTH PLAIN"},
		{[]string{"XOAUTH2", "OAUTHBEARER", "PLAIN"}, "AUTH XOAUTH2 OAUTHBEARER PLAIN"},
		{[]string{"EXTERNAL", "PLAIN"}, "AUTH PLAIN"}, // EXTERNAL: only with a client certificate
	} {
		_, c, _ := mechServer(t, &mechHandler{}, tc.mechs, func(s *smtpd.Server) { s.TLSClientAuth = tls.RequestClientCert })
		c.StartTLS(nil)
		require.Equal(t, tc.want, ehloAuthLine(t, c), "%v", tc.mechs)
		if !strings.Contains(tc.want, "LOGIN") {
			c.Cmd("AUTH LOGIN", 504) // not offered
		}
	}
}

func TestAuthMechanismsRefusedAtStart(t *testing.T) {
	for _, tc := range []struct {
		h          smtpd.Handler
		mechs      []string
		clientAuth tls.ClientAuthType
		want       string
	}{
		{&mechHandler{}, []string{"CRAM-MD5"}, 0, "unknown mechanism"},
		{&mechHandler{}, []string{"PLAIN", "plain"}, 0, "twice"},
		{&smtpd.BaseHandler{}, []string{"XOAUTH2"}, 0, "no OnAuthToken"},
		{&smtpd.BaseHandler{}, []string{"EXTERNAL"}, tls.RequestClientCert, "no OnAuthExternal"},
		{&mechHandler{}, []string{"EXTERNAL"}, 0, "TLSClientAuth"},
		{&mechHandler{}, []string{}, 0, "empty"},
	} {
		srv := &smtpd.Server{Handler: tc.h, Ports: "0", AuthMode: smtpd.AuthOptional, TLSMode: smtpd.TLSOptional,
			AuthMechanisms: tc.mechs, TLSClientAuth: tc.clientAuth}
		err := srv.Start()
		require.ErrorContains(t, err, tc.want)
	}
}

func TestAuthXOAuth2(t *testing.T) {
	h := &mechHandler{}
	_, c, _ := mechServer(t, h, []string{"XOAUTH2"})
	c.StartTLS(nil)
	c.Cmd("EHLO client.example", 250)
	// A refused token gets the error challenge, then 535.
	text := c.Cmd("AUTH XOAUTH2 "+b64s("user=bob@example.org\x01auth=Bearer bad-token\x01\x01"), 334)
	raw, err := base64.StdEncoding.DecodeString(text)
	require.NoError(t, err)
	var status map[string]string
	require.NoError(t, json.Unmarshal(raw, &status))
	require.Equal(t, "401", status["status"])
	c.Cmd("", 535)
	// Without an initial response, then accepted.
	c.Cmd("AUTH XOAUTH2", 334)
	c.Cmd(b64s("user=bob@example.org\x01auth=Bearer good-token\x01\x01"), 235)
	c.Cmd("MAIL FROM:<bob@example.org>", 250)
	require.Equal(t, []smtpd.AuthToken{
		{Mechanism: "XOAUTH2", User: "bob@example.org", Token: "bad-token"},
		{Mechanism: "XOAUTH2", User: "bob@example.org", Token: "good-token"},
	}, h.tokens)
	c.Cmd("RCPT TO:<x@example.org>", 250)
	c.Cmd("DATA", 354)
	c.Send("\r\n.\r\n")
	c.Expect(250)
	m := h.Messages()[0]
	require.Equal(t, "bob@example.org", m.AuthenticationID)
	require.Equal(t, "bob@example.org", m.AuthorizationID)
}

func TestAuthXOAuth2Malformed(t *testing.T) {
	_, c, _ := mechServer(t, &mechHandler{}, []string{"XOAUTH2"})
	c.StartTLS(nil)
	c.Cmd("EHLO client.example", 250)
	for _, resp := range []string{"user=bob", "auth=Bearer x\x01\x01", "user=a\x01auth=Basic x\x01\x01", "garbage"} {
		c.Cmd("AUTH XOAUTH2 "+b64s(resp), 501)
	}
}

func TestAuthOAuthBearer(t *testing.T) {
	h := &mechHandler{}
	_, c, _ := mechServer(t, h, []string{"OAUTHBEARER"})
	c.StartTLS(nil)
	c.Cmd("EHLO client.example", 250)
	bad := "n,a=carol@example.org,\x01host=mx.example.org\x01port=587\x01auth=Bearer bad-token\x01\x01"
	c.Cmd("AUTH OAUTHBEARER "+b64s(bad), 334) // the RFC 7628 3.2.2 error challenge
	c.Cmd(b64s("\x01"), 535)
	good := "n,a=carol@example.org,\x01auth=Bearer good-token\x01\x01"
	c.Cmd("AUTH OAUTHBEARER "+b64s(good), 235)
	require.Equal(t, smtpd.AuthToken{Mechanism: "OAUTHBEARER", User: "carol@example.org", Token: "bad-token",
		Host: "mx.example.org", Port: 587}, h.tokens[0])
}

// TestAuthCancelAfterRefusalCounts: cancelling ("*") after the error challenge of
// a refused token does not escape the failure's count.
func TestAuthCancelAfterRefusalCounts(t *testing.T) {
	ts, c, _ := mechServer(t, &mechHandler{}, []string{"OAUTHBEARER"})
	c.StartTLS(nil)
	c.Cmd("EHLO client.example", 250)
	bad := "n,,\x01auth=Bearer bad-token\x01\x01"
	c.Cmd("AUTH OAUTHBEARER "+b64s(bad), 334)
	c.Cmd("*", 535)
	require.EqualValues(t, 1, ts.Server.Stats().AuthFailures)
}

// clientCA makes a CA and a client certificate for subject, signed by it.
func clientCA(t *testing.T, subject string) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: subject},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestAuthExternal(t *testing.T) {
	pool, alice := clientCA(t, "alice")
	_, mallory := clientCA(t, "alice") // same name, another CA: not verified
	for _, tc := range []struct {
		name       string
		clientAuth tls.ClientAuthType
		cert       *tls.Certificate
		auth       string
		want       int
	}{
		{"verified, no authzid", tls.VerifyClientCertIfGiven, &alice, "AUTH EXTERNAL =", 235},
		{"verified, own authzid", tls.VerifyClientCertIfGiven, &alice, "AUTH EXTERNAL " + b64s("alice"), 235},
		{"verified, another authzid", tls.VerifyClientCertIfGiven, &alice, "AUTH EXTERNAL " + b64s("bob"), 535},
		{"unverified certificate", tls.RequestClientCert, &mallory, "AUTH EXTERNAL =", 535},
		{"no certificate: not offered", tls.VerifyClientCertIfGiven, nil, "AUTH EXTERNAL =", 504},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &mechHandler{}
			ts, c, _ := mechServer(t, h, []string{"EXTERNAL", "PLAIN"}, func(s *smtpd.Server) {
				s.TLSClientAuth = tc.clientAuth
				s.TLSClientCAs = pool
			})
			cfg := ts.ClientTLSConfig()
			if tc.cert != nil {
				cfg.Certificates = []tls.Certificate{*tc.cert}
			}
			c.StartTLS(cfg)
			line := ehloAuthLine(t, c)
			require.Equal(t, tc.cert != nil, strings.Contains(line, "EXTERNAL"), line)
			c.Cmd(tc.auth, tc.want)
			if tc.want == 235 {
				c.Cmd("MAIL FROM:<alice@example.org>", 250)
				c.Cmd("RCPT TO:<x@example.org>", 250)
				c.Cmd("DATA", 354)
				c.Send("\r\n.\r\n")
				c.Expect(250)
				m := h.Messages()[0]
				require.Equal(t, "alice", m.AuthenticationID)
				require.Equal(t, "alice@example.org", m.AuthorizationID)
			}
		})
	}
}

func TestRequireTLS(t *testing.T) {
	rec := &smtptest.Recorder{}
	ts := smtptest.NewServer(t, rec, func(s *smtpd.Server) {
		s.TLSMode = smtpd.TLSOptional
		s.RequireTLS = true
	})
	c := ts.DialGreeted(t)
	require.NotContains(t, c.Cmd("EHLO client.example", 250), "REQUIRETLS", "advertised only over TLS")
	require.Equal(t, "5.7.10 REQUIRETLS needs an encrypted connection", "5.7.10 "+c.Cmd("MAIL FROM:<a@example.org> REQUIRETLS", 530))
	c.StartTLS(nil)
	require.Contains(t, c.Cmd("EHLO client.example", 250), "REQUIRETLS")
	c.Cmd("MAIL FROM:<a@example.org> REQUIRETLS=yes", 501)
	c.Cmd("MAIL FROM:<a@example.org> REQUIRETLS", 250)
	c.Cmd("RCPT TO:<b@example.org>", 250)
	c.Cmd("DATA", 354)
	c.Send("Subject: x\r\n\r\n.\r\n")
	c.Expect(250)
	require.True(t, rec.Messages()[0].RequireTLS)

	off := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.TLSMode = smtpd.TLSOptional })
	c = off.DialGreeted(t)
	c.Cmd("EHLO client.example", 250)
	c.StartTLS(nil)
	require.NotContains(t, c.Cmd("EHLO client.example", 250), "REQUIRETLS")
	c.Cmd("MAIL FROM:<a@example.org> REQUIRETLS", 555)
}

// TestTLSRequiredNoHeader: the "TLS-Required: No" field (RFC 8689 5) is found in
// the header section however it is written, never in the body; by DATA and BDAT.
func TestTLSRequiredNoHeader(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		want      bool
	}{
		{"plain", "TLS-Required: No\r\nSubject: x\r\n\r\nbody\r\n", true},
		{"any case, space before the colon", "Subject: x\r\ntls-required : no\r\n\r\nbody\r\n", true},
		{"folded", "TLS-Required:\r\n No\r\n\r\nbody\r\n", true},
		{"other value", "TLS-Required: Yes\r\n\r\nbody\r\n", false},
		{"no field", "Subject: x\r\n\r\nbody\r\n", false},
		{"in the body", "Subject: x\r\n\r\nTLS-Required: No\r\n", false},
		{"a longer name", "TLS-Required-X: No\r\n\r\n", false},
	} {
		for _, bdat := range []bool{false, true} {
			rec := &smtptest.Recorder{}
			ts := smtptest.NewServer(t, rec, func(s *smtpd.Server) { s.Chunking = true })
			c := ts.DialGreeted(t)
			c.Cmd("EHLO client.example", 250)
			c.Cmd("MAIL FROM:<a@example.org>", 250)
			c.Cmd("RCPT TO:<b@example.org>", 250)
			if bdat {
				half := len(tc.msg) / 2
				c.Send("BDAT " + itoa(half) + "\r\n" + tc.msg[:half])
				c.Expect(250)
				c.Send("BDAT " + itoa(len(tc.msg)-half) + " LAST\r\n" + tc.msg[half:])
			} else {
				c.Cmd("DATA", 354)
				c.Send(tc.msg + ".\r\n")
			}
			c.Expect(250)
			require.Equal(t, tc.want, rec.Messages()[0].TLSRequiredNo, "%s (BDAT %v)", tc.name, bdat)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
