package milter

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"
)

// DefaultAction is what happens when a milter is down, times out or misbehaves
// (Postfix's milter_default_action).
type DefaultAction int

const (
	// TempFail answers 451 4.7.1 (the client retries); never a 250. The default.
	TempFail DefaultAction = iota
	// Accept skips the milter: mail goes on unfiltered by it, as in Postfix.
	Accept
	// Reject answers 550 5.7.1.
	Reject
)

// ParseDefaultAction parses "tempfail", "accept" or "reject" (any case), the values
// of Postfix's milter_default_action this client knows.
func ParseDefaultAction(s string) (DefaultAction, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tempfail":
		return TempFail, nil
	case "accept":
		return Accept, nil
	case "reject":
		return Reject, nil
	}
	return TempFail, fmt.Errorf("milter: unknown default action %q (want tempfail, accept or reject)", s)
}

// String returns the action's name as ParseDefaultAction reads it.
func (a DefaultAction) String() string {
	switch a {
	case TempFail:
		return "tempfail"
	case Accept:
		return "accept"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("DefaultAction(%d)", int(a))
}

// Postfix's default timeouts.
const (
	DefaultConnectTimeout = 30 * time.Second  // milter_connect_timeout
	DefaultCommandTimeout = 30 * time.Second  // milter_command_timeout
	DefaultEOMTimeout     = 300 * time.Second // milter_content_timeout
)

// Milter is one milter to call.
type Milter struct {
	Addr           string        // Postfix syntax: "inet:HOST:PORT" (also "inet:[::1]:PORT"), "unix:/path/sock"
	ConnectTimeout time.Duration // 0: 30 s (milter_connect_timeout)
	CommandTimeout time.Duration // 0: 30 s (milter_command_timeout)
	EOMTimeout     time.Duration // 0: 300 s (milter_content_timeout)
}

// ErrAddress is wrapped by the errors of addresses ParseAddr refuses.
var ErrAddress = errors.New("milter: bad address")

// ParseAddr splits a milter address in Postfix syntax into a network and an
// address for net.Dial: "inet:HOST:PORT" or "inet:[IPv6]:PORT" is "tcp",
// "unix:PATH" (or a bare absolute path) is "unix". Postfix's "local:" is a synonym
// of "unix:".
func ParseAddr(addr string) (network, address string, err error) {
	kind, rest, ok := strings.Cut(addr, ":")
	switch {
	case strings.HasPrefix(addr, "/"):
		return "unix", addr, nil
	case !ok || rest == "":
		return "", "", fmt.Errorf("%w %q: want inet:HOST:PORT or unix:PATH", ErrAddress, addr)
	}
	switch strings.ToLower(kind) {
	case "unix", "local":
		return "unix", rest, nil
	case "inet", "inet6", "tcp":
		host, port, err := splitHostPort(rest)
		if err != nil {
			return "", "", fmt.Errorf("%w %q: %v", ErrAddress, addr, err)
		}
		return "tcp", net.JoinHostPort(host, port), nil
	}
	return "", "", fmt.Errorf("%w %q: unknown kind %q", ErrAddress, addr, kind)
}

// splitHostPort reads "HOST:PORT", "[IPv6]:PORT" and also Sendmail's "PORT@HOST".
func splitHostPort(s string) (host, port string, err error) {
	if p, h, ok := strings.Cut(s, "@"); ok && !strings.Contains(p, ":") {
		host, port = h, p
	} else if strings.HasPrefix(s, "[") {
		host, port, err = net.SplitHostPort(s)
	} else {
		i := strings.LastIndexByte(s, ':')
		if i < 0 {
			return "", "", errors.New("no port")
		}
		host, port = s[:i], s[i+1:]
	}
	if err != nil {
		return "", "", err
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" || port == "" {
		return "", "", errors.New("empty host or port")
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return "", "", fmt.Errorf("port %q is not a number", port)
		}
	}
	return host, port, nil
}

// ParseMilters parses a comma- or space-separated list of addresses (smtpd_milters
// syntax) into Milters with default timeouts. An empty list is no milter.
func ParseMilters(list string) ([]Milter, error) {
	var ms []Milter
	for _, f := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		if _, _, err := ParseAddr(f); err != nil {
			return nil, err
		}
		ms = append(ms, Milter{Addr: f})
	}
	return ms, nil
}

// Config is the milter client's configuration.
type Config struct {
	Milters       []Milter // called in order, as smtpd_milters
	DefaultAction DefaultAction
	Hostname      string       // macro j (and the _/{daemon_name} context); "": os.Hostname()
	DaemonName    string       // macro {daemon_name}; "": "smtpd"
	Logger        *slog.Logger // nil: each session's s.Logger()

	// MTAVersion is macro v (Postfix: "Postfix 3.7.11"); "": "midismtp smtpd".
	MTAVersion string
	// TempDir is where the streaming path spools a message that milters may change
	// (as Postfix's queue file); "": os.TempDir(). Spool files are unlinked as soon
	// as they are made, so none is ever left behind.
	TempDir string
	// MaxReplyBytes bounds what one milter may send in answer to one event: its
	// end-of-message changes, a replaced body included; 0: 64 MiB. A milter that
	// sends more has failed (DefaultAction).
	MaxReplyBytes int64
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	if c.DaemonName == "" {
		c.DaemonName = "smtpd"
	}
	if c.MTAVersion == "" {
		c.MTAVersion = "midismtp smtpd"
	}
	if c.MaxReplyBytes <= 0 {
		c.MaxReplyBytes = 64 << 20
	}
	c.Milters = append([]Milter(nil), c.Milters...)
	for i := range c.Milters {
		m := &c.Milters[i]
		m.ConnectTimeout = orDuration(m.ConnectTimeout, DefaultConnectTimeout)
		m.CommandTimeout = orDuration(m.CommandTimeout, DefaultCommandTimeout)
		m.EOMTimeout = orDuration(m.EOMTimeout, DefaultEOMTimeout)
	}
	return c
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
