package main

import (
	"crypto/tls"
	"net"
	"net/smtp"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSinkCertificateNames checks what -cn's help (and Server.TLSCertCN's doc)
// says, on the certificate a client really gets after STARTTLS: by default the
// CN is the first -san name, else the first host or bound address, but
// localhost.local for localhost, 127.0.0.1 or ::1; the CN is always one of the
// certificate's subject alternative names too.
func TestSinkCertificateNames(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantCN  string
		wantDNS []string
		wantIPs []string
	}{
		{name: "loopback host", args: []string{"-hosts", "127.0.0.1"},
			wantCN: "localhost.local", wantDNS: []string{"localhost.local"}, wantIPs: []string{"127.0.0.1"}},
		{name: "another loopback address is no loopback name", args: []string{"-hosts", "127.0.0.2"},
			wantCN: "127.0.0.2", wantIPs: []string{"127.0.0.2"}},
		{name: "-cn wins", args: []string{"-hosts", "127.0.0.1", "-cn", "mail.test"},
			wantCN: "mail.test", wantDNS: []string{"mail.test"}},
		{name: "first -san name", args: []string{"-hosts", "127.0.0.1", "-san", "mx.test, 127.0.0.1"},
			wantCN: "mx.test", wantDNS: []string{"mx.test"}, wantIPs: []string{"127.0.0.1"}},
		{name: "-san starting with a loopback name", args: []string{"-hosts", "127.0.0.1", "-san", "localhost,mx.test"},
			wantCN: "localhost.local", wantDNS: []string{"localhost.local", "localhost", "mx.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startSink(t, 1, append(tt.args, "-ports", "0", "-tls", "optional", "-quiet")...)
			c, err := smtp.Dial(r.addrs[0])
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.StartTLS(&tls.Config{InsecureSkipVerify: true}))
			st, ok := c.TLSConnectionState()
			require.True(t, ok)
			leaf := st.PeerCertificates[0]
			require.Equal(t, tt.wantCN, leaf.Subject.CommonName)
			require.Equal(t, tt.wantDNS, leaf.DNSNames)
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			require.Equal(t, tt.wantIPs, ips)
			// Clients match SANs only: the CN is among them.
			require.True(t, slices.Contains(leaf.DNSNames, tt.wantCN) ||
				slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool { return ip.String() == tt.wantCN }))
		})
	}
}
