package proxyproto

import (
	"bufio"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReadLoopback sends each header and SMTP bytes in one write over a
// loopback TCP connection, as a load balancer does, and checks that the
// server side reads the header, then the SMTP bytes.
func TestReadLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()

	for _, tc := range validCases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ln.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Write(append(append([]byte(nil), tc.in...), smtp...))
			require.NoError(t, err)

			s, err := ln.Accept()
			require.NoError(t, err)
			defer s.Close()
			require.NoError(t, s.SetReadDeadline(time.Now().Add(5*time.Second)))
			h, err := Read(s)
			require.NoError(t, err)
			require.Equal(t, tc.want, h)
			line, err := bufio.NewReader(s).ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "EHLO client.example\r\n", line)
		})
	}
}

// TestReadDeadline checks that a peer that sends nothing, or stops within
// the header, makes Read return the deadline's error.
func TestReadDeadline(t *testing.T) {
	for _, in := range []string{"", "PROXY TCP4 192.0.2.1", string(v2Signature) + "\x21\x11\x00\x0c\x01"} {
		client, server := net.Pipe()
		go func() { _, _ = client.Write([]byte(in)) }()
		require.NoError(t, server.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
		_, err := Read(server)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded, "%q", in)
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		require.True(t, ne.Timeout())
		client.Close()
		server.Close()
	}
}
