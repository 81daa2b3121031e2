package proxyproto

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
)

// Fields of the 13th and 14th bytes of a v2 header.
const (
	v2Version = 0x2 // high nibble of byte 13

	v2CmdLocal = 0x0 // low nibble of byte 13
	v2CmdProxy = 0x1

	famUnspec = 0x0 // high nibble of byte 14
	famInet   = 0x1
	famInet6  = 0x2
	famUnix   = 0x3

	protoUnspec = 0x0 // low nibble of byte 14
	protoStream = 0x1
	protoDgram  = 0x2
)

// addrLen is the size of the address block of each family.
var addrLen = [...]int{
	famUnspec: 0,
	famInet:   4 + 4 + 2 + 2,
	famInet6:  16 + 16 + 2 + 2,
	famUnix:   108 + 108,
}

// readV2 reads the rest of a v2 header, whose 12-byte signature has been
// read: 4 fixed bytes, then exactly the payload length they announce.
func readV2(r io.Reader) (Header, error) {
	var fixed [4]byte
	if err := readFull(r, fixed[:]); err != nil {
		return Header{}, fmt.Errorf("proxyproto: reading v2 header: %w", err)
	}
	verCmd, famProto := fixed[0], fixed[1]
	length := int(binary.BigEndian.Uint16(fixed[2:]))

	if v := verCmd >> 4; v != v2Version {
		return Header{}, fmt.Errorf("%w: v2 version %d", ErrMalformed, v)
	}
	cmd := verCmd & 0xf
	fam, proto := famProto>>4, famProto&0xf
	switch cmd {
	case v2CmdLocal:
		// The receiver must ignore the family and addresses of a LOCAL
		// header (the load balancer's own health check).
	case v2CmdProxy:
		if fam > famUnix || proto > protoDgram {
			return Header{}, fmt.Errorf("%w: v2 family/transport byte %#02x", ErrMalformed, famProto)
		}
		if length < addrLen[fam] {
			return Header{}, fmt.Errorf("%w: v2 payload of %d bytes, shorter than the %d of the family's addresses",
				ErrMalformed, length, addrLen[fam])
		}
	default:
		return Header{}, fmt.Errorf("%w: v2 command %#x", ErrMalformed, cmd)
	}
	if length > MaxV2Length {
		return Header{}, fmt.Errorf("%w: v2 payload of %d bytes, more than %d", ErrTooLong, length, MaxV2Length)
	}

	var buf [MaxV2Length]byte
	payload := buf[:length]
	if err := readFull(r, payload); err != nil {
		return Header{}, fmt.Errorf("proxyproto: reading v2 payload of %d bytes: %w", length, err)
	}
	if cmd == v2CmdLocal {
		return Header{Version: 2, Local: true}, nil
	}
	if err := checkTLVs(payload[addrLen[fam]:]); err != nil {
		return Header{}, err
	}

	h := Header{Version: 2}
	if proto != protoStream || (fam != famInet && fam != famInet6) {
		// UNSPEC, UDP or AF_UNIX: nothing a TCP peer can be replaced with.
		h.Local = true
		return h, nil
	}
	n := addrLen[fam]/2 - 2 // bytes of one address
	src, _ := netip.AddrFromSlice(payload[:n])
	dst, _ := netip.AddrFromSlice(payload[n : 2*n])
	sport := binary.BigEndian.Uint16(payload[2*n:])
	dport := binary.BigEndian.Uint16(payload[2*n+2:])
	h.Source, h.Dest = unmapPair(netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport))
	return h, nil
}

// checkTLVs checks that b is a sequence of whole TLVs: a type byte, a
// 2-byte big-endian length, that many bytes of value. Types are not
// checked, so unknown ones are skipped.
func checkTLVs(b []byte) error {
	for len(b) > 0 {
		if len(b) < 3 {
			return fmt.Errorf("%w: %d trailing bytes after the v2 TLVs", ErrMalformed, len(b))
		}
		n := int(binary.BigEndian.Uint16(b[1:3]))
		if 3+n > len(b) {
			return fmt.Errorf("%w: v2 TLV type %#02x of %d bytes overruns the payload", ErrMalformed, b[0], n)
		}
		b = b[3+n:]
	}
	return nil
}
