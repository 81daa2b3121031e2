package certs

import (
	"net"
	"strings"
)

// fallbackCN is the certificate common name used when the first derived name
// is a loopback name (localhost, 127.0.0.1, ::1) or when there is no name at
// all, as in MidiSmtpServer.
const fallbackCN = "localhost.local"

// Names returns the certificate CN and SAN list by Ruby's rules.
//
// The cn and san given by the operator win: a non-empty cn is used as is
// (trimmed) and san is a comma list whose items are trimmed, empty items
// dropped and duplicates removed. Otherwise the names are derived: the
// candidates are the operator's san list when given, else the hosts (the
// Hosts option items that are names or IP literals, "*" excluded) followed by
// the bound IPs (unspecified addresses such as 0.0.0.0 excluded). They are
// deduplicated case-insensitively, in order, with IP literals (brackets
// allowed) written in canonical form. If the first candidate is localhost, 127.0.0.1
// or ::1, or there is no candidate, the CN is "localhost.local" and the SAN list
// is all candidates; otherwise the CN is the first candidate, which is
// dropped from the SAN list.
//
// The returned SAN list never contains empty strings and is nil when empty.
func Names(cn, san string, hosts []string, ips []net.IP) (string, []string) {
	cn = strings.TrimSpace(cn)
	given := dedup(strings.Split(san, ","))
	if cn != "" {
		return cn, given
	}

	candidates := given
	if len(candidates) == 0 {
		for _, h := range hosts {
			h = strings.TrimSpace(h)
			if h == "*" {
				continue
			}
			candidates = append(candidates, h)
		}
		for _, ip := range ips {
			if ip == nil || ip.IsUnspecified() {
				continue
			}
			candidates = append(candidates, ip.String())
		}
		candidates = dedup(candidates)
	}
	if len(candidates) == 0 {
		return fallbackCN, nil
	}
	if isLoopbackName(candidates[0]) {
		return fallbackCN, candidates
	}
	if len(candidates) == 1 {
		return candidates[0], nil
	}
	return candidates[0], candidates[1:]
}

// dedup trims the items, drops empty ones, writes IP literals (optionally in
// brackets) in canonical form and removes case-insensitive duplicates,
// keeping the first spelling. It returns nil when nothing is left.
func dedup(items []string) []string {
	var out []string
	seen := make(map[string]bool, len(items))
	for _, item := range items {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(item, "["), "]")); ip != nil {
			item = ip.String()
		}
		k := strings.ToLower(item)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, item)
	}
	return out
}

// isLoopbackName reports whether name is one of the loopback names for which
// Ruby's MidiSmtpServer falls back to "localhost.local".
func isLoopbackName(name string) bool {
	if strings.EqualFold(name, "localhost") {
		return true
	}
	ip := net.ParseIP(name)
	return ip != nil && (ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback))
}
