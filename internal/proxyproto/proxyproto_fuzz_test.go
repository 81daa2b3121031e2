package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// errClass names the class of a Read error, "" for none.
func errClass(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{
		{ErrNoHeader, "no header"}, {ErrMalformed, "malformed"}, {ErrTooLong, "too long"},
		{io.ErrUnexpectedEOF, "unexpected EOF"}, {io.EOF, "EOF"},
	} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

func FuzzRead(f *testing.F) {
	for _, tc := range validCases {
		f.Add(tc.in)
		f.Add(append(append([]byte(nil), tc.in...), smtp...))
	}
	a4 := addrs("192.0.2.1:1", "198.51.100.2:25")
	for _, s := range [][]byte{
		nil,
		[]byte("EHLO client.example\r\n"),
		[]byte("PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n"),
		[]byte("PROXY TCP4 192.0.2.1 198.51.100.2 01 25\r\n"),
		[]byte("PROXY TCP4 2001:db8::1 198.51.100.2 1 25\r\n"),
		[]byte("PROXY TCP6 fe80::1%eth0 2001:db8::2 1 25\r\n"),
		[]byte("PROXY  TCP4 192.0.2.1 198.51.100.2 1 2\r\n"),
		[]byte("PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n"),
		[]byte("PROXY UNKNOWN " + rep("x", 200)),
		[]byte("PROXY TCP4\r\n" + smtp),
		[]byte("\r\n\r\nQUIT\r\nabcd"),
		v2(0x11, 0x11, a4),
		v2(0x22, 0x11, a4),
		v2(0x21, 0x41, a4),
		v2(0x21, 0x11, a4[:11]),
		v2(0x21, 0x11, a4, []byte{0x01, 0x00, 0x0a, 'h'}),
		v2Len(0x21, 0x11, MaxV2Length+1, []byte(rep("x", 600))),
		v2Len(0x20, 0x00, 0xffff, nil),
	} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, in []byte) {
		cr := &countingReader{r: bytes.NewReader(in)}
		h, err := Read(cr)
		limit := MaxV1Length
		if bytes.HasPrefix(in, v2Signature) {
			limit = 16 + MaxV2Length
		}
		if cr.n > limit {
			t.Fatalf("consumed %d bytes, more than %d", cr.n, limit)
		}

		// One byte per Read call changes nothing.
		cr1 := &countingReader{r: iotest.OneByteReader(bytes.NewReader(in))}
		h1, err1 := Read(cr1)
		if h1 != h || errClass(err1) != errClass(err) || cr1.n != cr.n {
			t.Fatalf("one byte at a time: %+v, %v, %d bytes; whole: %+v, %v, %d bytes", h1, err1, cr1.n, h, err, cr.n)
		}

		if err != nil {
			if c := errClass(err); c != "no header" && c != "malformed" && c != "too long" && c != "EOF" && c != "unexpected EOF" {
				t.Fatalf("unexpected error %v", err)
			}
			if h != (Header{}) {
				t.Fatalf("error %v with header %+v", err, h)
			}
			return
		}

		switch h.Version {
		case 1:
			if !bytes.HasPrefix(in, []byte("PROXY ")) || !bytes.HasSuffix(in[:cr.n], []byte("\r\n")) {
				t.Fatalf("v1 header %q consumed as %q", in, in[:cr.n])
			}
		case 2:
			if want := 16 + int(binary.BigEndian.Uint16(in[14:16])); cr.n != want {
				t.Fatalf("v2 header consumed %d bytes, announced %d", cr.n, want)
			}
		default:
			t.Fatalf("version %d", h.Version)
		}
		if h.Local {
			if h.Source.IsValid() || h.Dest.IsValid() {
				t.Fatalf("local header with addresses: %+v", h)
			}
		} else {
			s, d := h.Source.Addr(), h.Dest.Addr()
			if !h.Source.IsValid() || !h.Dest.IsValid() || s.Is4() != d.Is4() {
				t.Fatalf("addresses not valid or of different families: %+v", h)
			}
			if s.Zone() != "" || d.Zone() != "" || (s.Is4In6() && d.Is4In6()) {
				t.Fatalf("zone or mapped pair: %+v", h)
			}
		}

		// Read does not need the bytes after the header.
		if h2, err := Read(bytes.NewReader(in[:cr.n])); err != nil || h2 != h {
			t.Fatalf("reading just the %d consumed bytes: %+v, %v; want %+v", cr.n, h2, err, h)
		}

		// Encode round-trips.
		enc := h.Encode()
		cr2 := &countingReader{r: bytes.NewReader(enc)}
		h2, err := Read(cr2)
		if err != nil || h2 != h || cr2.n != len(enc) {
			t.Fatalf("Read(Encode(%+v)) = %+v, %v after %d of %d bytes (%q)", h, h2, err, cr2.n, len(enc), enc)
		}
	})
}
