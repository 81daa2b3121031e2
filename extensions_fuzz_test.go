package smtpd

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Fuzz targets of the ESMTP extensions' pure parts: BDAT's argument, the DSN
// parameters, and the BDAT piece processing (chunkPiece) that must not depend on
// where the chunks and the read buffer cut the data.

// xfzBdatRe is RFC 3030's bdat-cmd argument as this server takes it: 1 to 18 digits
// (below 2^63), then optionally one space and LAST in any ASCII case.
var xfzBdatRe = regexp.MustCompile(`^[0-9]{1,18}( [Ll][Aa][Ss][Tt])?$`)

// xfzASCIIEqualFold is strings.EqualFold for ASCII only: RFC 5234 strings are
// case-insensitive in ASCII, and no Unicode folding ("ſ" is not "s") applies.
func xfzASCIIEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// FuzzBdatArgs: parseBdat never panics; it accepts exactly the grammar above; an
// accepted argument has size >= 0 and re-renders as the size (leading zeros aside,
// chunk-size being 1*DIGIT) and " LAST" when last, case-insensitively in ASCII.
func FuzzBdatArgs(f *testing.F) {
	for _, s := range []string{"0", "1", "1 LAST", "5 last", "0 LaSt", "007", "007 LAST", "x", "-1", "+1",
		"1 LASTX", "1 LAST ", "1  LAST", " 1", "1\tLAST", "", "LAST", "1 LAST LAST", "0x10",
		"99999999999999999999", "999999999999999999", "1000000000000000000", "9223372036854775807",
		"1 LA\u017fT", "1 \u212aAST", "1 last\x00", "١٢"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, args string) {
		size, last, ok := parseBdat(args)
		require.Equal(t, xfzBdatRe.MatchString(args), ok, "%q", args)
		if !ok {
			require.Zero(t, size)
			require.False(t, last)
			return
		}
		require.GreaterOrEqual(t, size, int64(0))
		num, rest, hasRest := strings.Cut(args, " ")
		require.Equal(t, hasRest, last, "%q", args)
		n, err := strconv.ParseInt(num, 10, 64)
		require.NoError(t, err)
		require.Equal(t, n, size)
		if trimmed := strings.TrimLeft(num, "0"); trimmed != "" {
			num = trimmed
		} else {
			num = "0"
		}
		want := strconv.FormatInt(size, 10)
		got := num
		if last {
			want += " LAST"
			got += " " + rest
		}
		require.True(t, xfzASCIIEqualFold(want, got), "%q re-renders as %q", args, want)
		require.True(t, isBdat([]byte("BDAT "+args)))
	})
}

var xfzNotifyValues = map[string]bool{"NEVER": true, "SUCCESS": true, "FAILURE": true, "DELAY": true}

// FuzzDSNParams: the DSN parsers never panic and what they accept satisfies RFC
// 3461: NOTIFY values from the allowed set, none twice, NEVER alone, matching the
// input item by item; RET is FULL or HDRS; ENVID is at most 100 characters of
// xtext that decode to printable ASCII; ORCPT has an address type (atom), ';' and a
// non-empty address, decoded, without control characters.
func FuzzDSNParams(f *testing.F) {
	for _, s := range []string{"NEVER", "SUCCESS,FAILURE", "success,delay,failure", "NEVER,SUCCESS", "SUCCESS,NEVER",
		"SUCCESS,SUCCESS", "", ",", "SUCCESS,", "BOGUS", "FULL", "hdrs", "X", "abc+2Bdef", "a+4g", "+00", "+7F",
		"+2", "a+", "rfc822;a+40b.example", "rfc822a@b", ";a", "rfc822;", "utf-8;w+40x", "rfc822;a+0D+0Ab",
		"rfc822;a;b", "rfc_822;a", strings.Repeat("e", 101), strings.Repeat("e", 100), "fa\u0131lure", "HDR\u017f",
		"\u017fUCCESS", "=", "a=b", "rfc822;a=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if notify, ok := parseNotify(v); ok {
			items := strings.Split(v, ",")
			require.Len(t, notify, len(items), "%q", v)
			seen := map[string]bool{}
			for i, n := range notify {
				require.True(t, xfzNotifyValues[n], "%q: %q not allowed", v, n)
				require.False(t, seen[n], "%q: %q twice", v, n)
				seen[n] = true
				require.True(t, xfzASCIIEqualFold(items[i], n), "%q: item %q is not %q", v, items[i], n)
			}
			require.True(t, !seen["NEVER"] || len(notify) == 1, "%q: NEVER with others", v)
		} else {
			require.Nil(t, notify)
		}
		if ret, ok := parseRet(v); ok {
			require.Contains(t, []string{"FULL", "HDRS"}, ret)
			require.True(t, xfzASCIIEqualFold(v, ret), "%q taken as %q", v, ret)
		}
		if env, ok := parseEnvID(v); ok {
			require.GreaterOrEqual(t, len(v), 1)
			require.LessOrEqual(t, len(v), maxEnvID)
			require.LessOrEqual(t, len(env), len(v))
			require.True(t, printableASCII(env), "%q decodes to %q", v, env)
			d, err := decodeXtext(v)
			require.NoError(t, err)
			require.Equal(t, d, env)
			require.Equal(t, env, xfzXtextRoundTrip(t, env), "xtext round trip")
		}
		if orcpt, ok := parseORcpt(v); ok {
			require.LessOrEqual(t, len(v), maxORcpt)
			typ, addr, found := strings.Cut(v, ";")
			require.True(t, found)
			require.NotEmpty(t, typ)
			require.NotEmpty(t, addr)
			require.Regexp(t, `^[A-Za-z0-9-]+$`, typ)
			require.True(t, strings.HasPrefix(orcpt, typ+";"), "%q → %q", v, orcpt)
			decoded := orcpt[len(typ)+1:]
			require.NotEmpty(t, decoded)
			d, err := decodeXtext(addr)
			require.NoError(t, err)
			require.Equal(t, d, decoded)
			for i := 0; i < len(decoded); i++ {
				c := decoded[i]
				require.False(t, c < ' ' || c == 0x7f, "%q: control character %q in the decoded ORCPT %q", v, c, decoded)
			}
		}
	})
}

// xfzXtextRoundTrip encodes s as xtext (RFC 3461 4: "+" and "=" and every byte
// outside '!'..'~' as "+HH") and decodes it again.
func xfzXtextRoundTrip(t *testing.T, s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			b.WriteString("+" + strings.ToUpper(strconv.FormatUint(uint64(c)>>4, 16)+strconv.FormatUint(uint64(c)&15, 16)))
			continue
		}
		b.WriteByte(c)
	}
	d, err := decodeXtext(b.String())
	require.NoError(t, err, "%q", b.String())
	return d
}

// xfzPieces cuts data as the chunks and the read buffer may: pieces whose lengths
// come from cuts (1 to 16 bytes each, cycling; none: one piece), each then cut after
// every LF, as readOctets does (chunkPiece's contract: never empty, an LF only at
// the end).
func xfzPieces(data, cuts []byte) [][]byte {
	var pieces [][]byte
	for i := 0; len(data) > 0; i++ {
		n := len(data)
		if len(cuts) > 0 {
			n = min(n, 1+int(cuts[i%len(cuts)]%16))
		}
		p := data[:n]
		data = data[n:]
		for len(p) > 0 {
			j := bytes.IndexByte(p, '\n')
			if j < 0 {
				pieces = append(pieces, p)
				break
			}
			pieces = append(pieces, p[:j+1])
			p = p[j+1:]
		}
	}
	return pieces
}

// xfzRun feeds pieces through one transfer in mode, as readOctets and cmdBdat do,
// and returns what would be stored, whether a bare line end was seen, and the
// number of complete and of empty lines.
func xfzRun(t *testing.T, pieces [][]byte, mode CRLFMode, binary bool) (stored string, bare bool, complete, empty int) {
	tr := &transfer{binary: binary}
	var b strings.Builder
	for _, p := range pieces {
		d := tr.chunkPiece(p, mode)
		if !binary && d.complete != (p[len(p)-1] == '\n') {
			t.Fatalf("piece %q: complete %v", p, d.complete) // not require: this runs per piece
		}
		b.Write(d.text)
		b.Write(d.end)
		bare = bare || d.bare
		if d.complete {
			complete++
		}
		if d.isEmpty {
			empty++
		}
	}
	if d, ok := tr.chunkEnd(); ok {
		require.False(t, binary)
		b.Write(d.text)
		b.Write(d.end)
		bare = bare || d.bare
	}
	return b.String(), bare, complete, empty
}

// xfzEmptyLines counts the empty lines of CRLF-ended text: "\r\n" at a line start.
func xfzEmptyLines(s string) int {
	n := 0
	for i := 0; i+1 < len(s); i++ {
		if (i == 0 || s[i-1] == '\n') && s[i] == '\r' && s[i+1] == '\n' {
			n++
		}
	}
	return n
}

// FuzzChunkPieces: BDAT data cut into random pieces and fed through
// transfer.chunkPiece gives, concatenated, the reference conversion of the whole
// data — CRLFEnsure: a bare LF becomes CRLF, every other byte is kept; CRLFLeave and
// CRLFStrict: every byte kept; BINARYMIME: as sent — whatever the cuts; bare is set
// iff the data has a bare CR or LF; one complete line per LF; the empty lines are
// those of the reference.
func FuzzChunkPieces(f *testing.F) {
	for _, s := range []string{"", "a", "\r", "\n", "\r\n", "abc\r\ndef\r\n", "abc\rdef\r\n", "a\nb", "\r\r\n",
		"\n\r", "A: 1\r\n\r\nbody\r\n", "A: 1\n\nbody\n", "\r\n.\r\nMAIL FROM:<evil@x>\r\n", "x\r", "\r\r\r\n\n\n",
		"a\x00\xff\r\n", strings.Repeat("ab\r\n", 20) + "\r"} {
		f.Add([]byte(s), []byte{0})
		f.Add([]byte(s), []byte{3, 1, 0, 7})
		f.Add([]byte(s), []byte(nil))
	}
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		if len(data) == 0 || len(data) > 4<<10 {
			return // BDAT 0 feeds no piece
		}
		pieces := xfzPieces(data, cuts)
		require.Equal(t, string(data), string(bytes.Join(pieces, nil)))
		wantBare := smugHasBare(string(data))
		ensure := bdatEnsureRef(string(data))
		lfs := bytes.Count(data, []byte{'\n'})

		got, bare, complete, empty := xfzRun(t, pieces, CRLFEnsure, false)
		require.Equal(t, ensure, got, "CRLFEnsure of %q cut as %q", data, pieces)
		require.Equal(t, wantBare, bare, "bare of %q cut as %q", data, pieces)
		require.Equal(t, lfs, complete, "complete lines of %q", data)
		require.Equal(t, xfzEmptyLines(ensure), empty, "empty lines of %q cut as %q", data, pieces)

		// The same data in one piece per line gives the same: the cuts do not matter.
		whole, wholeBare, _, wholeEmpty := xfzRun(t, xfzPieces(data, nil), CRLFEnsure, false)
		require.Equal(t, whole, got)
		require.Equal(t, wholeBare, bare)
		require.Equal(t, wholeEmpty, empty)

		for _, mode := range []CRLFMode{CRLFLeave, CRLFStrict} {
			got, bare, complete, _ := xfzRun(t, pieces, mode, false)
			require.Equal(t, string(data), got, "%v keeps every byte of %q cut as %q", mode, data, pieces)
			require.Equal(t, wantBare, bare, "%v: bare of %q", mode, data)
			require.Equal(t, lfs, complete)
		}
		got, bare, _, _ = xfzRun(t, pieces, CRLFStrict, true)
		require.Equal(t, string(data), got, "BINARYMIME stores %q as sent", data)
		require.False(t, bare)
	})
}

// TestXfzReferences pins the fuzz targets' own references to hand-checked cases.
func TestXfzReferences(t *testing.T) {
	require.Equal(t, "a\r\n\rb\r\r\n\r\n", bdatEnsureRef("a\n\rb\r\r\n\n"))
	require.Equal(t, 2, xfzEmptyLines("\r\na\r\n\r\n\r\r\n"))
	require.Equal(t, [][]byte{[]byte("ab"), []byte("c\n"), []byte("\n"), []byte("d")}, xfzPieces([]byte("abc\n\nd"), []byte{1}))
	require.True(t, xfzASCIIEqualFold("last", "LAST"))
	require.False(t, xfzASCIIEqualFold("la\u017ft", "LAST"))
	require.Equal(t, "a+b=c \x01", xfzXtextRoundTrip(t, "a+b=c \x01"))
	for _, tc := range []struct {
		data string
		cut  []byte
		want string
	}{
		{"abc\r\ndef\r\n", []byte{3}, "abc\r\ndef\r\n"},
		{"abc\ndef\r", []byte{0}, "abc\r\ndef\r"},
		{"\r\r\n\n", []byte{0}, "\r\r\n\r\n"},
	} {
		got, _, _, _ := xfzRun(t, xfzPieces([]byte(tc.data), tc.cut), CRLFEnsure, false)
		require.Equal(t, tc.want, got, "%q", tc.data)
	}
}
