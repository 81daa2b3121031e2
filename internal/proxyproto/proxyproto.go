// Package proxyproto reads the PROXY protocol header (HAProxy's
// proxy-protocol.txt, versions 1 and 2) that a trusted load balancer sends
// at the start of a connection, before any byte of the proxied protocol.
//
// An SMTP server behind HAProxy ("send-proxy", "send-proxy-v2",
// "check-send-proxy") calls Read on the accepted connection, after setting a
// read deadline and before it sends its banner. Read detects the version,
// consumes exactly the bytes of the header and nothing after it, so the
// connection can then be handed to the SMTP reader as it is, without a
// buffer in between.
//
// Read is strict: a header that the specification does not allow is an
// error, and so is a connection that does not start with a header. The
// package never trusts a header by itself: only call Read on connections
// from peers allowed to send one, since the header rewrites the client's
// address.
//
// Sizes are capped so that a peer cannot make Read allocate or wait for
// much: a v1 line is at most MaxV1Length bytes (the specification's own
// maximum), a v2 header at most 16+MaxV2Length bytes.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
)

// Errors returned by Read. Read wraps them with detail, so test them with
// errors.Is. Errors of the underlying reader (io.EOF before the first byte,
// io.ErrUnexpectedEOF within a header, a deadline's timeout) are returned
// wrapped as well and match none of these.
var (
	// ErrNoHeader means the connection does not start with a PROXY protocol
	// header: its first 12 bytes are neither the v2 signature nor the start
	// of a v1 line ("PROXY "), nor close enough to either to be a broken
	// header (see ErrMalformed). Those 12 bytes have been consumed.
	ErrNoHeader = errors.New("proxyproto: no PROXY protocol header")

	// ErrMalformed means the connection starts like a PROXY protocol header
	// but the header breaks the specification (bad signature tail, version,
	// command, family, address, port, spacing, line ending, payload length or
	// TLV). Starting like one means starting with "PROXY" or with the first
	// 4 bytes of the v2 signature ("\r\n\r\n").
	ErrMalformed = errors.New("proxyproto: malformed PROXY protocol header")

	// ErrTooLong means a v1 line has no LF within MaxV1Length bytes, or a v2
	// header announces more than MaxV2Length bytes of addresses and TLVs. A
	// v2 payload that is too long is not read.
	ErrTooLong = errors.New("proxyproto: PROXY protocol header too long")
)

const (
	// MaxV1Length is the longest v1 header, CRLF included, that Read
	// accepts: 107 bytes, the maximum the specification gives ("PROXY
	// UNKNOWN" followed by two full-length IPv6 addresses and two 5-digit
	// ports; the longest TCP6 line has 104). Read never reads more than
	// this many bytes of a v1 header.
	MaxV1Length = 107

	// MaxV2Length caps the length field of a v2 header, the bytes of
	// addresses and TLVs after its 16 fixed bytes. The specification allows
	// up to 65535; 512 is room for the largest address block (216 bytes of
	// AF_UNIX addresses) or an IPv6 one plus the TLVs HAProxy sends
	// (unique-id, ALPN, authority, SSL information, CRC32C, NETNS), while
	// keeping what one connection may make the server read and hold small.
	MaxV2Length = 512
)

// Header is a parsed PROXY protocol header.
type Header struct {
	Version int            // 1 or 2
	Local   bool           // v2 LOCAL, v1 UNKNOWN, or a family without TCP addresses: keep the connection's real peer
	Source  netip.AddrPort // the original client (valid when !Local)
	Dest    netip.AddrPort // the address the client connected to (valid when !Local)
}

// v2Signature is the 12-byte signature opening every v2 header.
var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// v1Prefix opens every v1 header.
const v1Prefix = "PROXY "

// Read reads one PROXY protocol header, v1 or v2 (detected from its first
// bytes), from r and returns it.
//
// Read consumes exactly the bytes of the header and not one more, so r must
// be the raw connection (or an unbuffered view of it): what follows the
// header belongs to the proxied protocol. It first reads 12 bytes, which is
// never too many since the shortest v1 header has 15 and v2's signature 12.
// A v1 line is then read one byte at a time up to its LF, at most
// MaxV1Length bytes in all; a v2 header reads its 4 remaining fixed bytes,
// then exactly the payload length they announce, unless that is over
// MaxV2Length (ErrTooLong, the payload is left unread).
//
// For v1 "PROXY UNKNOWN", v2 LOCAL (HAProxy's health checks), and v2 PROXY
// headers of a family or transport without TCP addresses (AF_UNSPEC, UDP,
// AF_UNIX), the returned Header has Local set: the caller keeps the
// connection's real peer. IPv4-mapped IPv6 addresses are unmapped when both
// the source and the destination are mapped, so Source and Dest are always
// of the same family. The TLVs of a v2 PROXY header are checked to fit its
// payload, then skipped whatever their type (CRC32C is not verified).
//
// Read does not set deadlines: the caller bounds the wait with one on the
// connection. A client that sends nothing until it sees a banner, as SMTP
// clients do, makes Read wait for that deadline, not return ErrNoHeader.
// On any error the connection's state is unknown and it should be closed.
func Read(r io.Reader) (Header, error) {
	var buf [MaxV1Length]byte
	if _, err := io.ReadFull(r, buf[:12]); err != nil {
		return Header{}, fmt.Errorf("proxyproto: reading header: %w", err)
	}
	switch {
	case bytes.Equal(buf[:12], v2Signature):
		return readV2(r)
	case bytes.HasPrefix(buf[:12], []byte(v1Prefix)):
		return readV1(r, buf[:])
	case bytes.HasPrefix(buf[:12], v2Signature[:4]):
		return Header{}, fmt.Errorf("%w: bad v2 signature % x", ErrMalformed, buf[:12])
	case bytes.HasPrefix(buf[:12], []byte(v1Prefix[:5])):
		return Header{}, fmt.Errorf("%w: no space after PROXY", ErrMalformed)
	}
	return Header{}, fmt.Errorf("%w: connection starts with %q", ErrNoHeader, buf[:12])
}

// unmapPair unmaps IPv4-mapped IPv6 addresses when both src and dst are
// mapped, so that the pair stays of one family.
func unmapPair(src, dst netip.AddrPort) (netip.AddrPort, netip.AddrPort) {
	if src.Addr().Is4In6() && dst.Addr().Is4In6() {
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	}
	return src, dst
}

// Encode returns the header as v1 (Version 1) or v2 bytes: for tests and
// for clients of the test helpers. Any Version other than 1 gives v2.
//
// A Local header, or one whose Source or Dest is not valid, encodes as v1
// "PROXY UNKNOWN\r\n"; as v2 a Local header is a LOCAL command and the other
// case a PROXY command with family AF_UNSPEC, both without payload. When
// Source and Dest are both IPv4 (or IPv4-mapped) the header is TCP4 /
// AF_INET, otherwise TCP6 / AF_INET6 with any IPv4 address mapped. Zones are
// dropped. v2 headers carry no TLV.
func (h Header) Encode() []byte {
	src, dst := h.Source, h.Dest
	unknown := h.Local || !src.IsValid() || !dst.IsValid()
	is4 := false
	if !unknown {
		src = netip.AddrPortFrom(src.Addr().WithZone(""), src.Port())
		dst = netip.AddrPortFrom(dst.Addr().WithZone(""), dst.Port())
		if src.Addr().Unmap().Is4() && dst.Addr().Unmap().Is4() {
			is4 = true
			src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
			dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
		} else {
			src = netip.AddrPortFrom(netip.AddrFrom16(src.Addr().As16()), src.Port())
			dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
		}
	}

	if h.Version == 1 {
		if unknown {
			return []byte("PROXY UNKNOWN\r\n")
		}
		proto := "TCP6"
		if is4 {
			proto = "TCP4"
		}
		b := make([]byte, 0, MaxV1Length)
		b = append(b, v1Prefix...)
		b = append(b, proto...)
		b = append(b, ' ')
		b = src.Addr().AppendTo(b)
		b = append(b, ' ')
		b = dst.Addr().AppendTo(b)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(src.Port()), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(dst.Port()), 10)
		return append(b, '\r', '\n')
	}

	b := make([]byte, 0, 16+36)
	b = append(b, v2Signature...)
	switch {
	case h.Local:
		return append(b, v2Version<<4|v2CmdLocal, famUnspec<<4|protoUnspec, 0, 0)
	case unknown:
		return append(b, v2Version<<4|v2CmdProxy, famUnspec<<4|protoUnspec, 0, 0)
	case is4:
		b = append(b, v2Version<<4|v2CmdProxy, famInet<<4|protoStream)
		b = binary.BigEndian.AppendUint16(b, 12)
	default:
		b = append(b, v2Version<<4|v2CmdProxy, famInet6<<4|protoStream)
		b = binary.BigEndian.AppendUint16(b, 36)
	}
	b = append(b, src.Addr().AsSlice()...)
	b = append(b, dst.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// readFull fills b from r; a header cut short, at its first byte included, is
// io.ErrUnexpectedEOF (the signature before it was already read).
func readFull(r io.Reader, b []byte) error {
	_, err := io.ReadFull(r, b)
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
