package certs

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
)

// BenchmarkHandshake measures full TLS 1.3 handshakes (no resumption, client
// verifying the chain) over loopback TCP, one connection per iteration, for
// an ECDSA P-256 and an RSA-2048 server certificate.
func BenchmarkHandshake(b *testing.B) {
	benchmarks := []struct {
		name      string
		cert, key string
	}{
		{"ECDSA-P256", "ecdsa.crt", "ecdsa.key"},
		{"RSA-2048", "rsa2048.crt", "rsa2048.key"},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			cert, err := Load(testdata+bm.cert, testdata+bm.key)
			if err != nil {
				b.Fatal(err)
			}
			server := Config(cert, nil)
			server.MinVersion = tls.VersionTLS13
			server.SessionTicketsDisabled = true
			roots := x509.NewCertPool()
			roots.AddCert(cert.Leaf)
			client := &tls.Config{
				RootCAs:    roots,
				ServerName: "127.0.0.1",
				MinVersion: tls.VersionTLS13,
			}
			benchmarkHandshakes(b, server, client)
		})
	}
}

// benchmarkHandshakes runs b.N client and server handshakes over loopback
// and reports the rate as handshakes/s.
func benchmarkHandshakes(b *testing.B, server, client *tls.Config) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()

	// The listener goroutine serves one handshake per connection and reports
	// its result, so that each iteration covers both sides.
	results := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			err = tls.Server(c, server).Handshake()
			c.Close()
			results <- err
		}
	}()

	addr := ln.Addr().String()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		tc := tls.Client(c, client)
		if err := tc.Handshake(); err != nil {
			b.Fatal(err)
		}
		if err := <-results; err != nil {
			b.Fatal(err)
		}
		if v := tc.ConnectionState().Version; v != tls.VersionTLS13 {
			b.Fatalf("negotiated version %#x, want TLS 1.3", v)
		}
		tc.Close()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}
