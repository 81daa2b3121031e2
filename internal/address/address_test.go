package address

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// domainOfLen returns a syntactically valid domain of exactly n octets (n ≥ 1).
func domainOfLen(t testing.TB, n int) string {
	t.Helper()
	k := (n - 1) / 10
	d := strings.Repeat("abcdefghi.", k) + strings.Repeat("x", n-10*k)
	require.Len(t, d, n)
	return d
}

type parseTest struct {
	name   string
	arg    string
	nullOK bool
	want   Path
	err    error
}

func runParseTests(t *testing.T, tests []parseTest) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.arg, tc.nullOK)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err, "arg %q", tc.arg)
				require.Equal(t, Path{}, got)
				return
			}
			require.NoError(t, err, "arg %q", tc.arg)
			require.Equal(t, tc.want, got)
		})
	}
}

func mb(m string) Path { return Path{Mailbox: m} }

func TestParseSpacesAndParams(t *testing.T) {
	runParseTests(t, []parseTest{
		{name: "plain", arg: "<a@b>", want: mb("a@b")},
		{name: "leading spaces", arg: "   <a@b>", want: mb("a@b")},
		{name: "trailing spaces", arg: "<a@b>   ", want: mb("a@b")},
		{name: "leading and trailing spaces", arg: " <a@b> ", want: mb("a@b")},
		{name: "empty", arg: "", err: ErrSyntax},
		{name: "only spaces", arg: "   ", err: ErrSyntax},
		{name: "one param", arg: "<a@b> SIZE=1000",
			want: Path{Mailbox: "a@b", Params: []Param{{Key: "SIZE", Value: "1000", HasValue: true}}}},
		{name: "params with extra spaces", arg: "<a@b>  SIZE=1000   BODY=8BITMIME  ",
			want: Path{Mailbox: "a@b", Params: []Param{
				{Key: "SIZE", Value: "1000", HasValue: true},
				{Key: "BODY", Value: "8BITMIME", HasValue: true},
			}}},
		{name: "param without value", arg: "<a@b> SMTPUTF8",
			want: Path{Mailbox: "a@b", Params: []Param{{Key: "SMTPUTF8"}}}},
		{name: "mixed params", arg: "<a@b> SMTPUTF8 body=8bitmime X-A-1=v",
			want: Path{Mailbox: "a@b", Params: []Param{
				{Key: "SMTPUTF8"},
				{Key: "body", Value: "8bitmime", HasValue: true},
				{Key: "X-A-1", Value: "v", HasValue: true},
			}}},
		{name: "keyword starting with digit", arg: "<a@b> 8X=1",
			want: Path{Mailbox: "a@b", Params: []Param{{Key: "8X", Value: "1", HasValue: true}}}},
		{name: "keyword ending with hyphen", arg: "<a@b> X-=1",
			want: Path{Mailbox: "a@b", Params: []Param{{Key: "X-", Value: "1", HasValue: true}}}},
		{name: "value with brackets and xtext", arg: "<a@b> AUTH=<> ENVID=a+2Bb",
			want: Path{Mailbox: "a@b", Params: []Param{
				{Key: "AUTH", Value: "<>", HasValue: true},
				{Key: "ENVID", Value: "a+2Bb", HasValue: true},
			}}},
		{name: "value with all printable but equals", arg: "<a@b> X=!\"#<>?@[\\]^_`{|}~",
			want: Path{Mailbox: "a@b", Params: []Param{{Key: "X", Value: "!\"#<>?@[\\]^_`{|}~", HasValue: true}}}},
		{name: "UTF-8 value", arg: "<a@b> X=ünïcödé",
			want: Path{Mailbox: "a@b", Params: []Param{{Key: "X", Value: "ünïcödé", HasValue: true}}}},
		{name: "bracketless with params", arg: "a@b SIZE=1",
			want: Path{Mailbox: "a@b", Bracketless: true, Params: []Param{{Key: "SIZE", Value: "1", HasValue: true}}}},
		{name: "param glued to path", arg: "<a@b>SIZE=1", err: ErrSyntax},
		{name: "empty value", arg: "<a@b> SIZE=", err: ErrSyntax},
		{name: "empty value then param", arg: "<a@b> SIZE= BODY=7BIT", err: ErrSyntax},
		{name: "equals in value", arg: "<a@b> SIZE=1=2", err: ErrSyntax},
		{name: "keyword starting with hyphen", arg: "<a@b> -X=1", err: ErrSyntax},
		{name: "keyword with underscore", arg: "<a@b> SI_ZE=1", err: ErrSyntax},
		{name: "missing keyword", arg: "<a@b> =1", err: ErrSyntax},
		{name: "non-ASCII keyword", arg: "<a@b> ÜBER=1", err: ErrSyntax},
		{name: "keyword with dot", arg: "<a@b> X.Y", err: ErrSyntax},
	})
}

func TestParseControlsAndUTF8(t *testing.T) {
	tests := []parseTest{
		{name: "CRLF at end", arg: "<a@b>\r\n", err: ErrSyntax},
		{name: "bare LF in local part", arg: "<a\nb@c>", err: ErrSyntax},
		{name: "NUL in local part", arg: "<a\x00@b>", err: ErrSyntax},
		{name: "tab before params", arg: "<a@b>\tSIZE=1", err: ErrSyntax},
		{name: "tab before path", arg: "\t<a@b>", err: ErrSyntax},
		{name: "DEL in value", arg: "<a@b> X=1\x7f", err: ErrSyntax},
		{name: "tab in quoted string", arg: "<\"a\tb\"@c>", err: ErrSyntax},
		{name: "control in quoted pair", arg: "<\"a\\\x01\"@c>", err: ErrSyntax},
		{name: "CR in bracketless", arg: "a@b\r", err: ErrSyntax},
		{name: "invalid byte in local part", arg: "<\xff@b>", err: ErrSyntax},
		{name: "truncated sequence in value", arg: "<a@b> X=\xc3", err: ErrSyntax},
		{name: "truncated sequence in quoted string", arg: "<\"\xc3(\"@b>", err: ErrSyntax},
		{name: "overlong encoding", arg: "<a\xc0\xafb@c>", err: ErrSyntax},
		{name: "surrogate", arg: "<a@b\xed\xa0\x80c>", err: ErrSyntax},
		{name: "valid UTF-8 everywhere", arg: "<\"ü ö\"@b> X=ä",
			want: Path{Mailbox: "\"ü ö\"@b", Params: []Param{{Key: "X", Value: "ä", HasValue: true}}}},
	}
	// Every ASCII control character anywhere is a syntax error.
	const valid = "<a@b> X=1"
	for c := 0; c < 0x80; c++ {
		if c >= ' ' && c != 0x7f {
			continue
		}
		for _, pos := range []int{0, 2, 4, 5, 6, len(valid)} {
			tests = append(tests, parseTest{
				name: fmt.Sprintf("control %#x at %d", c, pos),
				arg:  valid[:pos] + string(rune(c)) + valid[pos:],
				err:  ErrSyntax,
			})
		}
	}
	runParseTests(t, tests)
}

func TestParseBrackets(t *testing.T) {
	runParseTests(t, []parseTest{
		{name: "source route", arg: "<@a,@b.c:d@e>", want: Path{Mailbox: "d@e", SourceRoute: "@a,@b.c"}},
		{name: "single hop source route", arg: "<@a:d@e> SIZE=1",
			want: Path{Mailbox: "d@e", SourceRoute: "@a", Params: []Param{{Key: "SIZE", Value: "1", HasValue: true}}}},
		{name: "route hop without at", arg: "<@a,b:d@e>", err: ErrSyntax},
		{name: "route with null path", arg: "<@a:>", nullOK: true, err: ErrSyntax},
		{name: "route without colon", arg: "<@a,@b d@e>", err: ErrSyntax},
		{name: "route with empty domain", arg: "<@:d@e>", err: ErrSyntax},
		{name: "route with trailing comma", arg: "<@a,:d@e>", err: ErrSyntax},
		{name: "route with address literal", arg: "<@[192.0.2.1]:d@e>", err: ErrSyntax},
		{name: "route without brackets", arg: "@a:d@e", err: ErrSyntax},
		{name: "bracketless", arg: "a@b", want: Path{Mailbox: "a@b", Bracketless: true}},
		{name: "bracketless with spaces", arg: "  a@b  ", want: Path{Mailbox: "a@b", Bracketless: true}},
		{name: "bracketless quoted", arg: "\"a b\"@c", want: Path{Mailbox: "\"a b\"@c", Bracketless: true}},
		{name: "missing close bracket", arg: "<a@b", err: ErrSyntax},
		{name: "missing open bracket", arg: "a@b>", err: ErrSyntax},
		{name: "doubled brackets", arg: "<<a@b>>", err: ErrSyntax},
		{name: "extra close bracket", arg: "<a@b>>", err: ErrSyntax},
		{name: "text glued after path", arg: "<a@b>x", err: ErrSyntax},
		{name: "two bracketed addresses", arg: "<a@b> <c@d>", err: ErrSyntax},
		{name: "comma separated addresses", arg: "<a@b,c@d>", err: ErrSyntax},
		{name: "two bracketless addresses", arg: "a@b c@d", err: ErrSyntax},
		{name: "bracketless after space without at", arg: " 0", err: ErrSyntax}, // fuzz crasher
		{name: "bracketless too long after spaces", arg: "  " + strings.Repeat("l", 65) + "@b", err: ErrTooLong},
		{name: "space after open bracket", arg: "< a@b>", err: ErrSyntax},
		{name: "space before close bracket", arg: "<a@b >", err: ErrSyntax},
		{name: "space before at", arg: "<a @b>", err: ErrSyntax},
		{name: "space after at", arg: "<a@ b>", err: ErrSyntax},
		{name: "display name", arg: "Joe <a@b>", err: ErrSyntax},
		{name: "null path with glued text", arg: "<>x", nullOK: true, err: ErrSyntax},
		{name: "null path with space inside", arg: "< >", nullOK: true, err: ErrSyntax},
		{name: "only open bracket", arg: "<", nullOK: true, err: ErrSyntax},
	})
}

func TestParseLocalPart(t *testing.T) {
	runParseTests(t, []parseTest{
		{name: "dot-string", arg: "<first.last@example.com>", want: mb("first.last@example.com")},
		{name: "all atext specials", arg: "<!#$%&'*+-/=?^_`{|}~@b>", want: mb("!#$%&'*+-/=?^_`{|}~@b")},
		{name: "case kept", arg: "<John.DOE@Example.COM>", want: mb("John.DOE@Example.COM")},
		{name: "leading dot", arg: "<.a@b>", err: ErrSyntax},
		{name: "trailing dot", arg: "<a.@b>", err: ErrSyntax},
		{name: "double dot", arg: "<a..b@c>", err: ErrSyntax},
		{name: "empty local part", arg: "<@b>", err: ErrSyntax},
		{name: "parenthesis", arg: "<a(b)@c>", err: ErrSyntax},
		{name: "comma", arg: "<a,b@c>", err: ErrSyntax},
		{name: "quote inside atom", arg: "<a\"b\"@c>", err: ErrSyntax},
		{name: "backslash in atom", arg: "<a\\b@c>", err: ErrSyntax},
		{name: "quoted string with space", arg: "<\"john doe\"@example.com>", want: mb("\"john doe\"@example.com")},
		{name: "quoted pairs", arg: "<\"a\\\"b\\\\c\\ d\"@e>", want: mb("\"a\\\"b\\\\c\\ d\"@e")},
		{name: "empty quoted string", arg: "<\"\"@b>", want: mb("\"\"@b")},
		{name: "quoted dots and specials", arg: "<\"a..(b)@,\"@c>", want: mb("\"a..(b)@,\"@c")},
		{name: "quoted non-ASCII", arg: "<\"ü\"@b>", want: mb("\"ü\"@b")},
		{name: "unterminated quoted string", arg: "<\"ab@c>", err: ErrSyntax},
		{name: "text after quoted string", arg: "<\"a\"b@c>", err: ErrSyntax},
		{name: "quoted strings joined by dot", arg: "<\"a\".\"b\"@c>", err: ErrSyntax},
		{name: "quoted pair with non-ASCII", arg: "<\"a\\ü\"@b>", err: ErrSyntax},
		{name: "bare backslash in quoted string", arg: "<\"a\\\">", err: ErrSyntax},
		{name: "no at sign", arg: "<ab>", err: ErrSyntax},
		{name: "no at sign bracketless", arg: "ab", err: ErrSyntax},
		{name: "no at sign in MAIL", arg: "<ab>", nullOK: true, err: ErrSyntax},
		{name: "UTF-8 local part and domain", arg: "<üser@exämple.de>", want: mb("üser@exämple.de")},
		{name: "CJK address", arg: "<用户@例子.广告>", want: mb("用户@例子.广告")},
	})
}

func TestParseDomain(t *testing.T) {
	runParseTests(t, []parseTest{
		{name: "hyphen inside label", arg: "<a@b-c.d>", want: mb("a@b-c.d")},
		{name: "numeric labels", arg: "<a@1.2.3.4>", want: mb("a@1.2.3.4")},
		{name: "single label", arg: "<a@localhost>", want: mb("a@localhost")},
		{name: "A-label", arg: "<a@xn--bcher-kva.example>", want: mb("a@xn--bcher-kva.example")},
		{name: "mixed U-label", arg: "<a@bü-cher.de>", want: mb("a@bü-cher.de")},
		{name: "label starting with hyphen", arg: "<a@-b.c>", err: ErrSyntax},
		{name: "label ending with hyphen", arg: "<a@b-.c>", err: ErrSyntax},
		{name: "trailing dot", arg: "<a@b.>", err: ErrSyntax},
		{name: "leading dot", arg: "<a@.b>", err: ErrSyntax},
		{name: "empty label", arg: "<a@b..c>", err: ErrSyntax},
		{name: "underscore", arg: "<a@b_c.d>", err: ErrSyntax},
		{name: "empty domain", arg: "<a@>", err: ErrSyntax},
		{name: "second at sign", arg: "<a@b@c>", err: ErrSyntax},
		{name: "IPv4 literal", arg: "<a@[192.0.2.1]>", want: mb("a@[192.0.2.1]")},
		{name: "IPv6 literal", arg: "<a@[IPv6:2001:db8::1]>", want: mb("a@[IPv6:2001:db8::1]")},
		{name: "IPv6 literal lower-case tag", arg: "<a@[ipv6:::1]>", want: mb("a@[ipv6:::1]")},
		{name: "IPv6 literal with IPv4 tail", arg: "<a@[IPv6:::ffff:192.0.2.1]>", want: mb("a@[IPv6:::ffff:192.0.2.1]")},
		{name: "general literal", arg: "<a@[x-tag:any!thing~]>", want: mb("a@[x-tag:any!thing~]")},
		{name: "general literal with quote", arg: "<0@[0:\"]>", want: mb("0@[0:\"]")}, // fuzz finding
		{name: "general literal with numeric tag", arg: "<a@[2001:db8::1]>", want: mb("a@[2001:db8::1]")},
		{name: "bracketless literal", arg: "a@[192.0.2.1]", want: Path{Mailbox: "a@[192.0.2.1]", Bracketless: true}},
		{name: "IPv4 octet out of range", arg: "<a@[256.0.0.1]>", err: ErrSyntax},
		{name: "IPv4 too few octets", arg: "<a@[1.2.3]>", err: ErrSyntax},
		{name: "IPv4 leading zero", arg: "<a@[01.2.3.4]>", err: ErrSyntax},
		{name: "IPv6 tag with IPv4", arg: "<a@[IPv6:192.0.2.1]>", err: ErrSyntax},
		{name: "IPv6 with zone", arg: "<a@[IPv6:fe80::1%eth0]>", err: ErrSyntax},
		{name: "IPv6 invalid", arg: "<a@[IPv6:zz::]>", err: ErrSyntax},
		{name: "IPv6 empty", arg: "<a@[IPv6:]>", err: ErrSyntax},
		{name: "empty literal", arg: "<a@[]>", err: ErrSyntax},
		{name: "literal without tag or address", arg: "<a@[foo]>", err: ErrSyntax},
		{name: "general literal empty tag", arg: "<a@[:foo]>", err: ErrSyntax},
		{name: "general literal tag ending with hyphen", arg: "<a@[x-:foo]>", err: ErrSyntax},
		{name: "general literal bad tag", arg: "<a@[x_y:foo]>", err: ErrSyntax},
		{name: "general literal empty content", arg: "<a@[x:]>", err: ErrSyntax},
		{name: "literal with space", arg: "<a@[x:a b]>", err: ErrSyntax},
		{name: "literal with open bracket", arg: "<a@[x:a[b]>", err: ErrSyntax},
		{name: "literal with backslash", arg: "<a@[x:a\\b]>", err: ErrSyntax},
		{name: "literal with non-ASCII", arg: "<a@[x:ü]>", err: ErrSyntax},
		{name: "unterminated literal", arg: "<a@[192.0.2.1>", err: ErrSyntax},
		{name: "text after literal", arg: "<a@[192.0.2.1]x>", err: ErrSyntax},
		{name: "literal then domain", arg: "<a@[192.0.2.1].com>", err: ErrSyntax},
	})
}

func TestParseNullAndPostmaster(t *testing.T) {
	runParseTests(t, []parseTest{
		{name: "null path", arg: "<>", nullOK: true, want: Path{}},
		{name: "null path with spaces", arg: "  <>  ", nullOK: true, want: Path{}},
		{name: "null path with params", arg: "<> BODY=8BITMIME", nullOK: true,
			want: Path{Params: []Param{{Key: "BODY", Value: "8BITMIME", HasValue: true}}}},
		{name: "null path in RCPT", arg: "<>", err: ErrSyntax},
		{name: "null path with params in RCPT", arg: "<> NOTIFY=NEVER", err: ErrSyntax},
		{name: "postmaster", arg: "<Postmaster>", want: mb("Postmaster")},
		{name: "postmaster lower case", arg: "<postmaster>", want: mb("postmaster")},
		{name: "postmaster with params", arg: "<POSTMASTER> NOTIFY=NEVER",
			want: Path{Mailbox: "POSTMASTER", Params: []Param{{Key: "NOTIFY", Value: "NEVER", HasValue: true}}}},
		{name: "postmaster bracketless", arg: "postmaster", want: Path{Mailbox: "postmaster", Bracketless: true}},
		{name: "postmaster with domain", arg: "<postmaster@example.com>", want: mb("postmaster@example.com")},
		{name: "postmaster with domain in MAIL", arg: "<postmaster@example.com>", nullOK: true, want: mb("postmaster@example.com")},
		{name: "postmaster in MAIL", arg: "<Postmaster>", nullOK: true, err: ErrSyntax},
		{name: "postmaster with source route", arg: "<@a:Postmaster>", err: ErrSyntax},
		{name: "quoted postmaster", arg: "<\"Postmaster\">", err: ErrSyntax},
		{name: "postmaster prefix", arg: "<post>", err: ErrSyntax},
		{name: "postmaster with suffix", arg: "<postmaster.x>", err: ErrSyntax},
		{name: "postmaster glued", arg: "<postmaster>x", err: ErrSyntax},
		{name: "other local part without domain", arg: "<abuse>", err: ErrSyntax},
	})
}

func TestParseLengths(t *testing.T) {
	local64 := strings.Repeat("l", 64)
	quoted64 := `"` + strings.Repeat("q ", 31) + `"`
	d252, d253 := domainOfLen(t, 252), domainOfLen(t, 253)
	d255, d256 := domainOfLen(t, 255), domainOfLen(t, 256)
	d189, d190 := domainOfLen(t, 189), domainOfLen(t, 190)
	runParseTests(t, []parseTest{
		{name: "local part 64", arg: "<" + local64 + "@b>", want: mb(local64 + "@b")},
		{name: "local part 65", arg: "<" + local64 + "x@b>", err: ErrTooLong},
		{name: "quoted local part 64", arg: "<" + quoted64 + "@b>", want: mb(quoted64 + "@b")},
		{name: "quoted local part 65", arg: "<" + quoted64[:63] + "x\"@b>", err: ErrTooLong},
		{name: "path 256", arg: "<a@" + d252 + ">", want: mb("a@" + d252)},
		{name: "path 257", arg: "<a@" + d253 + ">", err: ErrTooLong},
		{name: "path 256 with 64 local part", arg: "<" + local64 + "@" + d189 + ">",
			want: mb(local64 + "@" + d189)},
		{name: "path 257 with 64 local part", arg: "<" + local64 + "@" + d190 + ">", err: ErrTooLong},
		{name: "bracketless path 256", arg: "a@" + d252, want: Path{Mailbox: "a@" + d252, Bracketless: true}},
		{name: "bracketless path 257", arg: "a@" + d253, err: ErrTooLong},
		{name: "domain 256", arg: "<a@" + d256 + ">", err: ErrTooLong},
		{name: "route domain 255", arg: "<@" + d255 + ":a@b>", want: Path{Mailbox: "a@b", SourceRoute: "@" + d255}},
		{name: "route domain 256", arg: "<@" + d256 + ":a@b>", err: ErrTooLong},
		{name: "long params", arg: "<a@b> X=" + strings.Repeat("v", 1000),
			want: Path{Mailbox: "a@b", Params: []Param{{Key: "X", Value: strings.Repeat("v", 1000), HasValue: true}}}},
	})
}

func TestIsASCII(t *testing.T) {
	tests := []struct {
		mailbox string
		want    bool
	}{
		{"", true},
		{"a@b", true},
		{"Postmaster", true},
		{"\"a b\"@c", true},
		{"ü@b", false},
		{"a@bü", false},
		{"\"ü\"@b", false},
		{"用户@例子.广告", false},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, Path{Mailbox: tc.mailbox}.IsASCII(), "mailbox %q", tc.mailbox)
	}
}

func TestParseNoAllocsWithoutParams(t *testing.T) {
	for _, arg := range []string{"<user@example.com>", "<>", "<\"a b\"@[IPv6:2001:db8::1]>", "üser@exämple.de"} {
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := Parse(arg, true); err != nil {
				t.Fatal(err)
			}
		})
		require.Zero(t, allocs, "arg %q", arg)
	}
}

func BenchmarkParse(b *testing.B) {
	benchmarks := []struct {
		name string
		arg  string
	}{
		{"Plain", "<john.doe@mail.example.com>"},
		{"Params", " <john.doe@mail.example.com> SIZE=123456 BODY=8BITMIME"},
		{"Null", "<> BODY=8BITMIME"},
		{"IPv6", "<\"john doe\"@[IPv6:2001:db8::1]>"},
		{"UTF8", "<用户@例子.广告> SMTPUTF8"},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(bm.arg, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
