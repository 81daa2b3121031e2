package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
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
	token    string // the bearer token OAUTHBEARER and XOAUTH2 accept for -user
	out      string
	stream   bool
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
	crlfModes   = map[string]smtpd.CRLFMode{"ensure": smtpd.CRLFEnsure, "leave": smtpd.CRLFLeave, "strict": smtpd.CRLFStrict}
	authModes   = map[string]smtpd.AuthMode{"forbidden": smtpd.AuthForbidden, "optional": smtpd.AuthOptional, "required": smtpd.AuthRequired}
	tlsModes    = map[string]smtpd.TLSMode{"forbidden": smtpd.TLSForbidden, "optional": smtpd.TLSOptional, "required": smtpd.TLSRequired}
	clientAuths = map[string]tls.ClientAuthType{"none": tls.NoClientCert, "request": tls.RequestClientCert,
		"require-any": tls.RequireAnyClientCert, "verify-if-given": tls.VerifyClientCertIfGiven,
		"require-and-verify": tls.RequireAndVerifyClientCert}
	ciphers = map[string][]uint16{
		"advanced-plus": smtpd.TLSCiphersAdvancedPlus,
		"advanced":      smtpd.TLSCiphersAdvanced,
		"broad":         smtpd.TLSCiphersBroadCompatibility,
		"widest":        smtpd.TLSCiphersWidestCompatibility,
		"legacy":        smtpd.TLSCiphersLegacy,
	}
)

const usageHead = `sink is an SMTP server that accepts every message and discards it, or saves it
to -out DIR as <id>.eml (the exact message) and then <id>.json (its envelope,
session facts and a few header fields; written last, so a .json file means the
message is complete). An id is smtpd's Message.ID, <session id>-<n>: the
Session.ID (a random per-run prefix and a connection counter) and the number of
the transaction in that session, from 1 (q7k2m9-1f-1); the .json's received_at
gives the arrival order.
It is the server the interop, acceptance and load-test suites drive. Every
option has the library's default; -max-processings 0 means 100 sessions at
once: give -max-processings 1100 to hold 1000 idle connections with a banner each.

It prints "listening on HOST:PORT" on stdout for every bound address once ready,
then one line per accepted message unless -quiet. Logs go to stderr.
SIGINT or SIGTERM stops it gracefully.

Environment: SINK_PASS is the AUTH password when -pass is empty, SINK_TOKEN the
bearer token when -token is empty (a secret on the command line is visible to
every user through ps).

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
	clientAuth := &choice{"none", []string{"none", "request", "require-any", "verify-if-given", "require-and-verify"}}
	var mechanisms, clientCA string

	fs.StringVar(&s.Hosts, "hosts", "127.0.0.1", "`addresses` to listen on, comma separated; * is every local address")
	fs.StringVar(&s.Ports, "ports", "2525", "`ports`, comma separated, item i for host i; a:b gives a host several ports; 0 picks a free one")
	fs.IntVar(&s.MaxProcessings, "max-processings", 0, "sessions served at once (0: 100); further connections wait without a banner, and while any waits the server is in stress mode")
	fs.DurationVar(&s.WaitTimeout, "wait-timeout", 0, "how long a connection may wait for a processing slot before 421 (0: 30s, negative: for ever)")
	fs.IntVar(&s.MaxConnections, "max-connections", 0, "open connections allowed, waiting ones included (0: unlimited); one more gets 421")
	fs.IntVar(&s.MaxConnectionsPerIP, "max-per-ip", 0, "at most `N` open connections from one remote address, after PROXY/XCLIENT; one more gets 421 (0: unlimited; negative is refused)")
	fs.Var(crlf, "crlf", "line-end `mode`: ensure, leave or strict")
	fs.DurationVar(&s.IOCmdTimeout, "timeout", 0, "time a client has to send a whole line (0: 30s, negative: none)")
	fs.IntVar(&s.IOBufferMaxSize, "buffer-max", 0, "longest line in `bytes` (0: 1 MiB)")
	fs.IntVar(&s.MaxMessageSize, "max-message", 0, "largest message in `bytes`, larger ones get 552 (0: 32 MiB, negative: none)")
	fs.IntVar(&s.MaxRecipients, "max-recipients", 0, "recipients per message (0: 1000, negative: none)")
	fs.IntVar(&s.MaxBufferedData, "max-buffered", 0, "message `bytes` all sessions together may hold in memory; a message past it gets 452 (0: 512 MiB, negative: none)")
	fs.IntVar(&s.MaxErrors, "max-errors", 0, "at most `N` error replies a session may get without delivering a message; one more: 421 and close (0: 20, negative: none)")
	fs.IntVar(&s.MaxJunkCommands, "max-junk", 0, "at most `N` NOOP, RSET, VRFY, EXPN, HELP and repeated HELO/EHLO a session may send without delivering a message; one more: 421 and close (0: 100, negative: none)")
	fs.DurationVar(&s.GreetDelay, "greet-delay", 0, "hold the banner back this long; a client that talks first gets 554 and is closed (0: off; negative is refused)")
	fs.IntVar(&s.MinDataRate, "min-data-rate", 0, "least average rate, `N` bytes/s, of a message transfer, else 421 (0: off, 500 in stress mode; negative is refused)")
	fs.StringVar(&s.ProxyTrustedNetworks, "proxy-trusted", "", "`CIDRs` or IPs, comma separated, of load balancers that must send a PROXY v1/v2 header (empty: off)")
	fs.StringVar(&s.XClientTrustedNetworks, "xclient-trusted", "", "`CIDRs` or IPs, comma separated, of clients allowed to use XCLIENT (empty: off)")
	fs.BoolVar(&s.EnhancedStatusCodes, "enhanced-status-codes", false, "enable ENHANCEDSTATUSCODES (RFC 2034): RFC 3463 codes in the replies")
	fs.BoolVar(&s.Chunking, "chunking", false, "enable CHUNKING and BINARYMIME (RFC 3030): BDAT")
	fs.BoolVar(&s.DSN, "dsn", false, "enable DSN (RFC 3461): RET, ENVID, NOTIFY and ORCPT, recorded in each .json")
	fs.BoolVar(&s.LMTP, "lmtp", false, "speak LMTP (RFC 2033) instead of SMTP: LHLO, one reply per recipient")
	fs.BoolVar(&cfg.stream, "stream", false, "take each message as a stream (smtpd.MessageStreamer): written straight to its .eml, never whole in memory")
	fs.BoolVar(&s.Pipelining, "pipelining", false, "enable PIPELINING (RFC 2920)")
	fs.BoolVar(&s.Internationalization, "i18n", false, "enable 8BITMIME and SMTPUTF8")
	fs.Var(auth, "auth", "AUTH `mode`: forbidden, optional or required (needs -user and -pass or SINK_PASS)")
	fs.StringVar(&cfg.user, "user", "", "the one user `name` AUTH accepts")
	fs.StringVar(&cfg.pass, "pass", "", "the `password` of -user; empty: the SINK_PASS environment variable (better: a command line is visible in ps)")
	fs.StringVar(&mechanisms, "auth-mechanisms", "", "SASL `mechanisms` AUTH offers, comma separated, in order: PLAIN, LOGIN, OAUTHBEARER, XOAUTH2 (the -token of -user), EXTERNAL (a client certificate verified by -client-ca whose subject's common name is -user) (default: LOGIN,PLAIN)")
	fs.StringVar(&cfg.token, "token", "", "the bearer `token` OAUTHBEARER and XOAUTH2 accept for -user; empty: the SINK_TOKEN environment variable")
	fs.Var(clientAuth, "client-auth", "TLS client certificate `policy`: none, request, require-any, verify-if-given or require-and-verify (against -client-ca)")
	fs.StringVar(&clientCA, "client-ca", "", "PEM `file` of the certificate authorities client certificates are verified against (default: the system's)")
	fs.BoolVar(&s.RequireTLS, "require-tls", false, "enable REQUIRETLS (RFC 8689), advertised over TLS only")
	fs.IntVar(&s.MaxAuthFailures, "max-auth-failures", 0, "failed AUTH attempts per session before 421 (0: 3, negative: no limit)")
	fs.DurationVar(&s.AuthFailureDelay, "auth-failure-delay", 0, "hold every 535 (failed AUTH) back this long (0: off; negative is refused)")
	fs.Var(tlsMode, "tls", "STARTTLS `mode`: forbidden, optional or required")
	fs.StringVar(&s.TLSCertPath, "cert", "", "PEM certificate `file` (chain allowed); default: a self-signed certificate")
	fs.StringVar(&s.TLSKeyPath, "key", "", "PEM key `file` of -cert; default: the key inside the -cert file")
	fs.StringVar(&s.TLSCertCN, "cn", "", "common `name` of the self-signed certificate (default: the first -san name, else the first host or bound address; localhost.local when that is localhost, 127.0.0.1 or ::1)")
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
	if cfg.pass == "" && s.AuthMode != smtpd.AuthForbidden {
		cfg.pass = os.Getenv("SINK_PASS") // with -auth forbidden a stray SINK_PASS is ignored
	}
	if set["ciphers"] {
		s.TLSCipherSuites = ciphers[suites.val]
	}
	if cfg.token == "" && s.AuthMode != smtpd.AuthForbidden {
		cfg.token = os.Getenv("SINK_TOKEN")
	}
	if mechanisms != "" {
		s.AuthMechanisms = strings.Split(mechanisms, ",")
	}
	s.TLSClientAuth = clientAuths[clientAuth.val]
	if clientCA != "" {
		pool, err := loadCAs(clientCA)
		if err != nil {
			return nil, usageFail(fs, "-client-ca: %v", err)
		}
		s.TLSClientCAs = pool
	}

	switch {
	case s.AuthMode != smtpd.AuthForbidden && (cfg.user == "" || cfg.pass == ""):
		return nil, usageFail(fs, "-auth %s needs -user and -pass (or SINK_PASS)", auth.val)
	case s.AuthMode == smtpd.AuthForbidden && (cfg.user != "" || cfg.pass != ""):
		return nil, usageFail(fs, "-user and -pass need -auth optional or required")
	case s.TLSMode == smtpd.TLSForbidden && (s.TLSCertPath != "" || s.TLSKeyPath != "" || s.TLSCertCN != "" || s.TLSCertSAN != "" || set["ciphers"]):
		return nil, usageFail(fs, "-cert, -key, -cn, -san and -ciphers need -tls optional or required")
	case s.TLSKeyPath != "" && s.TLSCertPath == "":
		return nil, usageFail(fs, "-key needs -cert")
	case s.TLSMode == smtpd.TLSForbidden && (set["client-auth"] || clientCA != "" || s.RequireTLS):
		return nil, usageFail(fs, "-client-auth, -client-ca and -require-tls need -tls optional or required")
	case s.AuthMode == smtpd.AuthForbidden && (mechanisms != "" || cfg.token != ""):
		return nil, usageFail(fs, "-auth-mechanisms and -token need -auth optional or required")
	case tokenMechanism(s.AuthMechanisms) && cfg.token == "":
		return nil, usageFail(fs, "-auth-mechanisms OAUTHBEARER or XOAUTH2 needs -token (or SINK_TOKEN)")
	case cfg.grace < 0:
		return nil, usageFail(fs, "-grace must not be negative")
	}
	return cfg, nil
}

// tokenMechanism reports whether mechs offers a bearer-token mechanism.
func tokenMechanism(mechs []string) bool {
	for _, m := range mechs {
		if u := strings.ToUpper(m); u == smtpd.MechanismOAuthBearer || u == smtpd.MechanismXOAuth2 {
			return true
		}
	}
	return false
}

// loadCAs reads a PEM file of certificate authorities.
func loadCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// usageFail reports a command-line error the way the flag package does.
func usageFail(fs *flag.FlagSet, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	fmt.Fprintln(fs.Output(), err)
	fs.Usage()
	return usageError{err}
}
