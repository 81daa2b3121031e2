package hostport

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeNames is the fake DNS of the tests. A name missing here does not
// resolve.
var fakeNames = map[string][]string{
	"localhost":         {"127.0.0.1", "::1"},
	"mail.example.test": {"2001:db8::10", "192.0.2.10"},
	"v4only.test":       {"192.0.2.20"},
	"dup.test":          {"192.0.2.30", "::ffff:192.0.2.30", "192.0.2.30", "2001:db8::30"},
	"empty.test":        {},
}

// fakeInterfaces are the fake local interface addresses, in order. Only
// 127.0.0.1, 192.0.2.1, 10.0.0.1, ::1, 2001:db8::1 and fd00::1 are usable.
var fakeInterfaces = []net.Addr{
	cidr("127.0.0.1/8"),
	cidr("192.0.2.1/24"),
	cidr("169.254.7.7/16"), // IPv4 link-local
	&net.IPNet{IP: net.ParseIP("10.0.0.1"), Mask: net.CIDRMask(8, 32)}, // 16-byte IPv4
	cidr("0.0.0.0/0"),
	cidr("224.0.0.1/4"),
	cidr("::1/128"),
	cidr("fe80::1/64"), // IPv6 link-local
	cidr("2001:db8::1/64"),
	&net.IPAddr{IP: net.ParseIP("fd00::1")}, // unique local, other Addr type
	cidr("fec0::1/10"),                      // deprecated site-local
	cidr("::192.0.2.5/96"),                  // deprecated IPv4-compatible
	cidr("ff02::1/16"),
	cidr("192.0.2.1/24"), // same address on a second interface
	&net.UnixAddr{Name: "/tmp/sock", Net: "unix"},
}

// cidr returns the interface address s ("ip/bits") as a *net.IPNet.
func cidr(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

// fakeLookup resolves names from fakeNames.
func fakeLookup(host string) ([]net.IP, error) {
	list, ok := fakeNames[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	ips := make([]net.IP, 0, len(list))
	for _, s := range list {
		ips = append(ips, net.ParseIP(s))
	}
	return ips, nil
}

// fake returns a Resolver using fakeNames and interfaces.
func fake(interfaces ...net.Addr) Resolver {
	return Resolver{
		LookupIP:       fakeLookup,
		InterfaceAddrs: func() ([]net.Addr, error) { return interfaces, nil },
	}
}

// addrStrings returns the String of every Addr.
func addrStrings(t *testing.T, addrs []Addr) []string {
	t.Helper()
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		hosts string
		ports string
		want  []string
	}{
		{"one host one port", "127.0.0.1", "2525", []string{"127.0.0.1:2525"}},
		{"one port on every host", "127.0.0.1, ::1, 192.0.2.1", "2525",
			[]string{"127.0.0.1:2525", "[::1]:2525", "192.0.2.1:2525"}},
		{"last port item repeats", "127.0.0.1, ::1, 192.0.2.1", "2525, 3535",
			[]string{"127.0.0.1:2525", "[::1]:3535", "192.0.2.1:3535"}},
		{"colon lists ports on every host", "127.0.0.1, ::1", "2525:3535",
			[]string{"127.0.0.1:2525", "127.0.0.1:3535", "[::1]:2525", "[::1]:3535"}},
		{"mixed items", "127.0.0.1, ::1", "2525, 2525:3535",
			[]string{"127.0.0.1:2525", "[::1]:2525", "[::1]:3535"}},
		{"one item per host", "127.0.0.1, ::1, 192.0.2.1", "2525, 3535, 2525",
			[]string{"127.0.0.1:2525", "[::1]:3535", "192.0.2.1:2525"}},
		{"readme mix", "127.0.0.1, ::1, 192.0.2.1", "2525, 2525:3535, 2525",
			[]string{"127.0.0.1:2525", "[::1]:2525", "[::1]:3535", "192.0.2.1:2525"}},
		{"three ports in one item", "127.0.0.1", "2525:3535:4545",
			[]string{"127.0.0.1:2525", "127.0.0.1:3535", "127.0.0.1:4545"}},
		{"more port items than hosts", "127.0.0.1", "2525, 3535, 4545", []string{"127.0.0.1:2525"}},
		{"white space trimmed", " \t127.0.0.1 ,\n::1  ", "  2525 , 2525 : 3535 ",
			[]string{"127.0.0.1:2525", "[::1]:2525", "[::1]:3535"}},
		{"no spaces", "127.0.0.1,::1", "2525,3535", []string{"127.0.0.1:2525", "[::1]:3535"}},
		{"bracketed IPv6", "[::1], [2001:db8::1]", "25", []string{"[::1]:25", "[2001:db8::1]:25"}},
		{"IPv4-mapped IPv6 is IPv4", "::ffff:192.0.2.7, [::ffff:192.0.2.8]", "25",
			[]string{"192.0.2.7:25", "192.0.2.8:25"}},
		{"unspecified literals", "0.0.0.0, ::", "25", []string{"0.0.0.0:25", "[::]:25"}},
		{"port zero", "127.0.0.1", "0", []string{"127.0.0.1:0"}},
		{"port zero twice", "127.0.0.1", "0:0", []string{"127.0.0.1:0", "127.0.0.1:0"}},
		{"port zero on repeated host", "127.0.0.1, 127.0.0.1", "0", []string{"127.0.0.1:0", "127.0.0.1:0"}},
		{"same host different ports", "127.0.0.1, 127.0.0.1", "2525, 3535",
			[]string{"127.0.0.1:2525", "127.0.0.1:3535"}},
		{"canonical ports", "127.0.0.1", "02525:00:65535", []string{"127.0.0.1:2525", "127.0.0.1:0", "127.0.0.1:65535"}},
		{"name resolves to all addresses in order", "localhost", "2525",
			[]string{"127.0.0.1:2525", "[::1]:2525"}},
		{"name IPv6 first as returned", "mail.example.test", "25",
			[]string{"[2001:db8::10]:25", "192.0.2.10:25"}},
		{"names and ports", "mail.example.test, localhost", "25, 2525:3535",
			[]string{"[2001:db8::10]:25", "192.0.2.10:25",
				"127.0.0.1:2525", "127.0.0.1:3535", "[::1]:2525", "[::1]:3535"}},
		{"name addresses deduplicated", "dup.test", "25", []string{"192.0.2.30:25", "[2001:db8::30]:25"}},
		{"names and literals", "v4only.test, ::1", "25", []string{"192.0.2.20:25", "[::1]:25"}},
		{"wildcard", "*", "2525", []string{
			"127.0.0.1:2525", "192.0.2.1:2525", "10.0.0.1:2525",
			"[::1]:2525", "[2001:db8::1]:2525", "[fd00::1]:2525"}},
		{"wildcard with two ports", "*", "25:587", []string{
			"127.0.0.1:25", "127.0.0.1:587", "192.0.2.1:25", "192.0.2.1:587", "10.0.0.1:25", "10.0.0.1:587",
			"[::1]:25", "[::1]:587", "[2001:db8::1]:25", "[2001:db8::1]:587", "[fd00::1]:25", "[fd00::1]:587"}},
		{"wildcard after a host", "192.0.2.99, *", "25, 2525", []string{
			"192.0.2.99:25",
			"127.0.0.1:2525", "192.0.2.1:2525", "10.0.0.1:2525",
			"[::1]:2525", "[2001:db8::1]:2525", "[fd00::1]:2525"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fake(fakeInterfaces...).Parse(tt.hosts, tt.ports)
			require.NoError(t, err)
			require.Equal(t, tt.want, addrStrings(t, got))
		})
	}
}

func TestParseErrors(t *testing.T) {
	linkLocalOnly := []net.Addr{cidr("169.254.1.1/16"), cidr("fe80::1/64")}
	tests := []struct {
		name     string
		hosts    string
		ports    string
		ifaces   []net.Addr // nil: fakeInterfaces
		ifaceErr error
		want     []string // substrings of the error
	}{
		{name: "no hosts", hosts: "", ports: "2525", want: []string{"no hosts given", `"*"`}},
		{name: "blank hosts", hosts: "  ", ports: "2525", want: []string{"no hosts given"}},
		{name: "no ports", hosts: "127.0.0.1", ports: "", want: []string{"no ports given"}},
		{name: "blank ports", hosts: "127.0.0.1", ports: " \t", want: []string{"no ports given"}},
		{name: "empty inner host", hosts: "127.0.0.1, , ::1", ports: "2525",
			want: []string{"hosts item 2 is empty", `"127.0.0.1, , ::1"`}},
		{name: "empty trailing host", hosts: "127.0.0.1,", ports: "2525", want: []string{"hosts item 2 is empty"}},
		{name: "empty leading host", hosts: ",127.0.0.1", ports: "2525", want: []string{"hosts item 1 is empty"}},
		{name: "only commas", hosts: ",,", ports: "2525", want: []string{"hosts item 1 is empty"}},
		{name: "empty inner port item", hosts: "127.0.0.1", ports: "2525,,3535",
			want: []string{"ports item 2 is empty", `"2525,,3535"`}},
		{name: "empty trailing port item", hosts: "127.0.0.1", ports: "2525,", want: []string{"ports item 2 is empty"}},
		{name: "empty trailing port", hosts: "127.0.0.1", ports: "2525:", want: []string{`ports item 1 "2525:" has an empty port`}},
		{name: "empty leading port", hosts: "127.0.0.1", ports: ":2525", want: []string{`ports item 1 ":2525" has an empty port`}},
		{name: "empty middle port", hosts: "127.0.0.1", ports: "25, 2525::3535", want: []string{`ports item 2 "2525::3535" has an empty port`}},
		{name: "blank port", hosts: "127.0.0.1", ports: "2525: ", want: []string{"has an empty port"}},
		{name: "port too big", hosts: "127.0.0.1", ports: "65536", want: []string{`port "65536" is not a number 0..65535`}},
		{name: "port far too big", hosts: "127.0.0.1", ports: "99999999999999999999999", want: []string{"is not a number 0..65535"}},
		{name: "negative port", hosts: "127.0.0.1", ports: "-1", want: []string{`port "-1"`}},
		{name: "signed port", hosts: "127.0.0.1", ports: "+25", want: []string{`port "+25"`}},
		{name: "service name", hosts: "127.0.0.1", ports: "smtp", want: []string{`ports item 1 "smtp"`}},
		{name: "space inside port", hosts: "127.0.0.1", ports: "25 25", want: []string{`port "25 25"`}},
		{name: "bad unused port item", hosts: "127.0.0.1", ports: "2525, x", want: []string{`ports item 2 "x"`}},
		{name: "name does not resolve", hosts: "127.0.0.1, nowhere.test", ports: "25",
			want: []string{`hosts item 2 "nowhere.test" does not resolve`, "no such host"}},
		{name: "name resolves to nothing", hosts: "empty.test", ports: "25",
			want: []string{`hosts item 1 "empty.test" resolves to no address`}},
		{name: "zone", hosts: "fe80::1%eth0", ports: "25", want: []string{`"fe80::1%eth0"`, "zones are not supported"}},
		{name: "bracketed zone", hosts: "[fe80::1%25eth0]", ports: "25", want: []string{"zones are not supported"}},
		{name: "zone on a name", hosts: "host%eth0", ports: "25", want: []string{"zones are not supported"}},
		{name: "bracketed IPv4", hosts: "[127.0.0.1]", ports: "25", want: []string{"brackets are only for IPv6"}},
		{name: "bracketed name", hosts: "[localhost]", ports: "25", want: []string{`"[localhost]" is not a valid IPv6 address`}},
		{name: "unbalanced open", hosts: "[::1", ports: "25", want: []string{`"[::1" has unbalanced brackets`}},
		{name: "unbalanced close", hosts: "::1]", ports: "25", want: []string{"unbalanced brackets"}},
		{name: "lone bracket", hosts: "[", ports: "25", want: []string{"unbalanced brackets"}},
		{name: "host with port", hosts: "127.0.0.1:2525", ports: "25", want: []string{"not a valid IP address", "ports belong in Ports"}},
		{name: "bracketed host with port", hosts: "[::1]:2525", ports: "25", want: []string{`"[::1]:2525" holds a port`, "ports belong in Ports"}},
		{name: "bad IPv6", hosts: "::1::2", ports: "25", want: []string{`"::1::2" is not a valid IP address`}},
		{name: "space inside name", hosts: "my host", ports: "25", want: []string{`"my host" is not a valid host name`}},
		{name: "wildcard in name", hosts: "*.example.test", ports: "25", want: []string{"is not a valid host name", `'*'`}},
		{name: "double wildcard", hosts: "**", ports: "25", want: []string{"is not a valid host name"}},
		{name: "invalid UTF-8", hosts: "a\xffb", ports: "25", want: []string{"invalid UTF-8"}},
		{name: "wildcard finds nothing", hosts: "*", ports: "25", ifaces: linkLocalOnly,
			want: []string{`hosts item 1 "*" found no usable interface address`}},
		{name: "wildcard interface error", hosts: "127.0.0.1, *", ports: "25", ifaceErr: errors.New("boom"),
			want: []string{`hosts item 2 "*": listing interface addresses: boom`}},
		{name: "name repeats literal", hosts: "localhost, 127.0.0.1", ports: "2525",
			want: []string{"address already in use", "127.0.0.1:2525", `hosts item 2 "127.0.0.1"`, `hosts item 1 "localhost"`}},
		{name: "same literal twice", hosts: "::1, [::1]", ports: "2525", want: []string{"address already in use", "[::1]:2525"}},
		{name: "port twice in an item", hosts: "127.0.0.1", ports: "2525:2525",
			want: []string{"address already in use", "127.0.0.1:2525", `listed twice by hosts item 1 "127.0.0.1"`}},
		{name: "canonical port twice", hosts: "127.0.0.1", ports: "25:025", want: []string{"address already in use", "127.0.0.1:25"}},
		{name: "mapped repeats IPv4", hosts: "127.0.0.1, ::ffff:127.0.0.1", ports: "25",
			want: []string{"address already in use", "127.0.0.1:25"}},
		{name: "wildcard repeats literal", hosts: "*, ::1", ports: "25", want: []string{"address already in use", "[::1]:25"}},
		{name: "names overlap", hosts: "localhost, dup.test, mail.example.test, v4only.test, 192.0.2.10", ports: "25",
			want: []string{"address already in use", "192.0.2.10:25", `hosts item 5 "192.0.2.10"`, `hosts item 3 "mail.example.test"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fake(fakeInterfaces...)
			if tt.ifaces != nil {
				r = fake(tt.ifaces...)
			}
			if tt.ifaceErr != nil {
				r.InterfaceAddrs = func() ([]net.Addr, error) { return nil, tt.ifaceErr }
			}
			got, err := r.Parse(tt.hosts, tt.ports)
			require.Error(t, err)
			require.Nil(t, got)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

// TestParseWrapsResolverError checks that the resolver's error can be
// inspected.
func TestParseWrapsResolverError(t *testing.T) {
	_, err := fake().Parse("nowhere.test", "25")
	var dnsErr *net.DNSError
	require.ErrorAs(t, err, &dnsErr)
	require.True(t, dnsErr.IsNotFound)
}

// TestParseChecksSyntaxBeforeLookups checks that a bad item anywhere fails
// before any name is looked up or interface listed.
func TestParseChecksSyntaxBeforeLookups(t *testing.T) {
	tests := []struct {
		name  string
		hosts string
		ports string
	}{
		{"bad later host", "localhost, *, [::1", "25"},
		{"bad port", "localhost, *", "25, x"},
		{"empty host", "localhost, *,", "25"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Resolver{
				LookupIP: func(host string) ([]net.IP, error) {
					t.Errorf("LookupIP(%q) called", host)
					return nil, errors.New("unexpected")
				},
				InterfaceAddrs: func() ([]net.Addr, error) {
					t.Error("InterfaceAddrs called")
					return nil, errors.New("unexpected")
				},
			}
			_, err := r.Parse(tt.hosts, tt.ports)
			require.Error(t, err)
		})
	}
}

func TestParseAddrFields(t *testing.T) {
	tests := []struct {
		name   string
		hosts  string
		ports  string
		want   []Addr
		ipLens []int
	}{
		{"literal IPv4", "127.0.0.1", "25",
			[]Addr{{IP: net.IPv4(127, 0, 0, 1), Port: "25", Host: "127.0.0.1"}}, []int{4}},
		{"bracketed IPv6", " [::1] ", "25",
			[]Addr{{IP: net.IPv6loopback, Port: "25", Host: "::1"}}, []int{16}},
		{"mapped", "::ffff:192.0.2.7", "25",
			[]Addr{{IP: net.IPv4(192, 0, 2, 7), Port: "25", Host: "::ffff:192.0.2.7"}}, []int{4}},
		{"name", "localhost", "0025", []Addr{
			{IP: net.IPv4(127, 0, 0, 1), Port: "25", Host: "localhost"},
			{IP: net.IPv6loopback, Port: "25", Host: "localhost"},
		}, []int{4, 16}},
		{"wildcard", "*", "25", []Addr{
			{IP: net.IPv4(10, 0, 0, 1), Port: "25", Host: "*"},
		}, []int{4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fake(&net.IPNet{IP: net.ParseIP("10.0.0.1"), Mask: net.CIDRMask(8, 32)}).Parse(tt.hosts, tt.ports)
			require.NoError(t, err)
			require.Len(t, got, len(tt.want))
			for i, a := range got {
				require.True(t, a.IP.Equal(tt.want[i].IP), "IP %v, want %v", a.IP, tt.want[i].IP)
				require.Len(t, a.IP, tt.ipLens[i])
				require.Equal(t, tt.want[i].Port, a.Port)
				require.Equal(t, tt.want[i].Host, a.Host)
			}
		})
	}
}

// TestParseCopiesIPs checks that an Addr shares no memory with another Addr
// or with what the resolver returned.
func TestParseCopiesIPs(t *testing.T) {
	shared := net.ParseIP("192.0.2.1").To4()
	r := Resolver{LookupIP: func(string) ([]net.IP, error) { return []net.IP{shared}, nil }}
	got, err := r.Parse("a.test", "25:26")
	require.NoError(t, err)
	require.Len(t, got, 2)
	got[0].IP[3] = 99
	require.Equal(t, "192.0.2.1:26", got[1].String())
	require.Equal(t, "192.0.2.1", shared.String())
}

func TestAddrString(t *testing.T) {
	tests := []struct {
		addr Addr
		want string
	}{
		{Addr{IP: net.IPv4(127, 0, 0, 1), Port: "2525"}, "127.0.0.1:2525"},
		{Addr{IP: net.IPv6loopback, Port: "0"}, "[::1]:0"},
		{Addr{IP: net.ParseIP("2001:db8::1"), Port: "25", Host: "mail.example.test"}, "[2001:db8::1]:25"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			require.Equal(t, tt.want, tt.addr.String())
		})
	}
}

func TestPortSet(t *testing.T) {
	tests := []struct {
		name    string
		ports   string
		want    []string
		wantErr string
	}{
		{name: "one", ports: "4650", want: []string{"4650"}},
		{name: "items", ports: "465, 4650", want: []string{"465", "4650"}},
		{name: "colon", ports: "465:4650", want: []string{"465", "4650"}},
		{name: "mixed", ports: " 25, 465 : 4650 ,587", want: []string{"25", "465", "4650", "587"}},
		{name: "repeated", ports: "465, 465:0465", want: []string{"465"}},
		{name: "zero", ports: "0", want: []string{"0"}},
		{name: "empty", ports: "", wantErr: "no ports given"},
		{name: "empty item", ports: "465,,4650", wantErr: "ports item 2 is empty"},
		{name: "empty port", ports: "465:", wantErr: "has an empty port"},
		{name: "too big", ports: "465, 70000", wantErr: `port "70000" is not a number 0..65535`},
		{name: "name", ports: "smtps", wantErr: `port "smtps"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PortSet(tt.ports)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			want := make(map[string]bool)
			for _, p := range tt.want {
				want[p] = true
			}
			require.Equal(t, want, got)
		})
	}
}

func TestWildcardUsable(t *testing.T) {
	tests := []struct {
		ip   string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.1.2.3", true},
		{"10.1.2.3", true},
		{"192.168.1.1", true},
		{"203.0.113.9", true},
		{"169.254.0.1", false},
		{"0.0.0.0", false},
		{"224.0.0.251", false},
		{"255.255.255.255", false},
		{"::1", true},
		{"2001:db8::1", true},
		{"fd12:3456::1", true},
		{"fc00::1", true},
		{"fe80::1", false},
		{"febf::1", false},
		{"fec0::1", false},
		{"feff::1", false},
		{"::", false},
		{"::192.0.2.1", false},
		{"ff02::1", false},
		{"ff0e::1", false},
		{"64:ff9b::192.0.2.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			ip := normalize(net.ParseIP(tt.ip))
			require.NotNil(t, ip)
			require.Equal(t, tt.want, wildcardUsable(ip))
		})
	}
}

// TestParseSystemResolver uses the real resolver, for loopback names only.
func TestParseSystemResolver(t *testing.T) {
	tests := []struct {
		name     string
		hosts    string
		minAddrs int
	}{
		{"literals", "127.0.0.1, ::1", 2},
		{"localhost", "localhost", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Resolver{}.Parse(tt.hosts, "0")
			require.NoError(t, err)
			require.GreaterOrEqual(t, len(got), tt.minAddrs)
			for _, a := range got {
				require.True(t, a.IP.IsLoopback(), "%s is not loopback", a)
				require.Equal(t, "0", a.Port)
				require.Equal(t, strings.Trim(a.Host, " "), a.Host)
			}
		})
	}
}

// TestParseSystemWildcard lists the real interfaces (no traffic is sent).
func TestParseSystemWildcard(t *testing.T) {
	if _, err := net.InterfaceAddrs(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and the interface addresses cannot be listed: %v", err)
		}
		t.Skipf("no interface addresses: %v", err)
	}
	got, err := Resolver{}.Parse("*", "0")
	require.NoError(t, err)
	require.NotEmpty(t, got)
	for _, a := range got {
		require.False(t, a.IP.IsLinkLocalUnicast(), "%s is link-local", a)
		require.False(t, a.IP.IsUnspecified(), "%s is unspecified", a)
		require.False(t, a.IP.IsMulticast(), "%s is multicast", a)
		require.Equal(t, "*", a.Host)
	}
}
