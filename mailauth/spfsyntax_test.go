package mailauth

import "testing"

func TestSPFSyntax(t *testing.T) {
	for _, tc := range []struct {
		rec string
		ok  bool
	}{
		{"v=spf1", true},
		{"v=spf1 -all", true},
		{"v=spf1  ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx/24//64 ptr ?include:_spf.example.com ~all ", true},
		{"v=spf1 a:%{d}.example.com exists:%{i}.%{l2r-}.user.%{d2} -all", true},
		{"v=spf1 redirect=_spf.example.com exp=explain.%{d} unknown=%{ir}.x", true},
		{"v=spf1 ip4:192.0.2.1 foo:bar -all", false}, // the term after the match counts too
		{"v=spf1 ip4:192.0.2.1/032", false},
		{"v=spf1 ip4:192.0.2.1/33", false},
		{"v=spf1 ip4:2001:db8::1", false},
		{"v=spf1 ip6:192.0.2.1", false},
		{"v=spf1 a:example.123", false},
		{"v=spf1 a:localhost", false},
		{"v=spf1 include:", false},
		{"v=spf1 -all redirect=a.example redirect=b.example", false},
		{"v=spf1 a:%{x}.example.com", false},
		{"v=spf1 a:%{c}.example.com", false},
		{"v=spf1 a:50%.example.com", false},
		{"v=spf1 all:x", false},
		{"v=spf1 -all\t", false},
	} {
		if err := spfSyntax(tc.rec); (err == nil) != tc.ok {
			t.Errorf("%q: %v", tc.rec, err)
		}
	}
}
