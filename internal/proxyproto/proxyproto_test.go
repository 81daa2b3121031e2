package proxyproto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// The spec's longest v1 line: 107 bytes.
var maxV1 = "PROXY UNKNOWN " + rep("ffff:", 7) + "ffff " + rep("ffff:", 7) + "ffff 65535 65535\r\n"

var validCases = []struct {
	name string
	in   []byte
	want Header
}{
	{"v1 TCP4", []byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n"),
		Header{Version: 1, Source: ap("192.0.2.1:56324"), Dest: ap("198.51.100.2:25")}},
	{"v1 TCP4 port bounds", []byte("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"),
		Header{Version: 1, Source: ap("0.0.0.0:0"), Dest: ap("255.255.255.255:65535")}},
	{"v1 TCP6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n"),
		Header{Version: 1, Source: ap("[2001:db8::1]:65535"), Dest: ap("[2001:db8::2]:0")}},
	{"v1 TCP6 full form", []byte("PROXY TCP6 2001:0db8:0000:0000:0000:0000:0000:0001 ::1 1 2\r\n"),
		Header{Version: 1, Source: ap("[2001:db8::1]:1"), Dest: ap("[::1]:2")}},
	{"v1 TCP6 both mapped", []byte("PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.2 1 25\r\n"),
		Header{Version: 1, Source: ap("192.0.2.1:1"), Dest: ap("198.51.100.2:25")}},
	{"v1 TCP6 one mapped", []byte("PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 25\r\n"),
		Header{Version: 1, Source: ap("[::ffff:192.0.2.1]:1"), Dest: ap("[2001:db8::2]:25")}},
	{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), Header{Version: 1, Local: true}},
	{"v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN 192.0.2.1 198.51.100.2 1 2\r\n"), Header{Version: 1, Local: true}},
	{"v1 UNKNOWN with junk", []byte("PROXY UNKNOWN \x00\xff  anything\r\n"), Header{Version: 1, Local: true}},
	{"v1 longest line", []byte(maxV1), Header{Version: 1, Local: true}},

	{"v2 PROXY TCP4", v2(0x21, 0x11, addrs("192.0.2.1:56324", "198.51.100.2:25")),
		Header{Version: 2, Source: ap("192.0.2.1:56324"), Dest: ap("198.51.100.2:25")}},
	{"v2 PROXY TCP6", v2(0x21, 0x21, addrs("[2001:db8::1]:65535", "[2001:db8::2]:0")),
		Header{Version: 2, Source: ap("[2001:db8::1]:65535"), Dest: ap("[2001:db8::2]:0")}},
	{"v2 PROXY TCP6 both mapped", v2(0x21, 0x21, addrs("[::ffff:192.0.2.1]:1", "[::ffff:198.51.100.2]:25")),
		Header{Version: 2, Source: ap("192.0.2.1:1"), Dest: ap("198.51.100.2:25")}},
	{"v2 PROXY TCP4 with TLVs", v2(0x21, 0x11, addrs("192.0.2.1:1", "198.51.100.2:25"),
		tlv(0x01, "smtp"), tlv(0x02, "mx.example"), tlv(0x05, "unique-id-1234"),
		tlv(0x20, "\x07\x00\x00\x00\x00"+string(tlv(0x21, "TLSv1.3"))), tlv(0x04, ""), tlv(0xe0, "custom")),
		Header{Version: 2, Source: ap("192.0.2.1:1"), Dest: ap("198.51.100.2:25")}},
	{"v2 PROXY TCP6 with TLV", v2(0x21, 0x21, addrs("[2001:db8::1]:1", "[2001:db8::2]:25"), tlv(0x03, "\x01\x02\x03\x04")),
		Header{Version: 2, Source: ap("[2001:db8::1]:1"), Dest: ap("[2001:db8::2]:25")}},
	{"v2 longest payload", v2(0x21, 0x11, addrs("192.0.2.1:1", "198.51.100.2:25"), tlv(0x04, rep("x", MaxV2Length-12-3))),
		Header{Version: 2, Source: ap("192.0.2.1:1"), Dest: ap("198.51.100.2:25")}},
	{"v2 LOCAL", v2(0x20, 0x00), Header{Version: 2, Local: true}},
	{"v2 LOCAL with addresses", v2(0x20, 0x11, addrs("127.0.0.1:1", "127.0.0.1:25")), Header{Version: 2, Local: true}},
	{"v2 LOCAL ignores family", v2(0x20, 0xff, []byte("xyz")), Header{Version: 2, Local: true}},
	{"v2 PROXY UNSPEC", v2(0x21, 0x00), Header{Version: 2, Local: true}},
	{"v2 PROXY UNSPEC with TLV", v2(0x21, 0x00, tlv(0x05, "id")), Header{Version: 2, Local: true}},
	{"v2 PROXY UDP4", v2(0x21, 0x12, addrs("192.0.2.1:1", "198.51.100.2:53")), Header{Version: 2, Local: true}},
	{"v2 PROXY UDP6", v2(0x21, 0x22, addrs("[2001:db8::1]:1", "[2001:db8::2]:53")), Header{Version: 2, Local: true}},
	{"v2 PROXY INET unspecified transport", v2(0x21, 0x10, addrs("192.0.2.1:1", "198.51.100.2:53")), Header{Version: 2, Local: true}},
	{"v2 PROXY UNIX stream", v2(0x21, 0x31, zeros(216)), Header{Version: 2, Local: true}},
	{"v2 PROXY UNIX dgram with TLV", v2(0x21, 0x32, zeros(216), tlv(0x01, "h2")), Header{Version: 2, Local: true}},
}

// TestReadValid reads each header followed by SMTP bytes, whole and one
// byte per Read call, and checks that exactly the header was consumed.
func TestReadValid(t *testing.T) {
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for _, tc := range validCases {
		for rname, wrap := range readers {
			t.Run(tc.name+"/"+rname, func(t *testing.T) {
				r := wrap(strings.NewReader(string(tc.in) + smtp))
				cr := &countingReader{r: r}
				h, err := Read(cr)
				require.NoError(t, err)
				require.Equal(t, tc.want, h)
				require.Equal(t, len(tc.in), cr.n, "bytes consumed")
				rest, err := io.ReadAll(r)
				require.NoError(t, err)
				require.Equal(t, smtp, string(rest), "the bytes after the header")
			})
		}
		t.Run(tc.name+"/EOF with last data", func(t *testing.T) {
			h, err := Read(iotest.DataErrReader(bytes.NewReader(tc.in)))
			require.NoError(t, err)
			require.Equal(t, tc.want, h)
		})
	}
}

func TestReadInvalid(t *testing.T) {
	sig := string(v2Signature)
	a4 := addrs("192.0.2.1:1", "198.51.100.2:25")
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"SMTP command", "EHLO client.example\r\n", ErrNoHeader},
		{"HTTP", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrNoHeader},
		{"lower-case proxy", "proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n", ErrNoHeader},
		{"TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00", ErrNoHeader},
		{"leading space", " PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n", ErrNoHeader},

		{"v2 bad signature tail", sig[:11] + "X\x21\x11\x00\x0c" + string(a4), ErrMalformed},
		{"v2 signature start only", "\r\n\r\nQUIT\r\nabcd", ErrMalformed},
		{"v2 version 1", string(v2(0x11, 0x11, a4)), ErrMalformed},
		{"v2 version 3", string(v2(0x31, 0x11, a4)), ErrMalformed},
		{"v2 version 0", string(v2(0x01, 0x11, a4)), ErrMalformed},
		{"v2 command 2", string(v2(0x22, 0x11, a4)), ErrMalformed},
		{"v2 command 15", string(v2(0x2f, 0x11, a4)), ErrMalformed},
		{"v2 family 4", string(v2(0x21, 0x41, a4)), ErrMalformed},
		{"v2 family 15", string(v2(0x21, 0xf1, a4)), ErrMalformed},
		{"v2 transport 3", string(v2(0x21, 0x13, a4)), ErrMalformed},
		{"v2 TCP4 short payload", string(v2(0x21, 0x11, a4[:11])), ErrMalformed},
		{"v2 TCP4 empty payload", string(v2(0x21, 0x11)), ErrMalformed},
		{"v2 TCP6 with TCP4 payload", string(v2(0x21, 0x21, a4)), ErrMalformed},
		{"v2 UDP6 short payload", string(v2(0x21, 0x22, zeros(35))), ErrMalformed},
		{"v2 UNIX short payload", string(v2(0x21, 0x31, zeros(215))), ErrMalformed},
		{"v2 TLV overruns", string(v2(0x21, 0x11, a4, []byte{0x01, 0x00, 0x0a, 'h', '2'})), ErrMalformed},
		{"v2 TLV truncated header", string(v2(0x21, 0x11, a4, []byte{0x04, 0x00})), ErrMalformed},
		{"v2 TLV one trailing byte", string(v2(0x21, 0x11, a4, tlv(0x04, "x"), []byte{0})), ErrMalformed},

		{"v1 no space after PROXY", "PROXYTCP4 192.0.2.1 198.51.100.2 1 2\r\n", ErrMalformed},
		{"v1 double space after PROXY", "PROXY  TCP4 192.0.2.1 198.51.100.2 1 2\r\n", ErrMalformed},
		{"v1 double space between", "PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n", ErrMalformed},
		{"v1 tab", "PROXY TCP4 192.0.2.1\t198.51.100.2 1 2\r\n", ErrMalformed},
		{"v1 trailing space", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n", ErrMalformed},
		{"v1 too few fields", "PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n", ErrMalformed},
		{"v1 too many fields", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n", ErrMalformed},
		{"v1 bare LF", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n", ErrMalformed},
		{"v1 bare CR inside", "PROXY TCP4 192.0.2.1\r198.51.100.2 1 2\r\n", ErrMalformed},
		{"v1 CR CR LF", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\r\n", ErrMalformed},
		{"v1 UNKNOWN bare LF", "PROXY UNKNOWN\n" + smtp, ErrMalformed},
		{"v1 UNKNOWN with bare CR", "PROXY UNKNOWN a\rb\r\n", ErrMalformed},
		{"v1 UNKNOWN glued", "PROXY UNKNOWNX\r\n", ErrMalformed},
		{"v1 LF in first 12 bytes", "PROXY TCP4\r\n" + smtp, ErrMalformed},
		{"v1 short line", "PROXY \r\n" + smtp, ErrMalformed},
		{"v1 protocol lower case", "PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n", ErrMalformed},
		{"v1 protocol UDP4", "PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n", ErrMalformed},
		{"v1 port 65536", "PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n", ErrMalformed},
		{"v1 port 99999", "PROXY TCP4 192.0.2.1 198.51.100.2 1 99999\r\n", ErrMalformed},
		{"v1 port +1", "PROXY TCP4 192.0.2.1 198.51.100.2 +1 25\r\n", ErrMalformed},
		{"v1 port -1", "PROXY TCP4 192.0.2.1 198.51.100.2 -1 25\r\n", ErrMalformed},
		{"v1 port 01", "PROXY TCP4 192.0.2.1 198.51.100.2 01 25\r\n", ErrMalformed},
		{"v1 port 00", "PROXY TCP4 192.0.2.1 198.51.100.2 1 00\r\n", ErrMalformed},
		{"v1 port 6 digits", "PROXY TCP4 192.0.2.1 198.51.100.2 1 000025\r\n", ErrMalformed},
		{"v1 port hex", "PROXY TCP4 192.0.2.1 198.51.100.2 0x19 25\r\n", ErrMalformed},
		{"v1 IPv6 in TCP4", "PROXY TCP4 2001:db8::1 198.51.100.2 1 25\r\n", ErrMalformed},
		{"v1 mapped IPv6 in TCP4", "PROXY TCP4 192.0.2.1 ::ffff:198.51.100.2 1 25\r\n", ErrMalformed},
		{"v1 IPv4 in TCP6", "PROXY TCP6 2001:db8::1 198.51.100.2 1 25\r\n", ErrMalformed},
		{"v1 IPv4 leading zero", "PROXY TCP4 192.0.2.01 198.51.100.2 1 25\r\n", ErrMalformed},
		{"v1 IPv4 three parts", "PROXY TCP4 192.0.2 198.51.100.2 1 25\r\n", ErrMalformed},
		{"v1 IPv6 zone", "PROXY TCP6 fe80::1%eth0 2001:db8::2 1 25\r\n", ErrMalformed},
		{"v1 IPv6 brackets", "PROXY TCP6 [2001:db8::1] 2001:db8::2 1 25\r\n", ErrMalformed},
		{"v1 host name", "PROXY TCP4 localhost 198.51.100.2 1 25\r\n", ErrMalformed},
		{"v1 NUL", "PROXY TCP4 192.0.2.1\x00198.51.100.2 1 25\r\n", ErrMalformed},

		{"v1 108 bytes", maxV1[:105] + "5\r\n", ErrTooLong},
		{"v1 no CRLF", "PROXY TCP4 " + rep("1", 200), ErrTooLong},
		{"v2 length 513", string(v2Len(0x21, 0x11, MaxV2Length+1, nil)) + rep("x", 600), ErrTooLong},
		{"v2 length 65535", string(v2Len(0x21, 0x21, 0xffff, nil)) + rep("x", 600), ErrTooLong},
		{"v2 LOCAL length 1000", string(v2Len(0x20, 0x00, 1000, nil)) + rep("x", 600), ErrTooLong},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, wrap := range []func(io.Reader) io.Reader{
				func(r io.Reader) io.Reader { return r }, iotest.OneByteReader,
			} {
				cr := &countingReader{r: wrap(strings.NewReader(tc.in))}
				h, err := Read(cr)
				require.ErrorIs(t, err, tc.want)
				for _, other := range []error{ErrNoHeader, ErrMalformed, ErrTooLong, io.EOF, io.ErrUnexpectedEOF} {
					if other != tc.want {
						require.NotErrorIs(t, err, other)
					}
				}
				require.Equal(t, Header{}, h)
				if strings.HasPrefix(tc.in, string(v2Signature)) {
					require.LessOrEqual(t, cr.n, 16+MaxV2Length)
				} else {
					require.LessOrEqual(t, cr.n, MaxV1Length)
				}
			}
		})
	}
}

// TestReadTooLongLeavesPayload checks that an over-long v2 header is
// refused after its 16 fixed bytes and a v1 line after MaxV1Length bytes.
func TestReadTooLongLeavesPayload(t *testing.T) {
	for _, length := range []int{MaxV2Length + 1, 4096, 0xffff} {
		in := string(v2Len(0x21, 0x11, length, nil)) + rep("p", length)
		cr := &countingReader{r: strings.NewReader(in)}
		_, err := Read(cr)
		require.ErrorIs(t, err, ErrTooLong)
		require.Equal(t, 16, cr.n, "length %d", length)
	}

	cr := &countingReader{r: strings.NewReader("PROXY UNKNOWN " + rep("x", 500) + "\r\n")}
	_, err := Read(cr)
	require.ErrorIs(t, err, ErrTooLong)
	require.Equal(t, MaxV1Length, cr.n)
}

// TestReadEOF checks that a stream ending before or within the header
// gives the reader's error, not one of the package's.
func TestReadEOF(t *testing.T) {
	full := [][]byte{
		[]byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		v2(0x21, 0x11, addrs("192.0.2.1:1", "198.51.100.2:25"), tlv(0x01, "smtp")),
		v2(0x20, 0x00),
	}
	_, err := Read(strings.NewReader(""))
	require.ErrorIs(t, err, io.EOF)
	require.NotErrorIs(t, err, io.ErrUnexpectedEOF)
	for _, in := range full {
		for n := 1; n < len(in); n++ {
			_, err := Read(strings.NewReader(string(in[:n])))
			require.ErrorIs(t, err, io.ErrUnexpectedEOF, "%q", in[:n])
			for _, e := range []error{ErrNoHeader, ErrMalformed, ErrTooLong} {
				require.NotErrorIs(t, err, e)
			}
		}
	}
}

// TestReadReaderError checks that a reader's own error is passed through.
func TestReadReaderError(t *testing.T) {
	boom := errors.New("boom")
	for _, in := range []string{"", "PROXY TCP4 1", string(v2Signature), string(v2Len(0x21, 0x11, 12, zeros(5)))} {
		_, err := Read(io.MultiReader(strings.NewReader(in), iotest.ErrReader(boom)))
		require.ErrorIs(t, err, boom, "%q", in)
	}
}

func TestEncode(t *testing.T) {
	h4 := Header{Source: ap("192.0.2.1:56324"), Dest: ap("198.51.100.2:25")}
	h6 := Header{Source: ap("[2001:db8::1]:1"), Dest: ap("[2001:db8::2]:25")}
	with := func(h Header, v int) Header { h.Version = v; return h }

	require.Equal(t, "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n", string(with(h4, 1).Encode()))
	require.Equal(t, "PROXY TCP6 2001:db8::1 2001:db8::2 1 25\r\n", string(with(h6, 1).Encode()))
	require.Equal(t, "PROXY UNKNOWN\r\n", string(Header{Version: 1, Local: true}.Encode()))
	require.Equal(t, "PROXY UNKNOWN\r\n", string(Header{Version: 1}.Encode()))
	require.Equal(t, v2(0x21, 0x11, addrs("192.0.2.1:56324", "198.51.100.2:25")), with(h4, 2).Encode())
	require.Equal(t, v2(0x21, 0x21, addrs("[2001:db8::1]:1", "[2001:db8::2]:25")), with(h6, 2).Encode())
	require.Equal(t, v2(0x20, 0x00), Header{Version: 2, Local: true}.Encode())
	require.Equal(t, v2(0x21, 0x00), Header{Version: 2}.Encode())
	require.Equal(t, v2(0x21, 0x11, addrs("192.0.2.1:56324", "198.51.100.2:25")), h4.Encode(), "Version 0 is v2")
}

// TestEncodeRoundTrip checks that Read gives back what Encode wrote, up to
// the normalisation of mapped addresses and zones.
func TestEncodeRoundTrip(t *testing.T) {
	tests := []struct{ in, want Header }{
		{Header{Source: ap("192.0.2.1:56324"), Dest: ap("198.51.100.2:25")}, Header{}},
		{Header{Source: ap("[2001:db8::1]:0"), Dest: ap("[::]:65535")}, Header{}},
		{Header{Source: ap("0.0.0.0:0"), Dest: ap("255.255.255.255:65535")}, Header{}},
		{Header{Local: true}, Header{}},
		{Header{Source: ap("[::ffff:192.0.2.1]:1"), Dest: ap("[::ffff:198.51.100.2]:25")},
			Header{Source: ap("192.0.2.1:1"), Dest: ap("198.51.100.2:25")}},
		{Header{Source: ap("192.0.2.1:1"), Dest: ap("[2001:db8::2]:25")},
			Header{Source: ap("[::ffff:192.0.2.1]:1"), Dest: ap("[2001:db8::2]:25")}},
		{Header{Source: ap("[fe80::1%eth0]:1"), Dest: ap("[fe80::2]:25")},
			Header{Source: ap("[fe80::1]:1"), Dest: ap("[fe80::2]:25")}},
		{Header{Source: ap("192.0.2.1:1")}, Header{Local: true}},
		{Header{Local: true, Source: ap("192.0.2.1:1"), Dest: ap("198.51.100.2:25")}, Header{Local: true}},
	}
	for _, tc := range tests {
		for _, v := range []int{1, 2} {
			in, want := tc.in, tc.want
			in.Version = v
			if want == (Header{}) {
				want = tc.in
			}
			want.Version = v
			b := in.Encode()
			cr := &countingReader{r: strings.NewReader(string(b) + smtp)}
			got, err := Read(cr)
			require.NoError(t, err, "%q", b)
			require.Equal(t, want, got, "%q", b)
			require.Equal(t, len(b), cr.n)
		}
	}
}
