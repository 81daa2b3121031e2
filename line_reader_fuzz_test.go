package smtpd

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// chunkReader returns data in reads of at most size bytes (all of it at once when
// size is 0), as a connection delivers what a client wrote in pieces.
type chunkReader struct {
	data []byte
	size int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if r.size > 0 {
		n = min(n, r.size)
	}
	n = copy(p[:n], r.data)
	r.data = r.data[n:]
	return n, nil
}

// FuzzLineReader feeds arbitrary bytes to a lineReader in memory (no server, no
// connection), in reads of 1 to 255 bytes or all at once, with arbitrary max
// (IOBufferMaxSize) and soft limits, and checks readLine's contract call by call:
//   - it never panics, and it ends: each call consumes input or ends the stream;
//   - a returned line is the input's next line exactly: its bytes up to and with
//     the first LF, and no longer than soft or max;
//   - errSoftLimit drops exactly one whole line, longer than soft and not than
//     max; errLineLimit comes only for a line (or unfinished input) longer than
//     max, and ends the reading; io.ErrUnexpectedEOF only for input that ends
//     without LF, io.EOF only at the end of the input;
//   - so the returned lines and the dropped ones, in order, are exactly the input
//     read so far;
//   - memory stays bounded: the gathering buffer never holds more than max bytes,
//     and its capacity stays within what append makes of that.
func FuzzLineReader(f *testing.F) {
	long := func(n int, end string) string { return strings.Repeat("x", n-len(end)) + end }
	for _, seed := range []struct {
		in        string
		max, soft uint16
		chunk     uint8
		what      string
	}{
		{"", 512, 512, 0, "empty"},
		{"a\r\nb\nc", 512, 512, 0, "CRLF, bare LF, unfinished"},
		{"\n\n\r\n\r", 16, 4, 1, "empty lines, one-byte reads"},
		{"a\rb\r\n", 512, 512, 3, "bare CR inside"},
		{long(4096, "\r\n") + "ok\n", 8192, 8192, 0, "a line of exactly one buffer"},
		{long(5000, "\r\n") + long(9000, "\n") + "z\r\n", 20000, 12000, 200, "gathered lines"},
		{long(3000, "\n") + "short\n" + long(700, "\n"), 4000, 1000, 64, "soft limit, then on"},
		{long(600, "\n") + "never read\n", 512, 512, 0, "over max: the end"},
		{long(600, "\n"), 512, 100, 7, "over max, soft below"},
		{long(9000, ""), 4096, 4096, 0, "unfinished over max"},
		{long(9000, "\n") + "after\n", 8192, 8192, 255, "over max, gathered"},
		{"abcdefgh\r\nabcdefghi\r\n", 10, 10, 0, "max below bufio's minimum"},
	} {
		f.Add([]byte(seed.in), seed.max, seed.soft, seed.chunk)
	}
	f.Fuzz(func(t *testing.T, in []byte, max, soft uint16, chunk uint8) {
		if max == 0 {
			max = 1
		}
		lr := newLineReader(&chunkReader{data: in, size: int(chunk)}, int(max))
		pos := 0 // the input before pos is accounted for: returned or dropped
		for calls := 0; ; calls++ {
			require.LessOrEqual(t, calls, len(in)+1, "readLine does not end")
			line, err := lr.readLine(int(soft))
			rest := in[pos:]
			lf := bytes.IndexByte(rest, '\n') // the next line is rest[:lf+1]
			require.LessOrEqual(t, len(lr.long), int(max), "the gathering buffer holds more than max")
			require.LessOrEqual(t, cap(lr.long), 2*int(max)+readBufferSize, "the gathering buffer's capacity")
			switch {
			case err == nil:
				require.GreaterOrEqual(t, lf, 0, "a line returned from input with no LF left: %q", line)
				require.Equal(t, rest[:lf+1], line, "the line returned at offset %d", pos)
				require.LessOrEqual(t, len(line), int(soft), "a returned line is at most soft")
				require.LessOrEqual(t, len(line), int(max), "a returned line is at most max")
				pos += len(line)
			case errors.Is(err, errSoftLimit):
				require.Nil(t, line)
				require.GreaterOrEqual(t, lf, 0, "errSoftLimit without a line end at offset %d", pos)
				n := lf + 1
				require.Greater(t, n, int(soft), "errSoftLimit for a line of %d bytes", n)
				require.LessOrEqual(t, n, int(max), "errSoftLimit for a line over max (%d bytes)", n)
				pos += n
			case errors.Is(err, errLineLimit):
				require.Nil(t, line)
				n := len(rest) // unfinished input
				if lf >= 0 {
					n = lf + 1
				}
				require.Greater(t, n, int(max), "errLineLimit for a line of %d bytes", n)
				return // the connection cannot go on
			case errors.Is(err, io.ErrUnexpectedEOF):
				require.Nil(t, line)
				require.Negative(t, lf, "io.ErrUnexpectedEOF with a line end left at offset %d", pos)
				require.NotEmpty(t, rest, "io.ErrUnexpectedEOF with no input left")
				return
			case errors.Is(err, io.EOF):
				require.Nil(t, line)
				require.Empty(t, rest, "io.EOF before the end of the input")
				return
			default:
				require.Failf(t, "unexpected error", "%v", err)
			}
		}
	})
}
