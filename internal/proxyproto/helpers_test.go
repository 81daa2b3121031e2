package proxyproto

import (
	"encoding/binary"
	"io"
	"net/netip"
	"strings"
)

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// v2 builds a v2 header from its 13th and 14th bytes and its payload,
// whose length it puts in the length field.
func v2(verCmd, famProto byte, payload ...[]byte) []byte {
	var p []byte
	for _, b := range payload {
		p = append(p, b...)
	}
	return v2Len(verCmd, famProto, len(p), p)
}

// v2Len is v2 with a length field that need not be the payload's.
func v2Len(verCmd, famProto byte, length int, payload []byte) []byte {
	b := append([]byte(nil), v2Signature...)
	b = append(b, verCmd, famProto)
	b = binary.BigEndian.AppendUint16(b, uint16(length))
	return append(b, payload...)
}

// addrs is the address block of src and dst (AF_INET or AF_INET6).
func addrs(src, dst string) []byte {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	b := append(s.Addr().AsSlice(), d.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, s.Port())
	return binary.BigEndian.AppendUint16(b, d.Port())
}

// tlv is one TLV.
func tlv(typ byte, value string) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint16(b, uint16(len(value)))
	return append(b, value...)
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func zeros(n int) []byte { return make([]byte, n) }

func rep(s string, n int) string { return strings.Repeat(s, n) }

// smtp stands for the bytes that follow a header on the connection.
const smtp = "EHLO client.example\r\nMAIL FROM:<a@b>\r\n"
