// Package hostport expands the Hosts and Ports option strings of smtpd into
// the list of addresses to listen on. It follows the rules of Ruby's
// MidiSmtpServer (version 2.3 and later):
//
//   - Hosts and Ports are comma-separated lists; each item is trimmed of
//     surrounding white space.
//   - Hosts item i uses Ports item i; a host beyond the last Ports item
//     uses the last Ports item. So "2525" serves every host on 2525, and
//     "2525, 3535" serves the first host on 2525 and every further host on
//     3535.
//   - A Ports item may list several ports separated by colons: "2525:3535"
//     serves both ports on its host(s).
//   - A Hosts item is an IP literal ("127.0.0.1", "::1" or "[::1]"), a host
//     name, resolved to all its IPv4 and IPv6 addresses in the order the
//     resolver returns them, or "*", every local interface address.
//   - The result is ordered by hosts, then by the addresses of a host, then
//     by its ports.
//   - The same address listed twice (for example "localhost, 127.0.0.1"
//     where localhost resolves to 127.0.0.1) is an error saying "address
//     already in use", as Ruby's bind raises.
//
// Where Ruby is silent, lenient or odd, this package decides:
//
//   - Ruby removes every space from the strings; here items and the ports
//     of an item are trimmed of surrounding white space only, so a space
//     inside a host name or a port is an error.
//   - Ruby binds the deprecated empty Hosts string to "*" and silently drops
//     trailing empty items ("2525," or "2525:"). Here an empty Hosts or Ports
//     string and every empty item or port, wherever it is, is an error.
//   - Ruby passes ports to the socket layer unchecked (a service name such
//     as "smtp" would work). Here a port is a decimal number 0..65535 and is
//     returned in canonical form ("02525" becomes "2525").
//   - When there are more Ports items than Hosts items, the extra Ports
//     items are not used, as in Ruby; they are still checked for syntax.
//   - Ruby drops a name that resolves to nothing without a word; here a name
//     that does not resolve, or resolves to no address, is an error. The
//     addresses of one name are deduplicated (as Ruby does).
//   - "*" keeps loopback and every other unicast interface address but drops
//     unspecified, multicast and link-local addresses (fe80::/10 and, unlike
//     Ruby, 169.254.0.0/16), as well as the deprecated IPv6 site-local
//     (fec0::/10) and IPv4-compatible (::a.b.c.d) addresses, which Ruby drops
//     too. An address found on several interfaces is kept once. "*" finding
//     no address is an error.
//   - IPv4-mapped IPv6 addresses ("::ffff:127.0.0.1") are IPv4 addresses:
//     they are returned as such and collide with the plain IPv4 form.
//   - An IPv6 zone ("fe80::1%eth0") is not supported: net.IP cannot carry it.
//   - Brackets are only for IPv6 literals; "[127.0.0.1]" is an error, and
//     so is a host item holding a port ("127.0.0.1:2525"): ports belong in
//     Ports.
//   - Port 0 asks the system for an ephemeral port; two binds of the same IP
//     on port 0 get different ports and do not clash, so the same IP may be
//     listed more than once with port 0.
//   - Only identical addresses are detected. That "0.0.0.0" or "::" overlaps
//     with a specific address on the same port is left to the bind.
package hostport

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Resolver looks names up; tests replace it. LookupIP is used for host
// names, InterfaceAddrs for "*". The zero Resolver uses the system.
type Resolver struct {
	LookupIP       func(host string) ([]net.IP, error) // nil: net.LookupIP
	InterfaceAddrs func() ([]net.Addr, error)          // nil: net.InterfaceAddrs
}

// Addr is one address to bind.
type Addr struct {
	// IP is the address: 4 bytes for IPv4, 16 bytes for IPv6. Never nil.
	IP net.IP
	// Port is the port in canonical decimal form; "0" asks for an
	// ephemeral port.
	Port string
	// Host is the Hosts item the address came from, trimmed and without
	// IPv6 brackets: a host name, an IP literal or "*". It is meant for
	// certificate names.
	Host string
}

// String returns net.JoinHostPort(IP.String(), Port).
func (a Addr) String() string {
	return net.JoinHostPort(a.IP.String(), a.Port)
}

// hostKind tells how a Hosts item is turned into addresses.
type hostKind int

const (
	hostLiteral hostKind = iota
	hostName
	hostWildcard
)

// hostItem is one checked Hosts item.
type hostItem struct {
	kind hostKind
	name string // the item, trimmed and without brackets
	ip   net.IP // for hostLiteral
}

// Parse expands hosts and ports into the addresses to bind, in hosts order,
// then address order, then port order. It checks the syntax of every item
// before looking any name up. Errors name the bad item: an empty hosts or
// ports string, an empty item or port, a port that is not 0..65535, a host
// item that is not a valid literal or name, a name that does not resolve, "*"
// finding no address, and an address listed twice ("address already in
// use"). See the package documentation for the rules.
func (r Resolver) Parse(hosts, ports string) ([]Addr, error) {
	portItems, err := parsePortItems(ports)
	if err != nil {
		return nil, err
	}
	rawHosts, err := splitItems("hosts", hosts)
	if err != nil {
		return nil, err
	}
	items := make([]hostItem, len(rawHosts))
	for i, raw := range rawHosts {
		if items[i], err = parseHost(i, raw); err != nil {
			return nil, err
		}
	}

	type origin struct {
		index int
		host  string
	}
	seen := make(map[string]origin)
	var addrs []Addr
	for i, item := range items {
		ips, err := r.expand(i, item)
		if err != nil {
			return nil, err
		}
		hostPorts := portItems[min(i, len(portItems)-1)]
		for _, ip := range ips {
			for _, port := range hostPorts {
				a := Addr{IP: cloneIP(ip), Port: port, Host: item.name}
				key := a.String()
				if prev, ok := seen[key]; ok {
					if prev.index == i {
						return nil, fmt.Errorf("hostport: address already in use: %s (listed twice by hosts item %d %q)",
							key, i+1, item.name)
					}
					return nil, fmt.Errorf("hostport: address already in use: %s (hosts item %d %q repeats hosts item %d %q)",
						key, i+1, item.name, prev.index+1, prev.host)
				}
				if port != "0" {
					seen[key] = origin{i, item.name}
				}
				addrs = append(addrs, a)
			}
		}
	}
	return addrs, nil
}

// PortSet parses a Ports-syntax string used to pick ports ("4650",
// "465, 4650", "465:4650", or a mix) into a set keyed by canonical decimal
// port. The syntax rules and errors are those of Parse; a port listed twice
// is not an error.
func PortSet(ports string) (map[string]bool, error) {
	items, err := parsePortItems(ports)
	if err != nil {
		return nil, err
	}
	set := make(map[string]bool)
	for _, item := range items {
		for _, p := range item {
			set[p] = true
		}
	}
	return set, nil
}

// splitItems splits s at commas and trims every item. It fails on an empty
// s or an empty item.
func splitItems(what, s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		if what == "hosts" {
			return nil, fmt.Errorf(`hostport: no hosts given (use "*" for every local address)`)
		}
		return nil, fmt.Errorf("hostport: no %s given", what)
	}
	items := strings.Split(s, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
		if items[i] == "" {
			return nil, fmt.Errorf("hostport: %s item %d is empty in %q", what, i+1, s)
		}
	}
	return items, nil
}

// parsePortItems parses every Ports item into its list of canonical ports.
func parsePortItems(ports string) ([][]string, error) {
	raw, err := splitItems("ports", ports)
	if err != nil {
		return nil, err
	}
	items := make([][]string, len(raw))
	for i, item := range raw {
		parts := strings.Split(item, ":")
		for j, p := range parts {
			p = strings.TrimSpace(p)
			if p == "" {
				return nil, fmt.Errorf("hostport: ports item %d %q has an empty port", i+1, item)
			}
			if parts[j], err = parsePort(p); err != nil {
				return nil, fmt.Errorf("hostport: ports item %d %q: %w", i+1, item, err)
			}
		}
		items[i] = parts
	}
	return items, nil
}

// parsePort checks that p is a decimal number 0..65535 and returns it in
// canonical form.
func parsePort(p string) (string, error) {
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return "", fmt.Errorf("port %q is not a number 0..65535", p)
		}
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", fmt.Errorf("port %q is not a number 0..65535", p)
	}
	return strconv.FormatUint(n, 10), nil
}

// parseHost checks the syntax of the Hosts item raw (index i, 0-based) and
// classifies it. It does not look anything up.
func parseHost(i int, raw string) (hostItem, error) {
	if raw == "*" {
		return hostItem{kind: hostWildcard, name: raw}, nil
	}
	s := raw
	bracketed := strings.HasPrefix(s, "[") || strings.HasSuffix(s, "]")
	if bracketed {
		if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
			if strings.Contains(s, "]:") {
				return hostItem{}, fmt.Errorf("hostport: hosts item %d %q holds a port (ports belong in Ports)", i+1, raw)
			}
			return hostItem{}, fmt.Errorf("hostport: hosts item %d %q has unbalanced brackets", i+1, raw)
		}
		s = s[1 : len(s)-1]
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return hostItem{}, fmt.Errorf("hostport: hosts item %d %q: IPv6 zones are not supported", i+1, raw)
		}
		if bracketed && !a.Is6() {
			return hostItem{}, fmt.Errorf("hostport: hosts item %d %q: brackets are only for IPv6 addresses", i+1, raw)
		}
		return hostItem{kind: hostLiteral, name: s, ip: net.IP(a.Unmap().AsSlice())}, nil
	}
	if bracketed {
		return hostItem{}, fmt.Errorf("hostport: hosts item %d %q is not a valid IPv6 address", i+1, raw)
	}
	if strings.Contains(s, ":") {
		return hostItem{}, fmt.Errorf("hostport: hosts item %d %q is not a valid IP address (ports belong in Ports)", i+1, raw)
	}
	if err := checkName(s); err != nil {
		return hostItem{}, fmt.Errorf("hostport: hosts item %d %q is not a valid host name: %w", i+1, raw, err)
	}
	return hostItem{kind: hostName, name: s}, nil
}

// checkName rejects characters that cannot be part of a host name. It is
// deliberately lenient about everything else (underscores, non-ASCII
// letters, label lengths): the resolver is the judge of those.
func checkName(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("invalid UTF-8")
	}
	for _, c := range s {
		switch {
		case c == '%':
			return fmt.Errorf("contains %q (IPv6 zones are not supported)", c)
		case unicode.IsSpace(c) || unicode.IsControl(c):
			return fmt.Errorf("contains white space or a control character")
		case strings.ContainsRune(`*/\[]@?#"'<>(){};|`, c):
			return fmt.Errorf("contains %q", c)
		}
	}
	return nil
}

// expand returns the addresses of the checked Hosts item (index i, 0-based).
func (r Resolver) expand(i int, item hostItem) ([]net.IP, error) {
	switch item.kind {
	case hostLiteral:
		return []net.IP{item.ip}, nil
	case hostWildcard:
		return r.interfaceIPs(i)
	}
	lookup := r.LookupIP
	if lookup == nil {
		lookup = net.LookupIP
	}
	found, err := lookup(item.name)
	if err != nil {
		return nil, fmt.Errorf("hostport: hosts item %d %q does not resolve: %w", i+1, item.name, err)
	}
	ips := uniqueIPs(found, nil)
	if len(ips) == 0 {
		return nil, fmt.Errorf("hostport: hosts item %d %q resolves to no address", i+1, item.name)
	}
	return ips, nil
}

// interfaceIPs returns the usable local interface addresses for "*" (Hosts
// item i, 0-based).
func (r Resolver) interfaceIPs(i int) ([]net.IP, error) {
	list := r.InterfaceAddrs
	if list == nil {
		list = net.InterfaceAddrs
	}
	addrs, err := list()
	if err != nil {
		return nil, fmt.Errorf("hostport: hosts item %d \"*\": listing interface addresses: %w", i+1, err)
	}
	found := make([]net.IP, 0, len(addrs))
	for _, a := range addrs {
		switch a := a.(type) {
		case *net.IPNet:
			found = append(found, a.IP)
		case *net.IPAddr:
			found = append(found, a.IP)
		}
	}
	ips := uniqueIPs(found, wildcardUsable)
	if len(ips) == 0 {
		return nil, fmt.Errorf("hostport: hosts item %d \"*\" found no usable interface address", i+1)
	}
	return ips, nil
}

// uniqueIPs returns the valid IPs of in, normalized to 4 bytes for IPv4,
// first occurrence first, skipping those keep rejects (keep may be nil).
func uniqueIPs(in []net.IP, keep func(net.IP) bool) []net.IP {
	var out []net.IP
	seen := make(map[string]bool, len(in))
	for _, ip := range in {
		ip = normalize(ip)
		if ip == nil || (keep != nil && !keep(ip)) {
			continue
		}
		k := string(ip)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, ip)
	}
	return out
}

// normalize returns ip as 4 bytes for IPv4 (including IPv4-mapped IPv6) or
// 16 bytes for IPv6, or nil when ip is not a valid address.
func normalize(ip net.IP) net.IP {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	if len(ip) == net.IPv6len {
		return ip
	}
	return nil
}

// wildcardUsable reports whether the normalized interface address ip is
// kept for "*".
func wildcardUsable(ip net.IP) bool {
	if ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalUnicast() {
		return false
	}
	if len(ip) == net.IPv4len {
		return !ip.Equal(net.IPv4bcast)
	}
	if ip.IsLoopback() {
		return true
	}
	// Deprecated site-local fec0::/10.
	if ip[0] == 0xfe && ip[1]&0xc0 == 0xc0 {
		return false
	}
	// Deprecated IPv4-compatible ::a.b.c.d (::/96 apart from ::1 and ::).
	for _, b := range ip[:12] {
		if b != 0 {
			return true
		}
	}
	return false
}

// cloneIP returns a copy of ip, so that no two Addr share memory with each
// other or with the resolver.
func cloneIP(ip net.IP) net.IP {
	return append(net.IP(nil), ip...)
}
