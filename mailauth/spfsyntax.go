package mailauth

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// This file checks an SPF record against the ABNF of RFC 7208 section 12. RFC 7208
// 4.6 says a syntax error anywhere in a record is permerror "without further
// interpretation or evaluation"; blitiri.com.ar/go/spf evaluates terms left to right
// and stops at the first match, so it misses an error after the match. CheckSPF
// checks every record the evaluation fetched and makes the result permerror when
// one is malformed.

// isSPFRecord reports whether a TXT record is an SPF record (RFC 7208 4.5).
func isSPFRecord(txt string) bool {
	return len(txt) >= 6 && strings.EqualFold(txt[:6], "v=spf1") && (len(txt) == 6 || txt[6] == ' ')
}

// spfSyntax returns the first syntax error of an SPF record, nil for none.
func spfSyntax(rec string) error {
	redirects, exps := 0, 0
	for i, term := range strings.Split(rec, " ") {
		if i == 0 || term == "" {
			continue // the version, already matched; runs of spaces
		}
		var err error
		if name, value, ok := cutModifier(term); ok {
			switch strings.ToLower(name) {
			case "redirect":
				redirects++
				err = checkDomainSpec(value)
			case "exp":
				exps++
				err = checkDomainSpec(value)
			default:
				err = checkMacroString(value)
			}
		} else {
			err = checkDirective(term)
		}
		if err != nil {
			return fmt.Errorf("%.40q: %w", term, err)
		}
	}
	if redirects > 1 || exps > 1 {
		return errors.New("redirect= or exp= given twice")
	}
	return nil
}

// cutModifier splits name=value when term is a modifier: a name of ALPHA *(ALPHA /
// DIGIT / "-" / "_" / ".") before the "=".
func cutModifier(term string) (name, value string, ok bool) {
	name, value, ok = strings.Cut(term, "=")
	if !ok || name == "" || !isAlpha(name[0]) {
		return "", "", false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return "", "", false
		}
	}
	return name, value, true
}

// checkDirective checks [qualifier] mechanism.
func checkDirective(term string) error {
	if strings.IndexByte("+-?~", term[0]) >= 0 {
		term = term[1:]
	}
	end := strings.IndexAny(term, ":/")
	if end < 0 {
		end = len(term)
	}
	name, rest := strings.ToLower(term[:end]), term[end:]
	arg, hasArg := strings.CutPrefix(rest, ":")
	switch name {
	case "all":
		if rest != "" {
			return errors.New("all takes nothing")
		}
		return nil
	case "include", "exists":
		if !hasArg {
			return errors.New("needs a domain")
		}
		return checkDomainSpec(arg)
	case "ptr":
		if !hasArg {
			return onlyIf(rest == "", "bad ptr")
		}
		return checkDomainSpec(arg)
	case "a", "mx":
		spec, ok := cutDualCIDR(rest)
		if !ok {
			return errors.New("bad CIDR length")
		}
		if spec == "" {
			return nil
		}
		arg, hasArg := strings.CutPrefix(spec, ":")
		if !hasArg {
			return errors.New("bad mechanism")
		}
		return checkDomainSpec(arg)
	case "ip4", "ip6":
		return checkIPNetwork(name, arg, hasArg)
	}
	return fmt.Errorf("unknown mechanism %.20q", name)
}

func onlyIf(ok bool, msg string) error {
	if ok {
		return nil
	}
	return errors.New(msg)
}

// cutDualCIDR splits a/mx's argument from its dual-cidr-length ("/n", "//n" or
// "/n//m"), checking the lengths.
func cutDualCIDR(s string) (string, bool) {
	if i := strings.LastIndex(s, "//"); i >= 0 && isNumber(s[i+2:], 3) {
		if !cidrLength(s[i+2:], 128) {
			return s, false
		}
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, '/'); i >= 0 && isNumber(s[i+1:], 3) {
		if !cidrLength(s[i+1:], 32) {
			return s, false
		}
		s = s[:i]
	}
	return s, true
}

// cidrLength checks a prefix length: digits without a leading zero, at most max.
func cidrLength(s string, max int) bool {
	n, err := strconv.Atoi(s)
	return err == nil && isNumber(s, 3) && (s == "0" || s[0] != '0') && n <= max
}

// checkIPNetwork checks ip4:network[/n] and ip6:network[/n].
func checkIPNetwork(kind, arg string, hasArg bool) error {
	if !hasArg {
		return errors.New("needs an address")
	}
	addr, length, hasLen := strings.Cut(arg, "/")
	ip, err := netip.ParseAddr(addr)
	switch {
	case err != nil || ip.Zone() != "":
		return errors.New("bad address")
	case kind == "ip4" && (!ip.Is4() || strings.Count(addr, ".") != 3):
		return errors.New("not an IPv4 address")
	case kind == "ip6" && !ip.Is6():
		return errors.New("not an IPv6 address")
	case hasLen && !cidrLength(length, map[string]int{"ip4": 32, "ip6": 128}[kind]):
		return errors.New("bad CIDR length")
	}
	return nil
}

// checkDomainSpec checks macro-string domain-end: the last part is a macro or "."
// toplabel with an optional final dot.
func checkDomainSpec(s string) error {
	if err := checkMacroString(s); err != nil {
		return err
	}
	if s == "" {
		return errors.New("empty domain")
	}
	if i := strings.LastIndexByte(s, '%'); i >= 0 && strings.LastIndexByte(s, '}') > i ||
		strings.HasSuffix(s, "%%") || strings.HasSuffix(s, "%_") || strings.HasSuffix(s, "%-") {
		return nil // ends in a macro-expand
	}
	t := strings.TrimSuffix(s, ".")
	dot := strings.LastIndexByte(t, '.')
	if dot < 0 || !isTopLabel(t[dot+1:]) {
		return errors.New("domain does not end in a top label")
	}
	return nil
}

// isTopLabel: alphanumerics with one letter at least, or with inner hyphens.
func isTopLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlpha(c):
			letter = true
		case c == '-':
			letter = true // ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
		case !isDigit(c):
			return false
		}
	}
	return letter
}

// checkMacroString checks macro-literals (visible ASCII but "%") and
// macro-expands: %{letter digits [r] delimiters}, %%, %_, %-.
func checkMacroString(s string) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e {
			return errors.New("character outside visible ASCII")
		}
		if c != '%' {
			continue
		}
		if i+1 == len(s) {
			return errors.New("lone %")
		}
		switch s[i+1] {
		case '%', '_', '-':
			i++
			continue
		case '{':
		default:
			return errors.New("bad macro")
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 || !validMacro(s[i+2:i+end]) {
			return errors.New("bad macro")
		}
		i += end
	}
	return nil
}

// validMacro checks the inside of %{...}: a macro letter, digits, an optional
// "r", delimiters. c, r and t are for explanation texts only (RFC 7208 7.2).
func validMacro(m string) bool {
	if m == "" || strings.IndexByte("slodiphvSLODIPHV", m[0]) < 0 {
		return false
	}
	m = m[1:]
	for len(m) > 0 && isDigit(m[0]) {
		m = m[1:]
	}
	m = strings.TrimPrefix(strings.TrimPrefix(m, "r"), "R")
	for i := 0; i < len(m); i++ {
		if strings.IndexByte(".-+,/_=", m[i]) < 0 {
			return false
		}
	}
	return true
}
