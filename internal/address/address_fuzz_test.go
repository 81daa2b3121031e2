package address

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParse(f *testing.F) {
	seeds := []string{
		"<a@b>",
		"  <john.doe@example.com> SIZE=1000 BODY=8BITMIME  ",
		"<>",
		"<> BODY=8BITMIME",
		"<Postmaster>",
		"postmaster",
		"a@b SIZE=1",
		"<@a,@b.c:d@e>",
		"<\"john doe\"@example.com>",
		"<\"a\\\"b\\\\c\"@d>",
		"<\"\"@b>",
		"<üser@exämple.de> SMTPUTF8",
		"<用户@例子.广告>",
		"<a@[192.0.2.1]>",
		"<a@[IPv6:2001:db8::1]>",
		"<a@[IPv6:::ffff:192.0.2.1]>",
		"<a@[x-tag:any!thing]>",
		"<a@b> AUTH=<> ENVID=a+2Bb X=ä",
		"<a@b> SMTPUTF8 NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b",
		"<a@b",
		"a@b>",
		"<<a@b>>",
		"<a@b> <c@d>",
		"<a@b>\r\n",
		"<a\x00@b>",
		"<\xff@b>",
		"<a@b> SIZE=",
		"<a..b@c>",
		"<a@-b.c>",
		"<a@[IPv6:fe80::1%eth0]>",
		"<" + strings.Repeat("l", 64) + "@" + strings.Repeat("d", 189) + ">",
	}
	for _, s := range seeds {
		f.Add(s, true)
		f.Add(s, false)
	}

	f.Add("<a@b> "+strings.Repeat("X=1 ", MaxParams+1), true) // over the parameter cap
	f.Fuzz(func(t *testing.T, arg string, nullOK bool) {
		p, err := Parse(arg, nullOK)
		if err != nil {
			if err != ErrSyntax && err != ErrTooLong && err != ErrTooManyParams {
				t.Fatalf("Parse(%q) returned unexpected error %v", arg, err)
			}
			words := strings.FieldsFunc(arg, func(r rune) bool { return r == ' ' })
			if err == ErrTooManyParams && len(words)-1 <= MaxParams { // the path, then the parameters
				t.Fatalf("Parse(%q): ErrTooManyParams with at most %d parameters", arg, MaxParams)
			}
			if p.Mailbox != "" || p.SourceRoute != "" || p.Bracketless || p.Params != nil {
				t.Fatalf("Parse(%q) returned %+v with error %v", arg, p, err)
			}
			return
		}

		checkMailbox(t, arg, nullOK, p)

		// The canonical bracketed form parses to the same path.
		canon := "<" + p.Mailbox + ">"
		if p.SourceRoute != "" {
			canon = "<" + p.SourceRoute + ":" + p.Mailbox + ">"
		}
		q, err := Parse(canon, nullOK)
		if err != nil {
			t.Fatalf("Parse(%q) = %+v, but Parse(%q): %v", arg, p, canon, err)
		}
		if q.Mailbox != p.Mailbox || q.SourceRoute != p.SourceRoute || q.Bracketless || q.Params != nil {
			t.Fatalf("Parse(%q) = %+v, but Parse(%q) = %+v", arg, p, canon, q)
		}

		// So does the bracketless form, where there is one.
		if p.Mailbox != "" && p.SourceRoute == "" {
			q, err := Parse(p.Mailbox, nullOK)
			if err != nil {
				t.Fatalf("Parse(%q) = %+v, but Parse(%q): %v", arg, p, p.Mailbox, err)
			}
			if q.Mailbox != p.Mailbox || !q.Bracketless || q.Params != nil {
				t.Fatalf("Parse(%q) = %+v, but Parse(%q) = %+v", arg, p, p.Mailbox, q)
			}
		}

		// The parameters round-trip.
		var b strings.Builder
		b.WriteString("<a@b>")
		for _, prm := range p.Params {
			if prm.Key == "" || prm.HasValue == (prm.Value == "") {
				t.Fatalf("Parse(%q): bad parameter %+v", arg, prm)
			}
			b.WriteString(" " + prm.Key)
			if prm.HasValue {
				b.WriteString("=" + prm.Value)
			}
		}
		q, err = Parse(b.String(), true)
		if err != nil {
			t.Fatalf("Parse(%q) = %+v, but Parse(%q): %v", arg, p, b.String(), err)
		}
		if len(q.Params) != len(p.Params) {
			t.Fatalf("Parse(%q) params = %+v, but Parse(%q) params = %+v", arg, p.Params, b.String(), q.Params)
		}
		for i := range p.Params {
			if q.Params[i] != p.Params[i] {
				t.Fatalf("Parse(%q) params = %+v, but Parse(%q) params = %+v", arg, p.Params, b.String(), q.Params)
			}
		}
	})
}

// checkMailbox checks the invariants of a successfully parsed path.
func checkMailbox(t *testing.T, arg string, nullOK bool, p Path) {
	t.Helper()
	m := p.Mailbox
	if !utf8.ValidString(m) {
		t.Fatalf("Parse(%q): mailbox %q is not valid UTF-8", arg, m)
	}
	if len(m)+2 > maxPath {
		t.Fatalf("Parse(%q): mailbox of %d octets is too long", arg, len(m))
	}
	if !strings.Contains(arg, m) || !strings.Contains(arg, p.SourceRoute) {
		t.Fatalf("Parse(%q) = %+v: not taken from the argument", arg, p)
	}
	for _, prm := range p.Params {
		if !utf8.ValidString(prm.Value) {
			t.Fatalf("Parse(%q): parameter %+v is not valid UTF-8", arg, prm)
		}
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; c < ' ' || c == 0x7f {
			t.Fatalf("Parse(%q): mailbox %q contains control character %#x", arg, m, c)
		}
	}
	// Spaces may only appear in a quoted local part, which comes first.
	rest := m
	if strings.HasPrefix(m, `"`) {
		end := 0
		for i := 1; i < len(m); i++ {
			if m[i] == '\\' {
				i++
			} else if m[i] == '"' {
				end = i + 1
				break
			}
		}
		if end == 0 {
			t.Fatalf("Parse(%q): mailbox %q has an unterminated quoted string", arg, m)
		}
		rest = m[end:]
	}
	if strings.Contains(rest, " ") {
		t.Fatalf("Parse(%q): mailbox %q contains a space outside quotes", arg, m)
	}
	switch {
	case m == "":
		if !nullOK || p.Bracketless || p.SourceRoute != "" {
			t.Fatalf("Parse(%q, %v) = %+v: unexpected null path", arg, nullOK, p)
		}
	case !strings.Contains(m, "@"):
		if nullOK || p.SourceRoute != "" || !strings.EqualFold(m, "postmaster") {
			t.Fatalf("Parse(%q, %v) = %+v: mailbox without domain", arg, nullOK, p)
		}
	}
	if p.Bracketless && p.SourceRoute != "" {
		t.Fatalf("Parse(%q) = %+v: bracketless path with source route", arg, p)
	}
}
