package smtpd

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// tlsPoolFile returns a pool with every certificate of a PEM file.
func tlsPoolFile(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(b), "no certificate in %s", path)
	return pool
}

// tlsFirstDER returns the DER bytes of the first certificate of a PEM file.
func tlsFirstDER(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		require.NotNil(t, block, "no certificate in %s", path)
		if block.Type == "CERTIFICATE" {
			return block.Bytes
		}
	}
}

func TestTLSCertificateFiles(t *testing.T) {
	dir := filepath.Join("testdata", "certs")
	for _, tc := range []struct {
		name, cert, key, root string
		chain                 int // certificates the server sends
	}{
		{"self-signed RSA with key file", "selfsigned.crt", "selfsigned.key", "selfsigned.crt", 1},
		{"leaf and CA chain", "leaf-chain.crt", "leaf.key", "ca.crt", 2},
		{"key inside the certificate file", "combined.pem", "", "combined.pem", 1},
		{"ECDSA SEC1 key", "ecdsa.crt", "ecdsa.key", "ecdsa.crt", 1},
		{"Ed25519", "ed25519.crt", "ed25519.key", "ed25519.crt", 1},
		{"RSA PKCS#1 key", "rsa2048.crt", "rsa2048.key", "rsa2048.crt", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &Server{TLSMode: TLSOptional, TLSCertPath: filepath.Join(dir, tc.cert)}
			if tc.key != "" {
				srv.TLSKeyPath = filepath.Join(dir, tc.key)
			}
			addr, _ := tlsServe(t, srv)
			leafDER := tlsFirstDER(t, filepath.Join(dir, tc.cert))
			require.Equal(t, leafDER, srv.ActiveTLSConfig().Certificates[0].Certificate[0])
			c := dialGreeted(t, addr)
			c.ehloLines("x")
			sc := tlsStart(t, c, tlsClientConfig(tlsPoolFile(t, filepath.Join(dir, tc.root))))
			st := sc.conn.(*tls.Conn).ConnectionState()
			require.Len(t, st.PeerCertificates, tc.chain)
			require.Equal(t, leafDER, st.PeerCertificates[0].Raw)
			sc.ehloLines("x")
			sc.cmd("QUIT", 221)
		})
	}
	t.Run("leaf and CA chain verified as localhost", func(t *testing.T) {
		addr, _ := tlsServe(t, &Server{TLSMode: TLSOptional,
			TLSCertPath: filepath.Join(dir, "leaf-chain.crt"), TLSKeyPath: filepath.Join(dir, "leaf.key")})
		c := dialGreeted(t, addr)
		c.ehloLines("x")
		tlsStart(t, c, &tls.Config{RootCAs: tlsPoolFile(t, filepath.Join(dir, "ca.crt")), ServerName: "localhost"}).cmd("NOOP", 250)
	})
}

func TestTLSWrongCN(t *testing.T) {
	dir := filepath.Join("testdata", "certs")
	srv := &Server{TLSMode: TLSOptional,
		TLSCertPath: filepath.Join(dir, "wrongcn.crt"), TLSKeyPath: filepath.Join(dir, "wrongcn.key")}
	addr, _ := tlsServe(t, srv)
	pool := tlsPoolFile(t, filepath.Join(dir, "wrongcn.crt"))
	for _, name := range []string{"127.0.0.1", "localhost"} {
		t.Run(name, func(t *testing.T) {
			c := dialGreeted(t, addr)
			c.ehloLines("x")
			c.cmd("STARTTLS", 220)
			_, err := tlsHandshake(t, c, &tls.Config{RootCAs: pool, ServerName: name})
			require.Error(t, err)
			var he x509.HostnameError
			require.ErrorAs(t, err, &he, "want a hostname verification error, got %v", err)
			readUntilClosed(t, c.conn, c.r)
		})
	}
	t.Run("control: right name", func(t *testing.T) {
		c := dialGreeted(t, addr)
		c.ehloLines("x")
		tlsStart(t, c, &tls.Config{RootCAs: pool, ServerName: "wrong.example"}).cmd("NOOP", 250)
	})
}

func TestTLSCertificateErrors(t *testing.T) {
	dir := filepath.Join("testdata", "certs")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	unreadable := filepath.Join(t.TempDir(), "dir.pem") // a directory cannot be read as a file
	require.NoError(t, os.Mkdir(unreadable, 0o755))
	for _, tc := range []struct {
		name, cert, key string
		want            []string // substrings of the error (file names)
	}{
		{"missing certificate", missing, filepath.Join(dir, "selfsigned.key"), []string{missing}},
		{"unreadable certificate", unreadable, filepath.Join(dir, "selfsigned.key"), []string{unreadable}},
		{"missing key", filepath.Join(dir, "selfsigned.crt"), missing, []string{missing}},
		{"mismatched key", filepath.Join(dir, "selfsigned.crt"), filepath.Join(dir, "mismatch.key"),
			[]string{filepath.Join(dir, "mismatch.key")}},
		{"no key in the certificate file", filepath.Join(dir, "selfsigned.crt"), "", []string{filepath.Join(dir, "selfsigned.crt")}},
		{"key file as certificate", filepath.Join(dir, "selfsigned.key"), filepath.Join(dir, "selfsigned.key"),
			[]string{filepath.Join(dir, "selfsigned.key")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := freePorts(t, 1)[0]
			srv := &Server{Hosts: "127.0.0.1", Ports: port, TLSMode: TLSOptional,
				TLSCertPath: tc.cert, TLSKeyPath: tc.key, Logger: testLogger()}
			err := srv.Start()
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			require.Empty(t, srv.Addrs())
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
			require.NoError(t, err, "port still bound after a failed Start")
			l.Close()
		})
	}
}

func TestTLSConfigAsGiven(t *testing.T) {
	dir := filepath.Join("testdata", "certs")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "ecdsa.crt"), filepath.Join(dir, "ecdsa.key"))
	require.NoError(t, err)
	var calls atomic.Int32
	cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		calls.Add(1)
		return &cert, nil
	}}
	// TLSConfig wins over the certificate paths, which would fail.
	srv := &Server{TLSMode: TLSOptional, TLSConfig: cfg, TLSCertPath: filepath.Join(t.TempDir(), "missing.pem")}
	addr := serve(t, srv)
	dialGreeted(t, addr).cmd("QUIT", 221)
	require.Same(t, cfg, srv.ActiveTLSConfig())
	client := tlsClientConfig(tlsPoolFile(t, filepath.Join(dir, "ecdsa.crt")))
	for i := 1; i <= 2; i++ {
		c := dialGreeted(t, addr)
		c.ehloLines("x")
		tlsStart(t, c, client).cmd("QUIT", 221)
		require.Equal(t, int32(i), calls.Load(), "GetCertificate calls")
	}
}
