package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/midismtp/smtpd"
)

// config is the parsed command line.
type config struct {
	srv      smtpd.Server // the server, its options set from the flags
	user     string
	pass     string
	out      string
	quiet    bool
	logLevel slog.Level
	grace    time.Duration
}

// usageError is a command-line error; the flag package has already printed it with the usage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// choice is a flag that takes one of a fixed list of names.
type choice struct {
	val     string
	allowed []string
}

func (c *choice) String() string {
	if c == nil {
		return ""
	}
	return c.val
}

func (c *choice) Set(s string) error {
	if !slices.Contains(c.allowed, s) {
		return fmt.Errorf("want one of %s", strings.Join(c.allowed, ", "))
	}
	c.val = s
	return nil
}

var (
	crlfModes = map[string]smtpd.CRLFMode{"ensure": smtpd.CRLFEnsure, "leave": smtpd.CRLFLeave, "strict": smtpd.CRLFStrict}
	authModes = map[string]smtpd.AuthMode{"forbidden": smtpd.AuthForbidden, "optional": smtpd.AuthOptional, "required": smtpd.AuthRequired}
	tlsModes  = map[string]smtpd.TLSMode{"forbidden": smtpd.TLSForbidden, "optional": smtpd.TLSOptional, "required": smtpd.TLSRequired}
	ciphers   = map[string][]uint16{
		"advanced-plus": smtpd.TLSCiphersAdvancedPlus,
		"advanced":      smtpd.TLSCiphersAdvanced,
		"broad":         smtpd.TLSCiphersBroadCompatibility,
		"widest":        smtpd.TLSCiphersWidestCompatibility,
		"legacy":        smtpd.TLSCiphersLegacy,
	}
)

const usageHead = `sink is an SMTP server that accepts every message and discards it, or saves it
to -out DIR as <id>.eml (the exact message) and then <id>.json (its envelope and
session facts; written last, so a .json file means the message is complete).
It is the server the interop, acceptance and load-test suites drive, so
-max-processings defaults to 64 here (the library's default is 4); give
-max-processings 1100 to hold 1000 idle connections with a banner each.

It prints "listening on HOST:PORT" on stdout for every bound address once ready,
then one line per accepted message unless -quiet. Logs go to stderr.
SIGINT or SIGTERM stops it gracefully.

Usage: sink [flags]
`

// parseFlags parses args; help and errors are printed to stderr.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{}
	s := &cfg.srv
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}

	crlf := &choice{"ensure", []string{"ensure", "leave", "strict"}}
	auth := &choice{"forbidden", []string{"forbidden", "optional", "required"}}
	tlsMode := &choice{"forbidden", []string{"forbidden", "optional", "required"}}
	suites := &choice{"advanced-plus", []string{"advanced-plus", "advanced", "broad", "widest", "legacy"}}

	fs.StringVar(&s.Hosts, "hosts", "127.0.0.1", "`addresses` to listen on, comma separated; * is every local address")
	fs.StringVar(&s.Ports, "ports", "2525", "`ports`, comma separated, item i for host i; a:b gives a host several ports; 0 picks a free one")
	fs.IntVar(&s.MaxProcessings, "max-processings", 64, "sessions served at once; further connections wait without a banner (load-test default)")
	fs.IntVar(&s.MaxConnections, "max-connections", 0, "open connections allowed, waiting ones included (0: unlimited); one more gets 421")
	fs.Var(crlf, "crlf", "line-end `mode`: ensure, leave or strict")
	fs.DurationVar(&s.IOCmdTimeout, "timeout", 0, "time a client has to send a whole line (0: 30s, negative: none)")
	fs.IntVar(&s.IOBufferMaxSize, "buffer-max", 0, "longest line in `bytes` (0: 1 MiB)")
	fs.IntVar(&s.MaxMessageSize, "max-message", 0, "largest message in `bytes`, larger ones get 552 (0: 32 MiB, negative: none)")
	fs.IntVar(&s.MaxRecipients, "max-recipients", 0, "recipients per message (0: 1000, negative: none)")
	fs.BoolVar(&s.Pipelining, "pipelining", false, "enable PIPELINING (RFC 2920)")
	fs.BoolVar(&s.Internationalization, "i18n", false, "enable 8BITMIME and SMTPUTF8")
	fs.Var(auth, "auth", "AUTH PLAIN/LOGIN `mode`: forbidden, optional or required (needs -user and -pass)")
	fs.StringVar(&cfg.user, "user", "", "the one user `name` AUTH accepts")
	fs.StringVar(&cfg.pass, "pass", "", "the `password` of -user")
	fs.IntVar(&s.MaxAuthFailures, "max-auth-failures", 0, "failed AUTH attempts per session before 421 (0: 3, negative: no limit)")
	fs.Var(tlsMode, "tls", "STARTTLS `mode`: forbidden, optional or required")
	fs.StringVar(&s.TLSCertPath, "cert", "", "PEM certificate `file` (chain allowed); default: a self-signed certificate")
	fs.StringVar(&s.TLSKeyPath, "key", "", "PEM key `file` of -cert; default: the key inside the -cert file")
	fs.StringVar(&s.TLSCertCN, "cn", "", "common `name` of the self-signed certificate (default: the first host)")
	fs.StringVar(&s.TLSCertSAN, "san", "", "subject alternative `names` of the self-signed certificate, comma separated (default: hosts and bound addresses)")
	fs.Var(suites, "ciphers", "TLS 1.2 cipher `preset`: advanced-plus, advanced, broad, widest or legacy")
	fs.StringVar(&s.ImplicitTLSPorts, "implicit-tls", "", "bound `ports` that speak TLS from the first byte (RFC 8314), Ports syntax; needs -tls optional or required")
	fs.BoolVar(&s.DNSReverseLookup, "reverse-dns", false, "look up the host names of local and remote addresses")
	fs.StringVar(&cfg.out, "out", "", "save each accepted message into `dir` (created if missing); default: discard")
	fs.BoolVar(&cfg.quiet, "quiet", false, "no per-message lines on stdout, log level warn (the \"listening on\" lines stay)")
	fs.TextVar(&cfg.logLevel, "log-level", slog.LevelInfo, "log `level` on stderr: debug, info, warn or error (-quiet: warn)")
	fs.DurationVar(&cfg.grace, "grace", 30*time.Second, "on SIGINT/SIGTERM, how long sessions inside DATA may take to finish")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageFail(fs, "unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.quiet && !set["log-level"] {
		cfg.logLevel = slog.LevelWarn
	}

	s.CRLFMode = crlfModes[crlf.val]
	s.AuthMode = authModes[auth.val]
	s.TLSMode = tlsModes[tlsMode.val]
	if set["ciphers"] {
		s.TLSCipherSuites = ciphers[suites.val]
	}

	switch {
	case s.AuthMode != smtpd.AuthForbidden && (cfg.user == "" || cfg.pass == ""):
		return nil, usageFail(fs, "-auth %s needs -user and -pass", auth.val)
	case s.AuthMode == smtpd.AuthForbidden && (cfg.user != "" || cfg.pass != ""):
		return nil, usageFail(fs, "-user and -pass need -auth optional or required")
	case s.TLSMode == smtpd.TLSForbidden && (s.TLSCertPath != "" || s.TLSKeyPath != "" || s.TLSCertCN != "" || s.TLSCertSAN != "" || set["ciphers"]):
		return nil, usageFail(fs, "-cert, -key, -cn, -san and -ciphers need -tls optional or required")
	case s.TLSKeyPath != "" && s.TLSCertPath == "":
		return nil, usageFail(fs, "-key needs -cert")
	case cfg.grace < 0:
		return nil, usageFail(fs, "-grace must not be negative")
	}
	return cfg, nil
}

// usageFail reports a command-line error the way the flag package does.
func usageFail(fs *flag.FlagSet, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	fmt.Fprintln(fs.Output(), err)
	fs.Usage()
	return usageError{err}
}
