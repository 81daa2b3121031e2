package proxyproto

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// readV1 reads the rest of a v1 line whose first 12 bytes, starting with
// "PROXY ", are in buf; buf has room for MaxV1Length bytes. It reads one
// byte at a time so that nothing after the LF is consumed.
func readV1(r io.Reader, buf []byte) (Header, error) {
	buf = buf[:MaxV1Length]
	if i := bytes.IndexByte(buf[:12], '\n'); i >= 0 {
		// Even "PROXY UNKNOWN\r\n" is longer: the bytes read past the LF
		// are lost, but the header is invalid anyway.
		return Header{}, fmt.Errorf("%w: v1 line %q too short", ErrMalformed, buf[:i+1])
	}
	n := 12
	for {
		if n == MaxV1Length {
			return Header{}, fmt.Errorf("%w: no LF in the first %d bytes of a v1 line", ErrTooLong, MaxV1Length)
		}
		if err := readFull(r, buf[n:n+1]); err != nil {
			return Header{}, fmt.Errorf("proxyproto: reading v1 header after %d bytes: %w", n, err)
		}
		n++
		if buf[n-1] == '\n' {
			break
		}
	}
	return parseV1(buf[:n])
}

// parseV1 parses a complete v1 line, from "PROXY " to its LF.
func parseV1(line []byte) (Header, error) {
	body, ok := bytes.CutSuffix(line, []byte("\r\n"))
	if !ok {
		return Header{}, fmt.Errorf("%w: v1 line %q does not end with CRLF", ErrMalformed, line)
	}
	if bytes.ContainsAny(body, "\r\n") {
		return Header{}, fmt.Errorf("%w: bare CR in v1 line %q", ErrMalformed, line)
	}
	s := string(body[len(v1Prefix):])

	// "UNKNOWN" may be followed by anything, which the receiver ignores.
	if rest, ok := strings.CutPrefix(s, "UNKNOWN"); ok && (rest == "" || rest[0] == ' ') {
		return Header{Version: 1, Local: true}, nil
	}

	f := strings.Split(s, " ")
	if len(f) != 5 {
		return Header{}, fmt.Errorf("%w: v1 line %q: want 5 fields after PROXY, separated by single spaces", ErrMalformed, line)
	}
	var want4 bool
	switch f[0] {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return Header{}, fmt.Errorf("%w: v1 protocol %q", ErrMalformed, f[0])
	}
	src, err := parseV1Addr(f[1], want4)
	if err != nil {
		return Header{}, err
	}
	dst, err := parseV1Addr(f[2], want4)
	if err != nil {
		return Header{}, err
	}
	sport, err := parseV1Port(f[3])
	if err != nil {
		return Header{}, err
	}
	dport, err := parseV1Port(f[4])
	if err != nil {
		return Header{}, err
	}
	h := Header{Version: 1}
	h.Source, h.Dest = unmapPair(netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport))
	return h, nil
}

// parseV1Addr parses an address of a TCP4 (want4) or TCP6 line: an IPv4
// dotted quad without leading zeros, or an IPv6 literal without zone.
func parseV1Addr(s string, want4 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("%w: v1 address %q: %v", ErrMalformed, s, err)
	case want4 && !a.Is4():
		return netip.Addr{}, fmt.Errorf("%w: v1 address %q is not IPv4 in a TCP4 line", ErrMalformed, s)
	case !want4 && !a.Is6():
		return netip.Addr{}, fmt.Errorf("%w: v1 address %q is not IPv6 in a TCP6 line", ErrMalformed, s)
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%w: v1 address %q has a zone", ErrMalformed, s)
	}
	return a, nil
}

// parseV1Port parses a port: 0 to 65535 in decimal digits, without sign
// and without leading zero.
func parseV1Port(s string) (uint16, error) {
	if s == "" || len(s) > 5 || (s[0] == '0' && len(s) > 1) {
		return 0, fmt.Errorf("%w: v1 port %q", ErrMalformed, s)
	}
	v := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: v1 port %q", ErrMalformed, s)
		}
		v = v*10 + int(c-'0')
	}
	if v > 65535 {
		return 0, fmt.Errorf("%w: v1 port %q over 65535", ErrMalformed, s)
	}
	return uint16(v), nil
}
