package interop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// Real clients against the AUTH mechanisms of issue 15 — XOAUTH2 and OAUTHBEARER
// with bearer tokens, EXTERNAL with a TLS client certificate — and REQUIRETLS.
// Each test keeps the client's own transcript (curl -v, msmtp --debug, smtplib's
// debug output) and checks the lines that show the mechanism at work.

// authToken is the one bearer token the servers accept, for authUser.
const authToken = "ya29.a0AfH6SMBx-token_for/alice=="

// mechHandler records messages and every token and EXTERNAL call; it accepts
// authToken for authUser, and a verified client certificate named authUser.
type mechHandler struct {
	smtptest.Recorder
	mu        sync.Mutex
	tokens    []smtpd.AuthToken
	externals []string
}

func (h *mechHandler) OnAuthToken(_ *smtpd.Session, t smtpd.AuthToken) (string, error) {
	h.mu.Lock()
	h.tokens = append(h.tokens, t)
	h.mu.Unlock()
	if t.User != authUser || t.Token != authToken {
		return "", smtpd.SMTPError535
	}
	return "", nil
}

func (h *mechHandler) OnAuthExternal(s *smtpd.Session, authzID string) (string, error) {
	h.mu.Lock()
	h.externals = append(h.externals, authzID)
	h.mu.Unlock()
	st, ok := s.TLSState()
	if !ok || len(st.VerifiedChains) == 0 || st.PeerCertificates[0].Subject.CommonName != authUser ||
		authzID != "" && authzID != authUser {
		return "", smtpd.SMTPError535
	}
	return authUser, nil
}

func (h *mechHandler) tokenCalls() []smtpd.AuthToken {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]smtpd.AuthToken(nil), h.tokens...)
}

// mechServe serves h with STARTTLS required, AUTH required and mechs offered.
func mechServe(t *testing.T, h *mechHandler, mechs []string, mods ...func(*smtpd.Server)) (*smtpd.Server, string) {
	t.Helper()
	ts := smtptest.NewServer(t, h, append([]func(*smtpd.Server){func(s *smtpd.Server) {
		s.TLSMode = smtpd.TLSRequired
		s.AuthMode = smtpd.AuthRequired
		s.AuthMechanisms = mechs
	}}, mods...)...)
	return ts.Server, ts.Addr
}

// mechCheckMessage checks the one message, sent after AUTH with mech as user.
func mechCheckMessage(t *testing.T, h *mechHandler, mech string) {
	t.Helper()
	m := h.Wait(t, 1)[0]
	require.Equal(t, clientsMessage, string(m.Data))
	require.True(t, m.Encrypted)
	require.Equal(t, authUser, m.AuthenticationID)
	require.Equal(t, authUser, m.AuthorizationID)
	require.Equal(t, mech, m.AuthMechanism)
}

func TestCurlBearerTokens(t *testing.T) {
	for _, mech := range []string{"XOAUTH2", "OAUTHBEARER"} {
		t.Run(mech, func(t *testing.T) {
			curl := clientsNeed(t, "curl")
			h := &mechHandler{}
			// curl 7.88 takes OAUTHBEARER whenever it is offered: XOAUTH2's run offers no other.
			mechs := map[string][]string{"XOAUTH2": {"PLAIN", "XOAUTH2"}, "OAUTHBEARER": {"PLAIN", "XOAUTH2", "OAUTHBEARER"}}[mech]
			srv, addr := mechServe(t, h, mechs)
			args := append(cliCurlArgs("smtp://"+addr+"/curl.example", "a@example.com", "b@example.com"),
				"--ssl-reqd", "--cacert", clientsCertPEM(t, srv), "--user", authUser+":",
				"--oauth2-bearer", authToken, "--login-options", "AUTH="+mech)
			_, stderr := cliRun(t, clientsMessage, nil, curl, args...)
			stderr = curlProtocol(stderr)
			require.Contains(t, stderr, "< 250-AUTH "+strings.Join(mechs, " ")+"\r\n")
			require.Contains(t, stderr, "> AUTH "+mech+"\r\n< 334 \r\n") // then the response, base64
			require.Contains(t, stderr, "< 235 OK\r\n")
			mechCheckMessage(t, h, mech)
			tok := h.tokenCalls()[0]
			require.Equal(t, smtpd.AuthToken{Mechanism: mech, User: authUser, Token: authToken,
				Host: map[string]string{"OAUTHBEARER": "127.0.0.1"}[mech], Port: mechPort(t, addr, mech)}, tok)
		})
	}
	t.Run("a wrong token is refused", func(t *testing.T) {
		curl := clientsNeed(t, "curl")
		h := &mechHandler{}
		srv, addr := mechServe(t, h, []string{"XOAUTH2"})
		args := append(cliCurlArgs("smtp://"+addr+"/curl.example", "a@example.com", "b@example.com"),
			"--ssl-reqd", "--cacert", clientsCertPEM(t, srv), "--user", authUser+":",
			"--oauth2-bearer", "not-the-token", "--login-options", "AUTH=XOAUTH2")
		out := curlProtocol(cliRunFail(t, clientsMessage, nil, curl, args...))
		// The error challenge, a JSON status: curl gives up there ("Login denied").
		require.Contains(t, out, "< 334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n")
		require.Empty(t, h.Messages())
		require.Eventually(t, func() bool { return srv.Stats().AuthFailures == 1 }, testTimeout, 10*time.Millisecond,
			"a client that leaves after the refusal still counts as a failure")
	})
}

// curlProtocol keeps the SMTP lines of curl's --verbose output ("> " sent, "< "
// received), without its TLS and connection notes.
func curlProtocol(verbose string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(verbose, "\n") {
		if strings.HasPrefix(l, "> ") || strings.HasPrefix(l, "< ") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// mechPort is the port OAUTHBEARER's client names (curl sends the connection's),
// 0 for XOAUTH2, which has none.
func mechPort(t *testing.T, addr, mech string) int {
	if mech != "OAUTHBEARER" {
		return 0
	}
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	var n int
	for _, c := range p {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestMsmtpBearerTokens(t *testing.T) {
	for _, mech := range []string{"xoauth2", "oauthbearer"} {
		t.Run(mech, func(t *testing.T) {
			msmtp := clientsNeed(t, "msmtp")
			h := &mechHandler{}
			srv, addr := mechServe(t, h, []string{"XOAUTH2", "OAUTHBEARER"})
			token := "cat '" + clientsFile(t, "token", authToken) + "'"
			args := append(cliMsmtpArgs(addr), "--debug", "--tls=on", "--tls-starttls=on",
				"--tls-trust-file="+clientsCertPEM(t, srv), "--auth="+mech, "--user="+authUser,
				"--passwordeval="+token, "--from=a@example.com", "--", "b@example.com")
			stdout, stderr := cliRun(t, clientsMessage, nil, msmtp, args...)
			transcript := stdout + stderr
			require.Contains(t, transcript, "--> AUTH "+strings.ToUpper(mech))
			require.Contains(t, transcript, "<-- 235 OK")
			mechCheckMessage(t, h, strings.ToUpper(mech))
			require.Equal(t, authToken, h.tokenCalls()[0].Token)
		})
	}
}

func TestSmtplibBearerTokens(t *testing.T) {
	script := filepath.Join("testdata", "clients", "smtplib_auth.py")
	for _, mech := range []string{"xoauth2", "oauthbearer"} {
		t.Run(mech, func(t *testing.T) {
			python := clientsNeed(t, "python3")
			h := &mechHandler{}
			srv, addr := mechServe(t, h, []string{"OAUTHBEARER", "XOAUTH2"})
			host, port, err := net.SplitHostPort(addr)
			require.NoError(t, err)
			out, transcript := cliRun(t, "", nil, python, script, mech, host, port, clientsCertPEM(t, srv),
				authUser, authToken, "a@example.com", "b@example.com", clientsFile(t, "msg.eml", clientsMessage))
			require.Contains(t, out, "sent")
			require.Contains(t, transcript, "send: 'AUTH "+strings.ToUpper(mech)+" ")
			require.Contains(t, transcript, "reply: retcode (235); Msg: b'OK'")
			mechCheckMessage(t, h, strings.ToUpper(mech))
		})
	}
}

// clientCertificate makes a CA and a client certificate for cn signed by it, as PEM
// files: the CA's, the client's certificate and its key.
func clientCertificate(t *testing.T, cn string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "interop test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	pemOf := func(typ string, b []byte) string { return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})) }
	return clientsFile(t, "ca.pem", pemOf("CERTIFICATE", caDER)),
		clientsFile(t, "client.pem", pemOf("CERTIFICATE", der)),
		clientsFile(t, "client.key", pemOf("PRIVATE KEY", keyDER))
}

func TestCurlExternal(t *testing.T) {
	curl := clientsNeed(t, "curl")
	caFile, certFile, keyFile := clientCertificate(t, authUser)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(mustRead(t, caFile)))
	h := &mechHandler{}
	srv, addr := mechServe(t, h, []string{"EXTERNAL", "PLAIN"}, func(s *smtpd.Server) {
		s.TLSClientAuth = tls.VerifyClientCertIfGiven
		s.TLSClientCAs = pool
	})
	args := append(cliCurlArgs("smtp://"+addr+"/curl.example", "a@example.com", "b@example.com"),
		"--ssl-reqd", "--cacert", clientsCertPEM(t, srv), "--cert", certFile, "--key", keyFile,
		"--user", authUser+":", "--login-options", "AUTH=EXTERNAL")
	_, stderr := cliRun(t, clientsMessage, nil, curl, args...)
	stderr = curlProtocol(stderr)
	require.Contains(t, stderr, "< 250-AUTH EXTERNAL PLAIN\r\n")
	require.Contains(t, stderr, "> AUTH EXTERNAL\r\n< 334 \r\n> YWxpY2U=\r\n< 235 OK\r\n") // authzid "alice"
	mechCheckMessage(t, h, "EXTERNAL")

	t.Run("a certificate of another name is refused", func(t *testing.T) {
		_, certFile, keyFile := clientCertificate(t, "mallory") // signed by another CA: not verified either
		h := &mechHandler{}
		srv, addr := mechServe(t, h, []string{"EXTERNAL"}, func(s *smtpd.Server) {
			s.TLSClientAuth = tls.VerifyClientCertIfGiven
			s.TLSClientCAs = pool
		})
		args := append(cliCurlArgs("smtp://"+addr+"/curl.example", "a@example.com", "b@example.com"),
			"--ssl-reqd", "--cacert", clientsCertPEM(t, srv), "--cert", certFile, "--key", keyFile,
			"--user", authUser+":", "--login-options", "AUTH=EXTERNAL")
		out := cliRunFail(t, clientsMessage, nil, curl, args...)
		require.NotContains(t, out, "< 235")
		require.Empty(t, h.Messages())
	})
}

func TestSmtplibRequireTLS(t *testing.T) {
	script := filepath.Join("testdata", "clients", "smtplib_auth.py")
	python := clientsNeed(t, "python3")
	rec := &smtptest.Recorder{}
	ts := smtptest.NewServer(t, rec, func(s *smtpd.Server) {
		s.TLSMode = smtpd.TLSOptional
		s.RequireTLS = true
	})
	host, port, err := net.SplitHostPort(ts.Addr)
	require.NoError(t, err)
	msg := clientsFile(t, "msg.eml", clientsMessage)
	out, transcript := cliRun(t, "", nil, python, script, "requiretls-plain", host, port, "-", "", "",
		"a@example.com", "b@example.com", msg)
	require.Contains(t, out, "refused 530 REQUIRETLS needs an encrypted connection")
	require.NotContains(t, transcript, "requiretls", "not offered over plaintext")

	out, transcript = cliRun(t, "", nil, python, script, "requiretls", host, port, clientsCertPEM(t, ts.Server), "", "",
		"a@example.com", "b@example.com", msg)
	require.Contains(t, out, "sent")
	require.Contains(t, transcript, "250-REQUIRETLS")
	require.Contains(t, transcript, "send: 'mail FROM:<a@example.com> size=130 REQUIRETLS\\r\\n'")
	m := rec.Wait(t, 1)[0]
	require.True(t, m.RequireTLS)
	require.True(t, m.Encrypted)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
