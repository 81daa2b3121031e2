package smtpd

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// crlfReadAll reads every line from lr until an error and returns the lines (copied)
// and the error that ended the reading.
func crlfReadAll(t *testing.T, lr *lineReader) ([]string, error) {
	t.Helper()
	var lines []string
	for i := 0; i < 100000; i++ {
		line, err := lr.readLine(lr.max)
		if err != nil {
			return lines, err
		}
		lines = append(lines, string(line))
	}
	require.FailNow(t, "readLine never ended")
	return nil, nil
}

func TestCRLFLineReader(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n-2) + "\r\n" }
	tests := []struct {
		name    string
		max     int
		input   string
		want    []string
		wantErr error
	}{
		{name: "empty input", max: 512, input: "", wantErr: io.EOF},
		{name: "crlf lines", max: 512, input: "a\r\nb\r\n", want: []string{"a\r\n", "b\r\n"}, wantErr: io.EOF},
		{name: "bare lf lines", max: 512, input: "a\nb\n", want: []string{"a\n", "b\n"}, wantErr: io.EOF},
		{name: "bare cr is not a line end", max: 512, input: "a\rb\r\n", want: []string{"a\rb\r\n"}, wantErr: io.EOF},
		{name: "empty lines", max: 512, input: "\r\n\n\r\n", want: []string{"\r\n", "\n", "\r\n"}, wantErr: io.EOF},
		{name: "eof mid-line", max: 512, input: "a\r\nbc", want: []string{"a\r\n"}, wantErr: io.ErrUnexpectedEOF},
		{name: "eof after cr", max: 512, input: "a\r", wantErr: io.ErrUnexpectedEOF},
		{name: "exactly max (buffer = max)", max: 512, input: long(512), want: []string{long(512)}, wantErr: io.EOF},
		{name: "max+1 (buffer = max)", max: 512, input: long(513), wantErr: errLineLimit},
		{name: "max+1 bare lf", max: 512, input: strings.Repeat("y", 512) + "\n", wantErr: errLineLimit},
		{name: "exactly max 4096", max: 4096, input: long(4096), want: []string{long(4096)}, wantErr: io.EOF},
		{name: "max+1 4096", max: 4096, input: long(4097), wantErr: errLineLimit},
		{name: "over buffer, under max", max: 1 << 20, input: long(4097) + long(10000) + "z\r\n",
			want: []string{long(4097), long(10000), "z\r\n"}, wantErr: io.EOF},
		{name: "exactly max over buffer", max: 10000, input: long(10000), want: []string{long(10000)}, wantErr: io.EOF},
		{name: "max+1 over buffer", max: 10000, input: long(10001), wantErr: errLineLimit},
		{name: "three buffers", max: 20000, input: long(3*4096 + 1), want: []string{long(3*4096 + 1)}, wantErr: io.EOF},
		{name: "eof mid long line", max: 1 << 20, input: strings.Repeat("x", 9000), wantErr: io.ErrUnexpectedEOF},
		{name: "long line then eof mid-line", max: 1 << 20, input: long(5000) + "abc",
			want: []string{long(5000)}, wantErr: io.ErrUnexpectedEOF},
		{name: "short line after long line", max: 1 << 20, input: long(8192) + "a\r\n" + long(4096),
			want: []string{long(8192), "a\r\n", long(4096)}, wantErr: io.EOF},
		{name: "max below bufio minimum", max: 10, input: "abcdefgh\r\nabcdefghi\r\n",
			want: []string{"abcdefgh\r\n"}, wantErr: errLineLimit},
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte reads", iotest.OneByteReader},
		{"half reads", iotest.HalfReader},
		{"data with eof", iotest.DataErrReader},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				lr := newLineReader(rd.wrap(strings.NewReader(tt.input)), tt.max)
				got, err := crlfReadAll(t, lr)
				require.ErrorIs(t, err, tt.wantErr)
				require.Equal(t, tt.want, got)
			})
		}
	}
}

// TestCRLFLineReaderBufferBounded checks that the read buffer never exceeds 4096
// bytes nor max (IOBufferMaxSize), and that a refused line gives its memory back.
func TestCRLFLineReaderBufferBounded(t *testing.T) {
	for _, tt := range []struct{ max, size int }{{512, 512}, {1000, 1000}, {4096, 4096}, {1 << 20, 4096}, {8, 16}} {
		lr := newLineReader(strings.NewReader(""), tt.max)
		require.Equal(t, tt.size, lr.buf().Size(), "max %d", tt.max)
	}
	lr := newLineReader(strings.NewReader(strings.Repeat("x", 20000)+"\r\n"), 10000)
	_, err := lr.readLine(lr.max)
	require.ErrorIs(t, err, errLineLimit)
	require.Nil(t, lr.long, "the gathered long line is released after errLineLimit")
}

// TestCRLFLineReaderSliceReuse documents that a long line's slice is reused: the
// caller must copy what it keeps, and the next long line must not be corrupted by
// the previous one.
func TestCRLFLineReaderSliceReuse(t *testing.T) {
	a := strings.Repeat("a", 6000) + "\r\n"
	b := strings.Repeat("b", 5000) + "\r\n"
	lr := newLineReader(strings.NewReader(a+b), 1<<20)
	first, err := lr.readLine(lr.max)
	require.NoError(t, err)
	require.Equal(t, a, string(first))
	second, err := lr.readLine(lr.max)
	require.NoError(t, err)
	require.Equal(t, b, string(second))
}

type crlfErrReader struct {
	data string
	err  error
	done bool
}

func (r *crlfErrReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, r.err
	}
	r.done = true
	return copy(p, r.data), nil
}

func TestCRLFLineReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	for _, input := range []string{"", "partial", strings.Repeat("x", 5000)} {
		lr := newLineReader(&crlfErrReader{data: input, err: boom}, 1<<20)
		_, err := lr.readLine(lr.max)
		require.ErrorIs(t, err, boom, "input of %d bytes", len(input))
	}
}

func TestCRLFLineReaderHasLineAndDiscard(t *testing.T) {
	// A pipe-like reader: everything written so far is readable in one Read.
	lr := newLineReader(strings.NewReader("EHLO a\r\nMAIL FROM:<a@b>\r\npartial"), 512)
	require.False(t, lr.hasLine(), "nothing buffered before the first read")
	line, err := lr.readLine(lr.max)
	require.NoError(t, err)
	require.Equal(t, "EHLO a\r\n", string(line))
	require.True(t, lr.hasLine(), "MAIL line buffered")
	line, err = lr.readLine(lr.max)
	require.NoError(t, err)
	require.Equal(t, "MAIL FROM:<a@b>\r\n", string(line))
	require.False(t, lr.hasLine(), "a partial line is not a line")
	require.Equal(t, len("partial"), lr.discardBuffered())
	require.Equal(t, 0, lr.discardBuffered())
	_, err = lr.readLine(lr.max)
	require.ErrorIs(t, err, io.EOF)

	lr = newLineReader(strings.NewReader("bare\nx"), 512)
	_, err = lr.readLine(lr.max)
	require.NoError(t, err)
	require.False(t, lr.hasLine())
	lr = newLineReader(strings.NewReader("a\nb\n"), 512)
	_, err = lr.readLine(lr.max)
	require.NoError(t, err)
	require.True(t, lr.hasLine(), "a bare-LF line counts as a line")
}

func TestCRLFSplitLineEnd(t *testing.T) {
	tests := []struct{ line, text, end string }{
		{"", "", ""},
		{"abc", "abc", ""},
		{"abc\r\n", "abc", "\r\n"},
		{"abc\n", "abc", "\n"},
		{"abc\r", "abc\r", ""},
		{"\r\n", "", "\r\n"},
		{"\n", "", "\n"},
		{"\r", "\r", ""},
		{"a\rb\r\n", "a\rb", "\r\n"},
		{"a\r\r\n", "a\r", "\r\n"},
		{".\r\r\n", ".\r", "\r\n"},
		{"\n\n", "\n", "\n"},
		{"a\n\r", "a\n\r", ""},
	}
	for _, tt := range tests {
		text, end := splitLineEnd([]byte(tt.line))
		require.Equal(t, tt.text, string(text), "text of %q", tt.line)
		require.Equal(t, tt.end, string(end), "end of %q", tt.line)
		require.Equal(t, tt.line, string(text)+string(end), "text+end of %q", tt.line)
	}
}

func TestCRLFCommandText(t *testing.T) {
	tests := []struct {
		line      string
		text      string
		strictErr bool
	}{
		{"NOOP\r\n", "NOOP", false},
		{"NOOP\n", "NOOP", true},
		{"NOOP", "NOOP", true},
		{"NOOP\r", "NOOP\r", true},
		{"NO\rOP\r\n", "NO\rOP", true},
		{"NOOP\r\r\n", "NOOP\r", true},
		{"\r\n", "", false},
		{"\n", "", true},
		{"MAIL FROM:<a@b>\r\n", "MAIL FROM:<a@b>", false},
	}
	for _, tt := range tests {
		for _, mode := range []CRLFMode{CRLFEnsure, CRLFLeave, CRLFStrict} {
			text, err := commandText([]byte(tt.line), mode)
			require.Equal(t, tt.text, string(text), "%q in %v", tt.line, mode)
			if mode == CRLFStrict && tt.strictErr {
				require.ErrorIs(t, err, errBareLineEnd, "%q in %v", tt.line, mode)
			} else {
				require.NoError(t, err, "%q in %v", tt.line, mode)
			}
		}
	}
}

func TestCRLFDotLine(t *testing.T) {
	tests := []struct {
		line      string
		afterCRLF bool
		want      bool
	}{
		{".\r\n", true, true},
		{".\r\n", false, false}, // after a bare LF: "\n.\r\n" is data
		{".\n", true, false},
		{".\n", false, false},
		{".\r\r\n", true, false},
		{".\r", true, false},
		{".", true, false},
		{"..\r\n", true, false},
		{". \r\n", true, false},
		{" .\r\n", true, false},
		{"\r\n", true, false},
		{"", true, false},
		{"x\r\n", true, false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, dotLine([]byte(tt.line), tt.afterCRLF), "dotLine(%q, %v)", tt.line, tt.afterCRLF)
	}
}

func TestCRLFParseDataLine(t *testing.T) {
	type want struct{ text, end string }
	tests := []struct {
		line    string
		bare    bool
		isEmpty bool
		ensure  want
		leave   want
	}{
		{"abc\r\n", false, false, want{"abc", "\r\n"}, want{"abc", "\r\n"}},
		{"abc\n", true, false, want{"abc", "\r\n"}, want{"abc", "\n"}},
		{"a\rb\r\n", true, false, want{"a\rb", "\r\n"}, want{"a\rb", "\r\n"}},
		{"a\rb\n", true, false, want{"a\rb", "\r\n"}, want{"a\rb", "\n"}},
		{"\r\n", false, true, want{"", "\r\n"}, want{"", "\r\n"}},
		{"\n", true, true, want{"", "\r\n"}, want{"", "\n"}},
		{"..\r\n", false, false, want{".", "\r\n"}, want{".", "\r\n"}},
		{"..dot\r\n", false, false, want{".dot", "\r\n"}, want{".dot", "\r\n"}},
		{".dot\r\n", false, false, want{"dot", "\r\n"}, want{"dot", "\r\n"}},
		{".\r\n", false, false, want{".", "\r\n"}, want{".", "\r\n"}}, // not a terminator here: kept
		{".\n", true, false, want{".", "\r\n"}, want{".", "\n"}},
		{"..\n", true, false, want{".", "\r\n"}, want{".", "\n"}},
		{".\r\r\n", true, false, want{"\r", "\r\n"}, want{"\r", "\r\n"}},
		{"\r\r\n", true, false, want{"\r", "\r\n"}, want{"\r", "\r\n"}},
		{"x.\r\n", false, false, want{"x.", "\r\n"}, want{"x.", "\r\n"}},
		{"abc", true, false, want{"abc", ""}, want{"abc", ""}},
	}
	for _, tt := range tests {
		for _, mode := range []CRLFMode{CRLFEnsure, CRLFLeave, CRLFStrict} {
			d := parseDataLine([]byte(tt.line), mode)
			w := tt.leave
			if mode == CRLFEnsure {
				w = tt.ensure
			}
			require.Equal(t, w.text, string(d.text), "text of %q in %v", tt.line, mode)
			require.Equal(t, w.end, string(d.end), "end of %q in %v", tt.line, mode)
			require.Equal(t, tt.bare, d.bare, "bare of %q in %v", tt.line, mode)
			require.Equal(t, tt.isEmpty, d.isEmpty, "isEmpty of %q in %v", tt.line, mode)
		}
	}
}

// TestCRLFParseDataLineNoAlias checks that the CRLF end stored by CRLFEnsure is not
// a slice that later appends could overwrite in the shared crlf variable.
func TestCRLFParseDataLineNoAlias(t *testing.T) {
	d := parseDataLine([]byte("abc\n"), CRLFEnsure)
	var buf []byte
	buf = append(buf, d.text...)
	buf = append(buf, d.end...)
	require.Equal(t, "abc\r\n", string(buf))
	require.Equal(t, "\r\n", string(crlf))
	require.True(t, bytes.Equal(d.end, []byte("\r\n")))
}

func TestCRLFModeString(t *testing.T) {
	require.Equal(t, "ensure", CRLFEnsure.String())
	require.Equal(t, "leave", CRLFLeave.String())
	require.Equal(t, "strict", CRLFStrict.String())
	require.Equal(t, "CRLFMode(?)", CRLFMode(42).String())
}
