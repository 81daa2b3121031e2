package realmilter

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// OpenDKIM configures an OpenDKIM milter (opendkim.conf(5)).
type OpenDKIM struct {
	// Mode is "s" (sign), "v" (verify) or "sv".
	Mode string
	// Key signs (modes with s): its Domain and Selector are the signature's d= and
	// s=; OpenDKIM signs mail whose From is in that domain and that comes from
	// 127.0.0.1 (its default InternalHosts).
	Key *DKIMKey
	// Canonicalization is header/body canonicalization; "" is "relaxed/relaxed".
	Canonicalization string
	// AuthservID names OpenDKIM in the Authentication-Results fields it adds;
	// "" is "opendkim.test", set apart from the receiver's own.
	AuthservID string
	// DNS is the server OpenDKIM asks for keys when it verifies (modes with v):
	// its only resolver, through libunbound forwarding every name to it.
	DNS *NSD
	// OnBadSignature is what a signature that fails gets: "" (accept), "reject",
	// "tempfail", "quarantine", "discard".
	OnBadSignature string
	// Extra are more opendkim.conf lines.
	Extra []string
}

// StartOpenDKIM starts OpenDKIM (Debian: opendkim) as a milter on 127.0.0.1, in
// the foreground (-f), from its own configuration file (-x), as the current user.
func StartOpenDKIM(t T, c OpenDKIM) *Milter {
	t.Helper()
	bin := Need(t, "opendkim", "opendkim")
	dir := instanceDir(t, "opendkim")
	if c.AuthservID == "" {
		c.AuthservID = "opendkim.test"
	}
	if c.Canonicalization == "" {
		c.Canonicalization = "relaxed/relaxed"
	}
	lines := []string{
		"Mode " + c.Mode,
		"Syslog no",
		"Canonicalization " + c.Canonicalization,
		"AuthservID " + c.AuthservID,
		"PidFile " + filepath.Join(dir, "opendkim.pid"),
		"TemporaryDirectory " + dir,
		// Key files under /tmp are "unsafe" to OpenDKIM (others can write there).
		"RequireSafeKeys no",
		"SoftwareHeader no",
		"LogWhy yes",
	}
	if strings.Contains(c.Mode, "s") {
		if c.Key == nil {
			t.Fatalf("realmilter: OpenDKIM mode %q needs a Key", c.Mode)
		}
		keyFile := filepath.Join(dir, c.Key.Selector+".private")
		if err := os.WriteFile(keyFile, c.Key.PEM(), 0o600); err != nil {
			t.Fatalf("realmilter: %v", err)
		}
		lines = append(lines, "Domain "+c.Key.Domain, "Selector "+c.Key.Selector, "KeyFile "+keyFile)
	}
	if strings.Contains(c.Mode, "v") {
		if c.DNS == nil {
			t.Fatalf("realmilter: OpenDKIM mode %q needs a DNS server", c.Mode)
		}
		// Debian's OpenDKIM resolves with libunbound (USE_UNBOUND): its
		// configuration forwards every name to our NSD. Unbound answers names
		// under test. (RFC 6761) itself unless told not to.
		ub := filepath.Join(dir, "unbound.conf")
		writeFile(t, ub, fmt.Sprintf(`server:
  do-not-query-localhost: no
  do-ip6: no
  local-zone: "test." nodefault
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@%d
`, c.DNS.Port()))
		lines = append(lines, "ResolverConfiguration "+ub)
	}
	if c.OnBadSignature != "" {
		lines = append(lines, "On-BadSignature "+c.OnBadSignature)
	}
	lines = append(lines, c.Extra...)
	conf := filepath.Join(dir, "opendkim.conf")
	p, port := start(t, startSpec{
		name: "opendkim", dir: dir, libmilter: true,
		setup: func(port int) []string {
			writeFile(t, conf, strings.Join(append(lines, fmt.Sprintf("Socket inet:%d@127.0.0.1", port)), "\n")+"\n")
			return []string{bin, "-f", "-x", conf}
		},
	})
	return newMilter(p, port)
}
