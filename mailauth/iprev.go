package mailauth

import (
	"context"
	"net"
	"strings"
	"sync"
)

// MaxIPRevNames is how many PTR names of the client iprev looks up forward: a PTR
// set of hundreds of names cannot cost hundreds of lookups.
const MaxIPRevNames = 10

// CheckIPRev makes the iprev check of RFC 8601 section 3 for ip: its PTR names
// (at most MaxIPRevNames), then each name's addresses; pass when one of them is
// ip. No PTR record is permerror, PTR names none of which maps back is fail, and a
// DNS failure or timeout that left the answer open is temperror.
func (v *Verifier) CheckIPRev(ctx context.Context, ip net.IP) IPRevResult {
	res := IPRevResult{IP: ipString(ip)}
	if ip == nil || ip.To16() == nil {
		res.Result, res.Reason = PermError, "no client IP address"
		return res
	}
	r := v.resolver()
	names, err := r.LookupAddr(ctx, res.IP)
	if err = dnsError(ctx, res.IP, err); err != nil {
		res.Result, res.Reason = lookupFailure(err, PermError), "PTR: "+err.Error()
		return res
	}
	if len(names) == 0 {
		res.Result, res.Reason = PermError, "no PTR record"
		return res
	}
	if len(names) > MaxIPRevNames {
		names = names[:MaxIPRevNames]
	}
	matched := make([]bool, len(names))
	failed := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			addrs, err := r.LookupIPAddr(ctx, rooted(name))
			failed[i] = dnsError(ctx, name, err)
			for _, a := range addrs {
				matched[i] = matched[i] || a.IP.Equal(ip)
			}
		})
	}
	wg.Wait()
	res.Result, res.Reason = Fail, "no PTR name maps back to the address"
	for i, name := range names {
		if matched[i] {
			res.Result, res.Name, res.Reason = Pass, strings.TrimSuffix(name, "."), ""
			return res
		}
		if failed[i] != nil && lookupFailure(failed[i], Fail) == TempError {
			res.Result, res.Reason = TempError, name+": "+failed[i].Error()
		}
	}
	return res
}

// lookupFailure is TempError for a temporary DNS error, notFound otherwise.
func lookupFailure(err error, notFound Result) Result {
	if de, ok := err.(*net.DNSError); ok && !de.IsNotFound && (de.IsTimeout || de.IsTemporary) {
		return TempError
	}
	return notFound
}

// rooted returns name with a final dot, so that no search list applies.
func rooted(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

// ipString is ip's text form, an IPv4-mapped address as IPv4.
func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.String()
}
