package milter_test

import (
	"errors"
	"testing"

	"github.com/midismtp/smtpd/milter"
)

func TestParseAddr(t *testing.T) {
	cases := []struct {
		in, network, address string
		ok                   bool
	}{
		{"inet:127.0.0.1:8891", "tcp", "127.0.0.1:8891", true},
		{"inet:[::1]:11332", "tcp", "[::1]:11332", true},
		{"inet:::1:11332", "tcp", "[::1]:11332", true},
		{"inet:localhost:8891", "tcp", "localhost:8891", true},
		{"inet6:[2001:db8::1]:25", "tcp", "[2001:db8::1]:25", true},
		{"inet:8891@127.0.0.1", "tcp", "127.0.0.1:8891", true},
		{"unix:/run/opendkim/opendkim.sock", "unix", "/run/opendkim/opendkim.sock", true},
		{"local:/run/milter.sock", "unix", "/run/milter.sock", true},
		{"/run/milter.sock", "unix", "/run/milter.sock", true},
		{"inet:127.0.0.1", "", "", false},
		{"inet:127.0.0.1:port", "", "", false},
		{"inet::8891", "", "", false},
		{"tcp6:", "", "", false},
		{"smtp:host:25", "", "", false},
		{"127.0.0.1:8891", "", "", false},
		{"", "", "", false},
	}
	for _, c := range cases {
		network, address, err := milter.ParseAddr(c.in)
		if (err == nil) != c.ok || network != c.network || address != c.address {
			t.Errorf("ParseAddr(%q) = %q, %q, %v; want %q, %q, ok=%v", c.in, network, address, err, c.network, c.address, c.ok)
		}
		if err != nil && !errors.Is(err, milter.ErrAddress) {
			t.Errorf("ParseAddr(%q): error %v does not wrap ErrAddress", c.in, err)
		}
	}
}

func TestParseMilters(t *testing.T) {
	ms, err := milter.ParseMilters(" inet:127.0.0.1:8891,unix:/run/a.sock  inet:[::1]:11332 ,")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"inet:127.0.0.1:8891", "unix:/run/a.sock", "inet:[::1]:11332"}
	if len(ms) != len(want) {
		t.Fatalf("got %v", ms)
	}
	for i, m := range ms {
		if m.Addr != want[i] || m.ConnectTimeout != 0 || m.CommandTimeout != 0 || m.EOMTimeout != 0 {
			t.Errorf("milter %d: %+v, want %s with default timeouts", i, m, want[i])
		}
	}
	if ms, err := milter.ParseMilters(""); err != nil || len(ms) != 0 {
		t.Errorf("empty list: %v, %v", ms, err)
	}
	if _, err := milter.ParseMilters("inet:127.0.0.1:8891 bogus"); err == nil {
		t.Error("a bad address in the list was accepted")
	}
}

func TestParseDefaultAction(t *testing.T) {
	for in, want := range map[string]milter.DefaultAction{"tempfail": milter.TempFail, "Accept": milter.Accept, " reject ": milter.Reject} {
		got, err := milter.ParseDefaultAction(in)
		if err != nil || got != want {
			t.Errorf("ParseDefaultAction(%q) = %v, %v", in, got, err)
		}
		if back, _ := milter.ParseDefaultAction(got.String()); back != got {
			t.Errorf("%v does not round-trip", got)
		}
	}
	for _, in := range []string{"", "quarantine", "shutdown", "tempfail2"} {
		if _, err := milter.ParseDefaultAction(in); err == nil {
			t.Errorf("ParseDefaultAction(%q) accepted", in)
		}
	}
	if milter.DefaultAction(7).String() != "DefaultAction(7)" {
		t.Error("String of an unknown action")
	}
}
