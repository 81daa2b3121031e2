package hostport

import (
	"errors"
	"hash/fnv"
	"net"
	"strconv"
	"testing"
)

// fuzzPool holds the addresses the fuzz resolver hands out. It is small so
// that names often collide, with each other and with literals.
var fuzzPool = []net.IP{
	net.ParseIP("127.0.0.1"),
	net.ParseIP("::1"),
	net.ParseIP("192.0.2.1").To4(),
	net.ParseIP("::ffff:192.0.2.1"),
	net.ParseIP("2001:db8::1"),
	net.ParseIP("fe80::1"),
	nil,             // invalid: must be skipped
	net.IP{1, 2, 3}, // invalid: must be skipped
	net.ParseIP("0.0.0.0"),
}

// fuzzResolver derives its answers from a hash of the name, so they are
// deterministic: an error, no address, or up to four pool addresses.
func fuzzResolver() Resolver {
	return Resolver{
		LookupIP: func(host string) ([]net.IP, error) {
			h := fnv.New64a()
			h.Write([]byte(host))
			v := h.Sum64()
			n := int(v % 6)
			if n == 5 {
				return nil, errors.New("no such host")
			}
			v /= 6
			ips := make([]net.IP, 0, n)
			for range n {
				ips = append(ips, fuzzPool[v%uint64(len(fuzzPool))])
				v /= uint64(len(fuzzPool))
			}
			return ips, nil
		},
		InterfaceAddrs: func() ([]net.Addr, error) { return fakeInterfaces, nil },
	}
}

func FuzzParse(f *testing.F) {
	seeds := [][2]string{
		{"127.0.0.1", "2525"},
		{"127.0.0.1, ::1, 192.0.2.1", "2525, 3535"},
		{"127.0.0.1, ::1", "2525, 2525:3535"},
		{"[::1], localhost", "0:0"},
		{"*", "25:587"},
		{"*, 127.0.0.1", "25"},
		{"mail.example.test, a, b, c", "25, 26:27, 28"},
		{"127.0.0.1, , ::1", "2525"},
		{"127.0.0.1", "2525,,3535"},
		{"127.0.0.1", "2525:"},
		{"fe80::1%eth0", "25"},
		{"[127.0.0.1]", "65536"},
		{"::ffff:127.0.0.1, 127.0.0.1", "025"},
		{"[::1]:25", "+1"},
		{"", ""},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	r := fuzzResolver()
	f.Fuzz(func(t *testing.T, hosts, ports string) {
		addrs, err := r.Parse(hosts, ports)
		if _, perr := PortSet(ports); perr != nil && err == nil {
			t.Fatalf("PortSet(%q) failed (%v) but Parse accepted it", ports, perr)
		}
		if err != nil {
			if addrs != nil {
				t.Fatalf("Parse(%q, %q) returned addresses and error %v", hosts, ports, err)
			}
			return
		}
		if len(addrs) == 0 {
			t.Fatalf("Parse(%q, %q) returned no address and no error", hosts, ports)
		}
		seen := make(map[string]bool)
		for _, a := range addrs {
			if len(a.IP) != net.IPv4len && len(a.IP) != net.IPv6len {
				t.Fatalf("Parse(%q, %q): invalid IP %v", hosts, ports, []byte(a.IP))
			}
			if len(a.IP) == net.IPv6len && a.IP.To4() != nil {
				t.Fatalf("Parse(%q, %q): IPv4 %v not normalized", hosts, ports, a.IP)
			}
			n, perr := strconv.ParseUint(a.Port, 10, 16)
			if perr != nil || strconv.FormatUint(n, 10) != a.Port {
				t.Fatalf("Parse(%q, %q): bad port %q", hosts, ports, a.Port)
			}
			if a.Host == "" {
				t.Fatalf("Parse(%q, %q): empty Host in %s", hosts, ports, a)
			}
			s := a.String()
			if s != net.JoinHostPort(a.IP.String(), a.Port) {
				t.Fatalf("Parse(%q, %q): String %q", hosts, ports, s)
			}
			if a.Port != "0" && seen[s] {
				t.Fatalf("Parse(%q, %q): duplicate %s", hosts, ports, s)
			}
			seen[s] = true
		}
	})
}
