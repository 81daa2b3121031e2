package certs

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testdata is the directory holding the committed test certificates.
const testdata = "../../testdata/certs/"

func TestLoad(t *testing.T) {
	tests := []struct {
		name      string
		cert, key string
		wantCerts int
		wantCN    string
		wantKey   string // %T of the private key
	}{
		{"RSA PKCS#8", "selfsigned.crt", "selfsigned.key", 1, "localhost", "*rsa.PrivateKey"},
		{"RSA PKCS#1", "rsa2048.crt", "rsa2048.key", 1, "rsa2048", "*rsa.PrivateKey"},
		{"ECDSA SEC1", "ecdsa.crt", "ecdsa.key", 1, "ecdsa", "*ecdsa.PrivateKey"},
		{"Ed25519 PKCS#8", "ed25519.crt", "ed25519.key", 1, "ed25519", "ed25519.PrivateKey"},
		{"chain, EC PARAMETERS skipped", "leaf-chain.crt", "leaf.key", 2, "localhost", "*ecdsa.PrivateKey"},
		{"combined cert and PKCS#8 key", "combined.pem", "", 1, "combined", "*ecdsa.PrivateKey"},
		{"wrong CN", "wrongcn.crt", "wrongcn.key", 1, "wrong.example", "*ecdsa.PrivateKey"},
		{"CA", "ca.crt", "ca.key", 1, "smtpd test CA", "*ecdsa.PrivateKey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := tt.key
			if key != "" {
				key = testdata + key
			}
			cert, err := Load(testdata+tt.cert, key)
			require.NoError(t, err)
			require.Len(t, cert.Certificate, tt.wantCerts)
			require.NotNil(t, cert.Leaf)
			require.Equal(t, tt.wantCN, cert.Leaf.Subject.CommonName)
			require.Equal(t, tt.wantKey, fmt.Sprintf("%T", cert.PrivateKey))
			// crypto/tls agrees that the pair is usable.
			_, err = tls.X509KeyPair(readFile(t, testdata+tt.cert), keyPEMOf(t, tt.cert, tt.key))
			require.NoError(t, err)
		})
	}
}

func TestLoadChainOrder(t *testing.T) {
	cert, err := Load(testdata+"leaf-chain.crt", testdata+"leaf.key")
	require.NoError(t, err)
	ca, err := Load(testdata+"ca.crt", testdata+"ca.key")
	require.NoError(t, err)
	require.Equal(t, ca.Certificate[0], cert.Certificate[1], "second certificate is the CA")
	require.NoError(t, cert.Leaf.CheckSignatureFrom(ca.Leaf))
}

func TestLoadExpiredIsNotAnError(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "expired"},
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     time.Now().Add(-24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certPath := writePEM(t, dir, "expired.crt", "CERTIFICATE", der)
	keyPath := writePEM(t, dir, "expired.key", "PRIVATE KEY", keyDER)

	cert, err := Load(certPath, keyPath)
	require.NoError(t, err)
	require.True(t, cert.Leaf.NotAfter.Before(time.Now()))
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("this is not PEM\n"), 0o600))
	badCert := writePEM(t, dir, "bad.crt", "CERTIFICATE", []byte("not DER"))
	badKey := writePEM(t, dir, "bad.key", "PRIVATE KEY", []byte("not DER"))
	encKey := writePEM(t, dir, "enc.key", "ENCRYPTED PRIVATE KEY", []byte("whatever"))
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	require.NoError(t, err)
	xDER, err := x509.MarshalPKCS8PrivateKey(x)
	require.NoError(t, err)
	x25519Key := writePEM(t, dir, "x25519.key", "PRIVATE KEY", xDER)
	missing := filepath.Join(dir, "missing.crt")

	tests := []struct {
		name      string
		cert, key string
		want      []string // substrings of the error
	}{
		{"missing certificate file", missing, testdata + "ecdsa.key",
			[]string{"cannot read certificate file", missing}},
		{"missing key file", testdata + "ecdsa.crt", missing,
			[]string{"cannot read private key file", missing}},
		{"certificate path is a directory", dir, "",
			[]string{"cannot read certificate file", dir}},
		{"garbage certificate file", garbage, testdata + "ecdsa.key",
			[]string{"no PEM certificate found", garbage}},
		{"key file instead of certificate", testdata + "ecdsa.key", testdata + "ecdsa.key",
			[]string{"no PEM certificate found", "ecdsa.key"}},
		{"invalid certificate DER", badCert, testdata + "ecdsa.key",
			[]string{"certificate #1", badCert, "invalid"}},
		{"certificate without key", testdata + "ecdsa.crt", "",
			[]string{"no PEM private key found", testdata + "ecdsa.crt", "must be in the certificate file"}},
		{"garbage key file", testdata + "ecdsa.crt", garbage,
			[]string{"no PEM private key found", garbage}},
		{"certificate instead of key", testdata + "ecdsa.crt", testdata + "rsa2048.crt",
			[]string{"no PEM private key found", "rsa2048.crt"}},
		{"invalid key DER", testdata + "ecdsa.crt", badKey,
			[]string{"invalid PRIVATE KEY block", badKey}},
		{"encrypted key", testdata + "ecdsa.crt", encKey,
			[]string{"encrypted private key", encKey}},
		{"unsupported key type", testdata + "ecdsa.crt", x25519Key,
			[]string{"unsupported private key type", x25519Key}},
		{"mismatched key, same type", testdata + "ecdsa.crt", testdata + "mismatch.key",
			[]string{"does not match", "mismatch.key", "ecdsa.crt"}},
		{"mismatched key, other type", testdata + "rsa2048.crt", testdata + "ecdsa.key",
			[]string{"does not match", "ecdsa.key", "rsa2048.crt"}},
		{"chain with another leaf's key", testdata + "leaf-chain.crt", testdata + "ca.key",
			[]string{"does not match", "ca.key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := Load(tt.cert, tt.key)
			require.Error(t, err)
			require.Empty(t, cert.Certificate)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestNames(t *testing.T) {
	ip := net.ParseIP
	tests := []struct {
		name    string
		cn, san string
		hosts   []string
		ips     []net.IP
		wantCN  string
		wantSAN []string
	}{
		{name: "nothing at all", wantCN: "localhost.local"},
		{name: "only wildcard host", hosts: []string{"*"}, wantCN: "localhost.local"},
		{
			name: "operator cn and san win", cn: " mail.example.com ", san: " a.example.com, ,b.example.com,, 10.0.0.1 ",
			hosts: []string{"other.example"}, ips: []net.IP{ip("192.0.2.1")},
			wantCN: "mail.example.com", wantSAN: []string{"a.example.com", "b.example.com", "10.0.0.1"},
		},
		{
			name: "operator cn without san", cn: "mail.example.com", hosts: []string{"other.example"},
			wantCN: "mail.example.com",
		},
		{
			name: "operator san deduplicated", cn: "mx", san: "A.example,a.example,::1,0:0::1,[::1], [2001:DB8::2]",
			wantCN: "mx", wantSAN: []string{"A.example", "::1", "2001:db8::2"},
		},
		{
			name: "operator san without cn: cn derived from it", san: "mx.example.com, mx2.example.com",
			hosts:  []string{"ignored.example"},
			wantCN: "mx.example.com", wantSAN: []string{"mx2.example.com"},
		},
		{
			name: "first host becomes cn and is dropped", hosts: []string{"mx.example.com", "*", "192.0.2.10"},
			ips:    []net.IP{ip("192.0.2.10"), ip("2001:db8::1")},
			wantCN: "mx.example.com", wantSAN: []string{"192.0.2.10", "2001:db8::1"},
		},
		{
			name: "single host", hosts: []string{"mx.example.com"},
			wantCN: "mx.example.com",
		},
		{
			name: "localhost first falls back", hosts: []string{"localhost"}, ips: []net.IP{ip("127.0.0.1"), ip("::1")},
			wantCN: "localhost.local", wantSAN: []string{"localhost", "127.0.0.1", "::1"},
		},
		{
			name: "LOCALHOST any case", hosts: []string{"LocalHost"},
			wantCN: "localhost.local", wantSAN: []string{"LocalHost"},
		},
		{
			name: "127.0.0.1 first falls back", ips: []net.IP{ip("127.0.0.1"), ip("192.0.2.1")},
			wantCN: "localhost.local", wantSAN: []string{"127.0.0.1", "192.0.2.1"},
		},
		{
			name: "::1 first falls back", hosts: []string{"[::1]"},
			wantCN: "localhost.local", wantSAN: []string{"::1"},
		},
		{
			name: "loopback only counts when first", hosts: []string{"192.0.2.1", "localhost"},
			wantCN: "192.0.2.1", wantSAN: []string{"localhost"},
		},
		{
			name: "wildcard excluded, IPs of wildcard used", hosts: []string{"*"},
			ips:    []net.IP{ip("192.0.2.7"), ip("127.0.0.1")},
			wantCN: "192.0.2.7", wantSAN: []string{"127.0.0.1"},
		},
		{
			name:   "dedup hosts and IPs, canonical IP form, case-insensitive names",
			hosts:  []string{"MX.example.com", "mx.example.com", "2001:DB8:0::1", " ", ""},
			ips:    []net.IP{ip("2001:db8::1"), ip("::ffff:192.0.2.3"), ip("192.0.2.3")},
			wantCN: "MX.example.com", wantSAN: []string{"2001:db8::1", "192.0.2.3"},
		},
		{
			name: "unspecified and nil IPs skipped", hosts: []string{"*"},
			ips:    []net.IP{ip("0.0.0.0"), nil, ip("::"), ip("192.0.2.9")},
			wantCN: "192.0.2.9",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cn, san := Names(tt.cn, tt.san, tt.hosts, tt.ips)
			require.Equal(t, tt.wantCN, cn)
			require.Equal(t, tt.wantSAN, san)
		})
	}
}

func TestSelfSigned(t *testing.T) {
	now := time.Date(2030, 5, 17, 12, 0, 0, 0, time.UTC)
	cert, err := SelfSigned("mx.example.com", []string{"192.0.2.1", "mx.example.com", "[2001:db8::5]", "alt.example.com", ""}, now)
	require.NoError(t, err)
	require.Len(t, cert.Certificate, 1)
	leaf := cert.Leaf
	require.NotNil(t, leaf)
	require.Equal(t, cert.Certificate[0], leaf.Raw)

	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	require.True(t, ok, "key is %T", cert.PrivateKey)
	require.Equal(t, elliptic.P256(), key.Curve)
	require.True(t, key.PublicKey.Equal(leaf.PublicKey))

	require.Equal(t, "mx.example.com", leaf.Subject.CommonName)
	require.Equal(t, now.Add(-time.Hour), leaf.NotBefore)
	require.Equal(t, now.Add(90*24*time.Hour), leaf.NotAfter)
	require.Equal(t, []string{"mx.example.com", "alt.example.com"}, leaf.DNSNames)
	require.Len(t, leaf.IPAddresses, 2)
	require.True(t, leaf.IPAddresses[0].Equal(net.ParseIP("192.0.2.1")))
	require.True(t, leaf.IPAddresses[1].Equal(net.ParseIP("2001:db8::5")))
	require.False(t, leaf.IsCA)
	require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, leaf.ExtKeyUsage)
	require.NoError(t, leaf.VerifyHostname("192.0.2.1"))
	require.NoError(t, leaf.VerifyHostname("mx.example.com"))
	require.Error(t, leaf.VerifyHostname("other.example.com"))

	other, err := SelfSigned("mx.example.com", nil, now)
	require.NoError(t, err)
	require.NotEqual(t, leaf.SerialNumber, other.Leaf.SerialNumber, "serials are random")
}

func TestSelfSignedDefaults(t *testing.T) {
	before := time.Now()
	cert, err := SelfSigned("", nil, time.Time{})
	require.NoError(t, err)
	require.Equal(t, "localhost.local", cert.Leaf.Subject.CommonName)
	require.Equal(t, []string{"localhost.local"}, cert.Leaf.DNSNames)
	require.WithinDuration(t, before.Add(90*24*time.Hour), cert.Leaf.NotAfter, time.Minute)
}

func TestHandshake(t *testing.T) {
	self, err := SelfSigned("localhost.local", []string{"127.0.0.1", "::1", "localhost"}, time.Now())
	require.NoError(t, err)
	ca := mustLoad(t, "ca.crt", "ca.key")

	tests := []struct {
		name       string
		server     tls.Certificate
		suites     []uint16
		roots      *x509.Certificate
		serverName string
		maxVersion uint16
		wantErr    string // substring of the client's verification error
	}{
		{name: "self-signed, 127.0.0.1", server: self, roots: self.Leaf, serverName: "127.0.0.1"},
		{name: "self-signed, localhost", server: self, roots: self.Leaf, serverName: "localhost"},
		{name: "self-signed, TLS 1.2 default suites", server: self, roots: self.Leaf, serverName: "127.0.0.1", maxVersion: tls.VersionTLS12},
		{name: "self-signed, wrong name", server: self, roots: self.Leaf, serverName: "mx.example.com", wantErr: "not mx.example.com"},
		{name: "selfsigned.crt RSA", server: mustLoad(t, "selfsigned.crt", "selfsigned.key"), roots: mustLoad(t, "selfsigned.crt", "selfsigned.key").Leaf, serverName: "127.0.0.1"},
		{name: "chain verified by CA", server: mustLoad(t, "leaf-chain.crt", "leaf.key"), roots: ca.Leaf, serverName: "localhost"},
		{name: "chain, TLS 1.2", server: mustLoad(t, "leaf-chain.crt", "leaf.key"), roots: ca.Leaf, serverName: "127.0.0.1", maxVersion: tls.VersionTLS12},
		{name: "combined.pem", server: mustLoad(t, "combined.pem", ""), roots: mustLoad(t, "combined.pem", "").Leaf, serverName: "127.0.0.1"},
		{name: "ed25519", server: mustLoad(t, "ed25519.crt", "ed25519.key"), roots: mustLoad(t, "ed25519.crt", "ed25519.key").Leaf, serverName: "127.0.0.1"},
		{name: "rsa2048, TLS 1.2, Legacy", server: mustLoad(t, "rsa2048.crt", "rsa2048.key"), suites: Legacy, roots: mustLoad(t, "rsa2048.crt", "rsa2048.key").Leaf, serverName: "127.0.0.1", maxVersion: tls.VersionTLS12},
		{name: "wrongcn.crt fails verification", server: mustLoad(t, "wrongcn.crt", "wrongcn.key"), roots: mustLoad(t, "wrongcn.crt", "wrongcn.key").Leaf, serverName: "127.0.0.1", wantErr: "doesn't contain any IP SANs"},
		{name: "wrongcn.crt fails verification as localhost", server: mustLoad(t, "wrongcn.crt", "wrongcn.key"), roots: mustLoad(t, "wrongcn.crt", "wrongcn.key").Leaf, serverName: "localhost", wantErr: "not localhost"},
		{name: "self-signed not trusted", server: self, roots: ca.Leaf, serverName: "127.0.0.1", wantErr: "unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roots := x509.NewCertPool()
			roots.AddCert(tt.roots)
			client := &tls.Config{RootCAs: roots, ServerName: tt.serverName, MaxVersion: tt.maxVersion}
			state, err := handshake(t, Config(tt.server, tt.suites), client)
			if tt.wantErr != "" {
				var certErr *tls.CertificateVerificationError
				require.True(t, errors.As(err, &certErr), "want a verification error, got %v", err)
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.True(t, state.HandshakeComplete)
			if tt.maxVersion != 0 {
				require.Equal(t, tt.maxVersion, state.Version)
			} else {
				require.Equal(t, uint16(tls.VersionTLS13), state.Version)
			}
			require.Len(t, state.VerifiedChains, 1)
		})
	}
}

// TestPresetsNegotiable checks that every suite of every preset really is
// negotiated by crypto/tls when a TLS 1.2 client offers only that suite.
func TestPresetsNegotiable(t *testing.T) {
	rsaCert := mustLoad(t, "rsa2048.crt", "rsa2048.key")
	ecCert := mustLoad(t, "ecdsa.crt", "ecdsa.key")
	for name, preset := range presets() {
		for _, id := range preset {
			t.Run(name+"/"+tls.CipherSuiteName(id), func(t *testing.T) {
				cert := rsaCert
				if strings.Contains(tls.CipherSuiteName(id), "_ECDSA_") {
					cert = ecCert
				}
				roots := x509.NewCertPool()
				roots.AddCert(cert.Leaf)
				client := &tls.Config{
					RootCAs:      roots,
					ServerName:   "127.0.0.1",
					MaxVersion:   tls.VersionTLS12,
					CipherSuites: []uint16{id},
				}
				state, err := handshake(t, Config(cert, preset), client)
				require.NoError(t, err)
				require.Equal(t, id, state.CipherSuite)
			})
		}
	}
}

func TestPresets(t *testing.T) {
	insecure := map[uint16]bool{}
	for _, s := range tls.InsecureCipherSuites() {
		insecure[s.ID] = true
	}
	known := map[uint16]bool{}
	for _, s := range tls.CipherSuites() {
		known[s.ID] = true
	}
	// Ruby's order, strongest first: every preset is a subsequence of Legacy.
	order := map[uint16]int{}
	for i, id := range Legacy {
		order[id] = i
	}
	tests := []struct {
		name          string
		preset        []uint16
		superset      []uint16
		allowInsecure bool
		wantLen       int
	}{
		{"AdvancedPlus", AdvancedPlus, Advanced, false, 4},
		{"Advanced", Advanced, BroadCompatibility, false, 4},
		{"BroadCompatibility", BroadCompatibility, WidestCompatibility, false, 8},
		{"WidestCompatibility", WidestCompatibility, Legacy, true, 15},
		{"Legacy", Legacy, Legacy, true, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Len(t, tt.preset, tt.wantLen)
			last := -1
			seen := map[uint16]bool{}
			for _, id := range tt.preset {
				name := tls.CipherSuiteName(id)
				require.False(t, seen[id], "duplicate %s", name)
				seen[id] = true
				require.True(t, known[id] || insecure[id], "%s not implemented by crypto/tls", name)
				require.False(t, strings.HasPrefix(name, "TLS_AES_") || strings.HasPrefix(name, "TLS_CHACHA20_"), "%s is a TLS 1.3 suite", name)
				if !tt.allowInsecure {
					require.False(t, insecure[id], "%s is insecure", name)
				}
				require.Contains(t, tt.superset, id, "%s missing from the next wider preset", name)
				pos, ok := order[id]
				require.True(t, ok)
				require.Greater(t, pos, last, "%s out of order", name)
				last = pos
				require.Contains(t, MappingDoc, "`"+name+"`", "MappingDoc does not mention %s", name)
			}
		})
	}
}

func TestMappingDocRubyNames(t *testing.T) {
	// The OpenSSL names of Ruby's TLS_CIPHERS_LEGACY and TLS_CIPHERS_BROAD_COMP
	// together cover all five strings.
	ruby := "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:" +
		"DHE-RSA-AES256-SHA256:DHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256:" +
		"ECDHE-RSA-AES256-SHA:ECDHE-RSA-AES128-SHA:AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-SHA256:AES128-SHA256:" +
		"AES256-SHA:AES128-SHA:DES-CBC3-SHA:DHE-RSA-AES256-SHA:DHE-RSA-AES128-SHA"
	notOffered := map[string]bool{
		"DHE-RSA-AES256-GCM-SHA384": true, "DHE-RSA-AES128-GCM-SHA256": true,
		"DHE-RSA-AES256-SHA256": true, "DHE-RSA-AES128-SHA256": true,
		"DHE-RSA-AES256-SHA": true, "DHE-RSA-AES128-SHA": true,
		"ECDHE-RSA-AES256-SHA384": true, "AES256-SHA256": true,
	}
	for _, name := range strings.Split(ruby, ":") {
		i := strings.Index(MappingDoc, "| `"+name+"` |")
		require.GreaterOrEqual(t, i, 0, "MappingDoc has no row for %s", name)
		row, _, _ := strings.Cut(MappingDoc[i:], "\n")
		require.Equal(t, notOffered[name], strings.Contains(row, "not offered by Go"), row)
	}
}

func TestConfig(t *testing.T) {
	cert := mustLoad(t, "ecdsa.crt", "ecdsa.key")
	tests := []struct {
		name   string
		suites []uint16
		want   []uint16
	}{
		{"nil means AdvancedPlus", nil, AdvancedPlus},
		{"empty means AdvancedPlus", []uint16{}, AdvancedPlus},
		{"Legacy", Legacy, Legacy},
		{"custom", []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305}, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config(cert, tt.suites)
			require.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion)
			require.Zero(t, cfg.MaxVersion, "TLS 1.3 stays enabled")
			require.Equal(t, tt.want, cfg.CipherSuites)
			require.Len(t, cfg.Certificates, 1)
			require.Equal(t, cert.Certificate, cfg.Certificates[0].Certificate)
			// The config owns its copy of the suites.
			saved := slices.Clone(tt.want)
			cfg.CipherSuites[0] = 0
			require.Equal(t, saved, tt.want)
		})
	}
}

// presets returns the five cipher presets by name.
func presets() map[string][]uint16 {
	return map[string][]uint16{
		"AdvancedPlus":        AdvancedPlus,
		"Advanced":            Advanced,
		"BroadCompatibility":  BroadCompatibility,
		"WidestCompatibility": WidestCompatibility,
		"Legacy":              Legacy,
	}
}

// handshake runs one TLS handshake over loopback TCP between a server using
// server and a client using client, and returns the client's view of it.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()

	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		// The server's error is of no interest: when the client rejects the
		// certificate, the server sees the client's alert.
		_ = tls.Server(c, server).Handshake()
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	tc := tls.Client(c, client)
	err = tc.Handshake()
	state := tc.ConnectionState()
	tc.Close()
	<-done
	return state, err
}

// mustLoad loads a certificate and key from the test data directory; key
// may be "" for a combined file.
func mustLoad(t *testing.T, cert, key string) tls.Certificate {
	t.Helper()
	if key != "" {
		key = testdata + key
	}
	c, err := Load(testdata+cert, key)
	require.NoError(t, err)
	return c
}

// readFile returns the contents of path.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// keyPEMOf returns the PEM data holding the key for a Load test case.
func keyPEMOf(t *testing.T, cert, key string) []byte {
	t.Helper()
	if key == "" {
		return readFile(t, testdata+cert)
	}
	return readFile(t, testdata+key)
}

// writePEM writes one PEM block of the given type into dir/name and returns
// the path.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	return path
}
