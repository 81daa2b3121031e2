package mailauth

import (
	"context"
	"fmt"
	"net"
	"strings"

	"blitiri.com.ar/go/spf"
)

// CheckSPF evaluates SPF (RFC 7208) for the connection: the MAIL FROM identity, or
// when MAIL FROM is <> the HELO identity as "postmaster@<helo>" (RFC 7208 2.4). It
// uses blitiri.com.ar/go/spf with the Verifier's Resolver and ctx; that library
// caps an evaluation at 10 DNS-querying terms and 2 void lookups (RFC 7208 4.6.4),
// which bounds recursive include: and redirect= chains. The result is
// temperror when DNS times out or fails (ctx's deadline included).
func (v *Verifier) CheckSPF(ctx context.Context, c Connection) SPFResult {
	res := SPFResult{Identity: "mailfrom"}
	helo := strings.TrimSuffix(c.Helo, ".")
	sender := c.MailFrom
	if sender == "" {
		res.Identity = "helo"
		sender = "postmaster@" + helo
	}
	_, domain, ok := cutLastAt(sender)
	if !ok || domain == "" {
		domain = helo
	}
	res.Domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if c.IP == nil || c.IP.To16() == nil {
		res.Result, res.Reason = PermError, "no client IP address"
		return res
	}
	dr := &dnsResolver{r: v.resolver()}
	r, err := spf.CheckHostWithSender(c.IP, helo, sender, spf.WithResolver(dr), spf.WithContext(ctx))
	res.Result = Result(r)
	if r != spf.Pass && err != nil {
		res.Reason = err.Error()
	}
	if dr.syntaxErr != nil {
		res.Result, res.Reason = PermError, dr.syntaxErr.Error()
	}
	return res
}

// cutLastAt splits an address at its last "@".
func cutLastAt(addr string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr, "", false
	}
	return addr[:i], addr[i+1:], true
}

// dnsResolver gives the SPF library the Resolver's answers with every error a bare
// *net.DNSError, which is how it tells none from temperror. It also checks the
// syntax of each SPF record the evaluation fetches (spfSyntax). The SPF library
// asks one lookup at a time.
type dnsResolver struct {
	r         Resolver
	syntaxErr error // the first malformed SPF record fetched
}

func (d *dnsResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txts, err := d.r.LookupTXT(ctx, name)
	var spfs []string
	for _, t := range txts {
		if isSPFRecord(t) {
			spfs = append(spfs, t)
		}
	}
	if len(spfs) == 1 && d.syntaxErr == nil {
		if serr := spfSyntax(spfs[0]); serr != nil {
			d.syntaxErr = fmt.Errorf("SPF record of %s: %w", strings.TrimSuffix(name, "."), serr)
		}
	}
	return txts, dnsError(ctx, name, err)
}

func (d *dnsResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mxs, err := d.r.LookupMX(ctx, name)
	return mxs, dnsError(ctx, name, err)
}

func (d *dnsResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	addrs, err := d.r.LookupIPAddr(ctx, host)
	return addrs, dnsError(ctx, host, err)
}

func (d *dnsResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	names, err := d.r.LookupAddr(ctx, addr)
	return names, dnsError(ctx, addr, err)
}
