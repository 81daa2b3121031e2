package smtpd

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"
	"time"
)

// BenchmarkSTARTTLS measures whole STARTTLS sessions over loopback (banner, EHLO,
// STARTTLS, a full TLS 1.3 handshake with certificate verification, EHLO, QUIT), one
// certificate type per sub-benchmark, so ECDSA and RSA are measured side by side in
// one run. Client and server share the process: the figure is the cost of both sides.
func BenchmarkSTARTTLS(b *testing.B) {
	for _, tc := range []struct{ name, cert, key string }{
		{"ECDSA-P256", "testdata/certs/ecdsa.crt", "testdata/certs/ecdsa.key"},
		{"RSA-2048", "testdata/certs/rsa2048.crt", "testdata/certs/rsa2048.key"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := serve(b, &Server{TLSMode: TLSOptional, TLSCertPath: tc.cert, TLSKeyPath: tc.key, MaxProcessings: 16})
			pem, err := os.ReadFile(tc.cert)
			if err != nil {
				b.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"} // no session cache: full handshakes
			b.ResetTimer()
			for b.Loop() {
				benchSTARTTLSSession(b, addr, cfg)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
		})
	}
}

// benchSTARTTLSSession runs one session that upgrades to TLS and quits.
func benchSTARTTLSSession(b *testing.B, addr string, cfg *tls.Config) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := &benchClient{b: b, conn: conn, r: bufio.NewReaderSize(conn, 4096)}
	c.expect(220)
	c.write([]byte("EHLO bench.example\r\n"))
	c.expect(250)
	c.write([]byte("STARTTLS\r\n"))
	c.expect(220)
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		b.Fatal(err)
	}
	c = &benchClient{b: b, conn: tc, r: bufio.NewReaderSize(tc, 4096)}
	c.write([]byte("EHLO bench.example\r\n"))
	c.expect(250)
	c.write([]byte("QUIT\r\n"))
	c.expect(221)
}
