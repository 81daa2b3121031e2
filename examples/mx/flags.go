package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/milter"
)

// config is the parsed command line.
type config struct {
	srv           smtpd.Server // hosts, ports, certificate, trusted networks; limits by applyLimits
	out           string
	resolver      string // "host:port", "" for the system's
	authServID    string
	dmarcEnforce  bool
	milters       []milter.Milter
	milterAction  milter.DefaultAction
	milterTimeout time.Duration
}

// usageError is a command-line error; it has been printed with the usage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

const usageHead = `mx is an Internet-facing SMTP receiver: it takes mail with the abuse limits of
a port-25 server, checks its authentication (SPF, DKIM, DMARC, ARC, iprev), runs
it through milters if asked, and stores every message it accepts in -out DIR as
<id>.eml and then <id>.json (id: smtpd's Message.ID, <session id>-<n>).

The .eml begins with our Authentication-Results field, then the message as it was
received, without incoming Authentication-Results fields that claim our
authserv-id, then with the milters' changes. The verdict is made on the message
as received, before the milters change it; fields a milter adds are kept.
The .json has the envelope, the session and a few header fields (as
examples/sink's), auth_results (our field's value), quarantine (true when DMARC
asked for it, or a milter did) and quarantine_reason; it is written last, so a
.json file means the message is complete.

DMARC: a message that fails under p=reject gets "550 5.7.1" at the end of data
(with -dmarc-enforce=false it is stored, quarantined); p=quarantine stores it
with quarantine: true. An SPF fail alone refuses nothing (RFC 7489 10.1).

It offers STARTTLS (a self-signed certificate unless -cert), PIPELINING, 8BITMIME,
SMTPUTF8, CHUNKING, DSN and ENHANCEDSTATUSCODES, no AUTH. Limits (Postfix's
defaults where it has one):
`

const usageTail = `
It prints "listening on HOST:PORT" on stdout for every bound address once ready.
Logs go to stderr. SIGINT or SIGTERM stops it gracefully: messages in DATA get
%s to finish.

Usage: mx [flags]
`

// parseFlags parses args; help and errors are printed to stderr.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{}
	s := &cfg.srv
	fs := flag.NewFlagSet("mx", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead+limitsText())
		fmt.Fprintf(fs.Output(), usageTail, shutdownGrace)
		fs.PrintDefaults()
	}
	var milters, action string
	fs.StringVar(&s.Hosts, "hosts", "127.0.0.1", "`addresses` to listen on, comma separated; * is every local address")
	fs.StringVar(&s.Ports, "ports", "2525", "`ports`, comma separated, item i for host i; a:b gives a host several ports; 0 picks a free one (printed)")
	fs.StringVar(&cfg.out, "out", "mx-out", "store each accepted message in `dir` (created if missing)")
	fs.StringVar(&s.TLSCertPath, "cert", "", "PEM certificate `file` for STARTTLS (chain allowed); default: a self-signed certificate made at start")
	fs.StringVar(&s.TLSKeyPath, "key", "", "PEM key `file` of -cert; default: the key inside the -cert file")
	fs.StringVar(&cfg.resolver, "resolver", "", "one DNS server, `host:port`, for every lookup (SPF, DKIM keys, DMARC, ARC, PTR); default: the system's resolver")
	fs.StringVar(&cfg.authServID, "authserv-id", hostname(), "our `name` in Authentication-Results (RFC 8601); incoming fields with it are removed. Also the milters' macros j and {daemon_name}")
	fs.BoolVar(&cfg.dmarcEnforce, "dmarc-enforce", true, "refuse with 550 5.7.1 a message failing DMARC under p=reject; false: store it with quarantine: true")
	fs.StringVar(&milters, "milter", "", "`list` of milters, comma separated, called in order (Postfix's smtpd_milters): inet:HOST:PORT, unix:PATH")
	fs.StringVar(&action, "milter-default-action", "tempfail", "`action` when a milter is down, times out or misbehaves (milter_default_action): tempfail (451 4.7.1), accept (skip the milter: mail goes on unfiltered), reject (550 5.5.0; 554 at connect)")
	fs.DurationVar(&cfg.milterTimeout, "milter-timeout", milter.DefaultCommandTimeout, "each milter's `timeout` per command (milter_command_timeout); connecting has 30s and the end of a message 300s, as Postfix")
	fs.StringVar(&s.ProxyTrustedNetworks, "proxy-trusted", "", "`CIDRs` or IPs, comma separated, of load balancers that must send a PROXY v1/v2 header; the address it names is the client that is checked")
	fs.StringVar(&s.XClientTrustedNetworks, "xclient-trusted", "", "`CIDRs` or IPs, comma separated, of clients allowed to use XCLIENT; the address it names is the client that is checked")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if err := cfg.check(fs, milters, action); err != nil {
		return nil, err
	}
	return cfg, nil
}

// check validates what parseFlags read and fills the milter settings.
func (cfg *config) check(fs *flag.FlagSet, milters, action string) error {
	if fs.NArg() > 0 {
		return usageFail(fs, "unexpected argument %q", fs.Arg(0))
	}
	var err error
	if cfg.milters, err = milter.ParseMilters(milters); err != nil {
		return usageFail(fs, "-milter: %v", err)
	}
	if cfg.milterAction, err = milter.ParseDefaultAction(action); err != nil {
		return usageFail(fs, "-milter-default-action: %v", err)
	}
	for i := range cfg.milters {
		cfg.milters[i].CommandTimeout = cfg.milterTimeout
	}
	switch {
	case cfg.milterTimeout <= 0:
		return usageFail(fs, "-milter-timeout must be positive")
	case cfg.srv.TLSKeyPath != "" && cfg.srv.TLSCertPath == "":
		return usageFail(fs, "-key needs -cert")
	case cfg.out == "":
		return usageFail(fs, "-out must name a folder")
	}
	if err := checkHostPort(cfg.resolver); cfg.resolver != "" && err != nil {
		return usageFail(fs, "-resolver: %v", err)
	}
	if err := checkAuthServID(cfg.authServID); err != nil {
		return usageFail(fs, "-authserv-id: %v", err)
	}
	if err := checkNetworks(cfg.srv.ProxyTrustedNetworks); err != nil {
		return usageFail(fs, "-proxy-trusted: %v", err)
	}
	if err := checkNetworks(cfg.srv.XClientTrustedNetworks); err != nil {
		return usageFail(fs, "-xclient-trusted: %v", err)
	}
	return nil
}

// checkHostPort accepts "host:port" with a numeric port.
func checkHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if host == "" {
		return errors.New("no host")
	}
	return nil
}

// checkAuthServID accepts a name that goes into the field as it is: RFC 8601's
// authserv-id is a value (RFC 2045 token or quoted-string); mx takes a host-name
// like token, letters, digits and "-._", as a host name is.
func checkAuthServID(id string) error {
	if id == "" || len(id) > 255 {
		return errors.New("want 1 to 255 characters")
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-._", c)) {
			return fmt.Errorf("%q: only letters, digits, '-', '.' and '_'", id)
		}
	}
	return nil
}

// checkNetworks accepts a comma-separated list of CIDR prefixes or IPs.
func checkNetworks(list string) error {
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if _, _, err := net.ParseCIDR(item); err != nil && net.ParseIP(item) == nil {
			return fmt.Errorf("%q is neither an IP nor a CIDR prefix", item)
		}
	}
	return nil
}

// hostname is the default authserv-id: the host name, or "localhost".
func hostname() string {
	if h, err := os.Hostname(); err == nil && checkAuthServID(h) == nil {
		return h
	}
	return "localhost"
}

// usageFail reports a command-line error the way the flag package does.
func usageFail(fs *flag.FlagSet, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	fmt.Fprintln(fs.Output(), err)
	fs.Usage()
	return usageError{err}
}
