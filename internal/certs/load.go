// Package certs loads, names and generates the TLS certificates of the SMTP
// server, and holds the TLS 1.2 cipher suite presets that mirror the OpenSSL
// cipher strings of Ruby's MidiSmtpServer.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// errNoKey reports that a PEM file holds no private key block.
var errNoKey = errors.New("no PEM private key found")

// Load reads a PEM certificate (a chain allowed: leaf first, then
// intermediates) from certPath and its private key from keyPath; when keyPath
// is "" the key must be inside the cert file.
//
// Supported keys are RSA (PKCS #1 and PKCS #8), ECDSA (SEC 1 and PKCS #8) and
// Ed25519 (PKCS #8); other PEM blocks (for example "EC PARAMETERS") are
// skipped. Errors name the file and say what is wrong: unreadable, no
// certificate, no key, key does not match the certificate. An expired
// certificate is not an error; warning about it is the caller's business
// (the returned certificate's Leaf is set for that purpose).
func Load(certPath, keyPath string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: cannot read certificate file: %w", err)
	}
	var cert tls.Certificate
	for rest := certPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			cert.Certificate = append(cert.Certificate, block.Bytes)
		}
	}
	if len(cert.Certificate) == 0 {
		return tls.Certificate{}, fmt.Errorf("certs: no PEM certificate found in %q", certPath)
	}
	for i, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("certs: certificate #%d in %q is invalid: %w", i+1, certPath, err)
		}
		if i == 0 {
			cert.Leaf = c
		}
	}

	keyFile, keyPEM := certPath, certPEM
	if keyPath != "" {
		keyFile = keyPath
		keyPEM, err = os.ReadFile(keyPath)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("certs: cannot read private key file: %w", err)
		}
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		if errors.Is(err, errNoKey) && keyPath == "" {
			return tls.Certificate{}, fmt.Errorf("certs: %w in %q (no key file given, so the key must be in the certificate file)", err, keyFile)
		}
		return tls.Certificate{}, fmt.Errorf("certs: %w in %q", err, keyFile)
	}
	pub, ok := cert.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return tls.Certificate{}, fmt.Errorf("certs: private key in %q does not match the certificate in %q", keyFile, certPath)
	}
	cert.PrivateKey = key
	return cert, nil
}

// parseKey returns the first private key found in the PEM data.
func parseKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errNoKey
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			if block.Headers["Proc-Type"] != "" {
				return nil, errors.New("encrypted private key (not supported)")
			}
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			if block.Headers["Proc-Type"] != "" {
				return nil, errors.New("encrypted private key (not supported)")
			}
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private key (not supported)")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("invalid %s block: %w", block.Type, err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey:
			return k, nil
		case *ecdsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		default:
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
	}
}
