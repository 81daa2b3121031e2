package mailauth

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Resolver is how every check of this package asks DNS. *net.Resolver satisfies it,
// as does the one NewResolver returns.
//
// The checks tell "no such record" from "try again later" by the error's type: return
// a *net.DNSError, not wrapped, with IsNotFound set for NXDOMAIN and for no data, and
// IsTimeout or IsTemporary set for timeouts and server failures (the SPF library
// asserts that type; a wrapped error turns none and temperror into permerror).
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
}

// NewResolver returns a Resolver that asks the one DNS server at hostport
// ("127.0.0.1:5353") for every lookup, PTR included (asked itself, never
// /etc/hosts), over UDP with TCP on truncation. It is a *DNSClient with its defaults.
// Its errors are *net.DNSError with IsNotFound set for NXDOMAIN and no data, and
// IsTimeout/IsTemporary set for timeouts and SERVFAIL.
func NewResolver(hostport string) Resolver {
	return &DNSClient{Server: hostport}
}

// DNSClient is a stub resolver that asks one server (RFC 1035 over UDP, RFC 7766 over
// TCP when the UDP answer is truncated). Names are asked as given, rooted: no search
// list, no /etc/hosts. Each query has a random ID; an answer counts only when its ID
// and question match the query, so stray or spoofed packets are ignored. CNAME chains
// are followed (at most 8 links). Its zero value is not usable: set Server.
type DNSClient struct {
	Server   string        // "host:port" of the one DNS server
	Timeout  time.Duration // per UDP attempt and per TCP exchange; 0: 2 s
	Attempts int           // UDP attempts before giving up; 0: 3
}

const (
	defaultDNSTimeout  = 2 * time.Second
	defaultDNSAttempts = 3
	maxCNAMELinks      = 8
	ednsPayload        = 1232 // the EDNS(0) UDP size of DNS Flag Day 2020
)

// LookupTXT returns the TXT records of name, each record's strings joined.
func (c *DNSClient) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := c.lookup(ctx, name, dnsmessage.TypeTXT)
	if err != nil {
		return nil, err
	}
	txts := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		if t, ok := rr.Body.(*dnsmessage.TXTResource); ok {
			txts = append(txts, strings.Join(t.TXT, ""))
		}
	}
	return txts, nil
}

// LookupAddr returns the PTR names of the address addr, rooted ("host.example.").
func (c *DNSClient) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	rrs, err := c.lookup(ctx, reverseName(ip.WithZone("")), dnsmessage.TypePTR)
	if err != nil {
		err.(*net.DNSError).Name = addr
		return nil, err
	}
	names := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		if p, ok := rr.Body.(*dnsmessage.PTRResource); ok {
			names = append(names, p.PTR.String())
		}
	}
	return names, nil
}

// LookupIPAddr returns the A and AAAA addresses of host (asked at once); an IP
// literal is returned as it is. Records of one type are returned even when the
// other query failed, as net.Resolver does.
func (c *DNSClient) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []net.IPAddr{{IP: net.IP(ip.AsSlice()), Zone: ip.Zone()}}, nil
	}
	var (
		wg   sync.WaitGroup
		rrs  [2][]dnsmessage.Resource
		errs [2]error
	)
	for i, t := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		wg.Go(func() { rrs[i], errs[i] = c.lookup(ctx, host, t) })
	}
	wg.Wait()
	var addrs []net.IPAddr
	for _, rr := range slices.Concat(rrs[0], rrs[1]) {
		switch b := rr.Body.(type) {
		case *dnsmessage.AResource:
			addrs = append(addrs, net.IPAddr{IP: net.IP(b.A[:])})
		case *dnsmessage.AAAAResource:
			addrs = append(addrs, net.IPAddr{IP: net.IP(b.AAAA[:])})
		}
	}
	if len(addrs) > 0 {
		return addrs, nil
	}
	return nil, worseError(errs[0], errs[1])
}

// LookupMX returns the MX records of name sorted by preference, hosts rooted.
func (c *DNSClient) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := c.lookup(ctx, name, dnsmessage.TypeMX)
	if err != nil {
		return nil, err
	}
	mxs := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		if m, ok := rr.Body.(*dnsmessage.MXResource); ok {
			mxs = append(mxs, &net.MX{Host: m.MX.String(), Pref: m.Pref})
		}
	}
	slices.SortStableFunc(mxs, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	return mxs, nil
}

// worseError returns the error that says the most: a temporary one before "not
// found", so that a timeout of either query stays a temperror.
func worseError(a, b error) error {
	for _, err := range []error{a, b} {
		if de, ok := err.(*net.DNSError); ok && (de.IsTimeout || de.IsTemporary) {
			return err
		}
	}
	if a != nil {
		return a
	}
	if b != nil {
		return b
	}
	return &net.DNSError{Err: "no such host", IsNotFound: true}
}

// lookup asks for name's records of type t, following CNAMEs: in the answer first,
// then by asking for the chain's last name. No record of type t is "not found".
func (c *DNSClient) lookup(ctx context.Context, name string, t dnsmessage.Type) ([]dnsmessage.Resource, error) {
	qname, ok := rootedName(name)
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: name, Server: c.Server, IsNotFound: true}
	}
	links := 0
	for {
		msg, err := c.exchange(ctx, qname, t)
		if err != nil {
			err.Name = name
			return nil, err
		}
		rrs, target, n := answersFor(msg.Answers, qname, t)
		links += n
		if len(rrs) > 0 {
			return rrs, nil
		}
		if links > maxCNAMELinks {
			return nil, &net.DNSError{Err: "CNAME chain too long", Name: name, Server: c.Server}
		}
		if n == 0 || msg.RCode == dnsmessage.RCodeNameError {
			return nil, &net.DNSError{Err: "no such host", Name: name, Server: c.Server, IsNotFound: true}
		}
		qname = target
	}
}

// answersFor picks the records of type t for qname out of an answer section,
// following CNAMEs within it: it returns them, the last name of the chain and how
// many CNAME links it followed.
func answersFor(answers []dnsmessage.Resource, qname dnsmessage.Name, t dnsmessage.Type) ([]dnsmessage.Resource, dnsmessage.Name, int) {
	target, links := qname, 0
	for range maxCNAMELinks + 1 {
		var rrs []dnsmessage.Resource
		var next *dnsmessage.Name
		for _, rr := range answers {
			if rr.Header.Class != dnsmessage.ClassINET || !strings.EqualFold(rr.Header.Name.String(), target.String()) {
				continue
			}
			if rr.Header.Type == t {
				rrs = append(rrs, rr)
			} else if cn, ok := rr.Body.(*dnsmessage.CNAMEResource); ok && next == nil {
				next = &cn.CNAME
			}
		}
		if len(rrs) > 0 || next == nil {
			return rrs, target, links
		}
		target, links = *next, links+1
	}
	return nil, target, links
}

// rootedName makes a DNS name of s, rooted; false for what cannot be one (an empty
// label, a label over 63 octets, a name over 253).
func rootedName(s string) (dnsmessage.Name, bool) {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return dnsmessage.Name{}, false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return dnsmessage.Name{}, false
		}
	}
	n, err := dnsmessage.NewName(s + ".")
	return n, err == nil
}

// reverseName is the in-addr.arpa or ip6.arpa name of ip.
func reverseName(ip netip.Addr) string {
	ip = ip.Unmap()
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(a[i])))
			b.WriteByte('.')
		}
		b.WriteString("in-addr.arpa.")
		return b.String()
	}
	const hexDigits = "0123456789abcdef"
	a := ip.As16()
	for i := 15; i >= 0; i-- {
		b.WriteByte(hexDigits[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hexDigits[a[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString("ip6.arpa.")
	return b.String()
}
