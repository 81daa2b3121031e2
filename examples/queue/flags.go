package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/midismtp/smtpd"
)

// config is the parsed command line.
type config struct {
	// SMTP
	hosts, ports   string
	proxyTrusted   string
	maxProcessings int
	maxMessage     int
	maxRecipients  int
	maxBuffered    int
	cmdTimeout     time.Duration
	grace          time.Duration

	// NATS
	natsURL     string // empty: embedded server
	natsCreds   string
	dataDir     string // embedded: JetStream store, an absolute path once parsed
	natsListen  string // embedded: client listener; "" = in-process only
	natsHost    string // embedded: -nats-listen's host, as parseFlags split it
	natsPort    int    // embedded: -nats-listen's port; 0 picks a free one
	maxPayload  int    // embedded: max_payload
	syncAlways  bool   // embedded: fsync every write
	streamName  string
	subject     string
	replicas    int
	retention   string
	maxAge      time.Duration
	maxBytes    int64
	dupWindow   time.Duration
	pubTimeout  time.Duration
	startupWait time.Duration

	// -consume
	consume bool
	durable string
	out     string
	drain   bool // return once every pending message is handled

	logLevel slog.Level
}

// embedded reports whether the NATS server runs inside this process.
func (c *config) embedded() bool { return c.natsURL == "" }

// usageError is a command-line error; the flag package has already printed it with the usage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

const usageHead = `queue is an SMTP receiver that stores every message in NATS JetStream before it
answers 250: a message is acknowledged to the client only once JetStream has
acknowledged it (stored; with -replicas 3, on a quorum of the cluster). No NATS,
no JetStream leader, no acknowledgement within -publish-timeout: 451 (the client
retries). A message over what the NATS server's max_payload allows: 552.

Without -nats it runs an embedded nats-server with JetStream storing in -data
(by default the same folder wherever it runs, see -data below), listening for
other NATS clients (e.g. -consume) on -nats-listen; -nats URL uses an existing
NATS server or cluster (comma-separated URLs) instead.

-consume reads the stream back instead of receiving: a durable pull consumer
(-durable) prints one line per message, or writes <id>.eml and <id>.json into
-out DIR, and acknowledges each; with -drain it exits once nothing is left.
While a receiver runs, reach its server with -nats nats://127.0.0.1:4222;
with the receivers stopped, -consume without -nats opens -data itself.

It prints "listening on HOST:PORT" on stdout for every SMTP address once ready
(and "nats on nats://HOST:PORT" for the embedded server's listener). Logs go to
stderr. SIGINT or SIGTERM stops it gracefully.

Usage: queue [flags]
`

// parseFlags parses args; help and errors are printed to stderr.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("queue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}

	fs.StringVar(&cfg.hosts, "hosts", smtpd.DefaultHosts, "SMTP `addresses` to listen on, comma separated; * is every local address")
	fs.StringVar(&cfg.ports, "ports", smtpd.DefaultPorts, "SMTP `ports`, comma separated (smtpd's Ports syntax); 0 picks a free one")
	fs.StringVar(&cfg.proxyTrusted, "proxy-trusted", "", "`CIDRs` or IPs, comma separated, of load balancers that must send a PROXY v1/v2 header (empty: off)")
	fs.IntVar(&cfg.maxProcessings, "max-processings", 0, "SMTP sessions served at once (0: 100)")
	fs.IntVar(&cfg.maxMessage, "max-message", 0, "largest message in `bytes` (0: what the NATS server's max_payload allows, less 64 KiB for the envelope headers; more is refused)")
	fs.IntVar(&cfg.maxRecipients, "max-recipients", 100, "recipients per message (they travel in the message's headers)")
	fs.IntVar(&cfg.maxBuffered, "max-buffered", 256<<20, "message `bytes` all sessions together may hold in memory while publishing; a message past it gets 452 (negative: no limit)")
	fs.DurationVar(&cfg.cmdTimeout, "timeout", 0, "time a client has to send a whole line (0: 30s)")
	fs.DurationVar(&cfg.grace, "grace", 30*time.Second, "on SIGINT/SIGTERM, how long sessions inside DATA may take to finish")

	fs.StringVar(&cfg.natsURL, "nats", "", "NATS server `URLs`, comma separated (empty: run an embedded nats-server with JetStream)")
	fs.StringVar(&cfg.natsCreds, "nats-creds", "", "NATS user credentials `file` (.creds) for -nats")
	fs.StringVar(&cfg.dataDir, "data", defaultDataDir(), "embedded server: JetStream storage `dir`; the default is smtpd-queue in $XDG_DATA_HOME (else in ~/.local/share), whatever the working directory")
	fs.StringVar(&cfg.natsListen, "nats-listen", "127.0.0.1:4222", "embedded server: `address` NATS clients (e.g. -consume) connect to; port 0 picks a free one; empty: in-process only")
	fs.IntVar(&cfg.maxPayload, "max-payload", 8<<20, "embedded server: max_payload in `bytes`, the largest NATS message and so the largest mail (NATS allows up to 64 MiB)")
	fs.BoolVar(&cfg.syncAlways, "sync-always", false, "embedded server: fsync every message before the acknowledgement (default: fsync every 2 minutes; a crash of the process loses nothing, a power loss may)")
	fs.StringVar(&cfg.streamName, "stream-name", "MAIL", "JetStream stream `name`, created when missing")
	fs.StringVar(&cfg.subject, "subject", "mail.incoming", "`subject` messages are published on (the stream must capture it)")
	fs.IntVar(&cfg.replicas, "replicas", 1, "replicas of the stream when it is created (3 in a three-node cluster; 1 with the embedded server)")
	fs.StringVar(&cfg.retention, "retention", "limits", "retention `policy` of the stream when it is created: limits (kept until -max-age/-max-bytes) or workqueue (deleted once a consumer acknowledged it)")
	fs.DurationVar(&cfg.maxAge, "max-age", 0, "stream: drop messages older than this (0: keep)")
	fs.Int64Var(&cfg.maxBytes, "max-bytes", 0, "stream: most `bytes` stored; when full, new messages are refused (451), never old ones dropped (0: unlimited)")
	fs.DurationVar(&cfg.dupWindow, "duplicate-window", 2*time.Minute, "stream: how long JetStream remembers a Nats-Msg-Id to drop a re-published copy")
	fs.DurationVar(&cfg.pubTimeout, "publish-timeout", 5*time.Second, "how long a message's publish may take, retries included (each attempt gets a third), before 451")
	fs.DurationVar(&cfg.startupWait, "startup-timeout", 30*time.Second, "how long to wait at start for NATS and for the stream (e.g. while a cluster elects its leader)")

	fs.BoolVar(&cfg.consume, "consume", false, "read the stream back instead of receiving mail: print a line per message, or write files with -out, and acknowledge each")
	fs.StringVar(&cfg.durable, "durable", "queue-consume", "-consume: durable consumer `name` (its position survives restarts)")
	fs.StringVar(&cfg.out, "out", "", "-consume: write <id>.eml (the exact message) and <id>.json (envelope) into `dir` instead of printing")
	fs.BoolVar(&cfg.drain, "drain", false, "-consume: exit (status 0) once every message pending for -durable is handled, instead of waiting for more")
	fs.TextVar(&cfg.logLevel, "log-level", slog.LevelInfo, "log `level` on stderr: debug, info, warn or error")

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

	embeddedOnly := []string{"data", "nats-listen", "max-payload", "sync-always"}
	consumeOnly := []string{"durable", "out", "drain"}
	switch {
	case !cfg.embedded() && anySet(set, embeddedOnly):
		return nil, usageFail(fs, "-data, -nats-listen, -max-payload and -sync-always are for the embedded server: not with -nats")
	case !cfg.consume && anySet(set, consumeOnly):
		return nil, usageFail(fs, "-durable, -out and -drain need -consume")
	case cfg.embedded() && cfg.replicas != 1:
		return nil, usageFail(fs, "-replicas %d needs a cluster (-nats); the embedded server is one node", cfg.replicas)
	case cfg.replicas < 1 || cfg.replicas > 5:
		return nil, usageFail(fs, "-replicas must be 1 to 5")
	case cfg.retention != "limits" && cfg.retention != "workqueue":
		return nil, usageFail(fs, "-retention must be limits or workqueue")
	case cfg.maxPayload < 64<<10 || cfg.maxPayload > 64<<20:
		return nil, usageFail(fs, "-max-payload must be 64 KiB to 64 MiB")
	case cfg.pubTimeout <= 0:
		return nil, usageFail(fs, "-publish-timeout must be positive")
	case cfg.dupWindow < cfg.pubTimeout:
		return nil, usageFail(fs, "-duplicate-window must be at least -publish-timeout: retried publishes must be recognised")
	case cfg.maxMessage < 0:
		return nil, usageFail(fs, "-max-message must not be negative (the queue always has a limit)")
	case cfg.maxRecipients < 1:
		return nil, usageFail(fs, "-max-recipients must be at least 1")
	case cfg.grace < 0 || cfg.maxAge < 0 || cfg.maxBytes < 0 || cfg.startupWait < 0:
		return nil, usageFail(fs, "-grace, -max-age, -max-bytes and -startup-timeout must not be negative")
	case cfg.subject == "" || strings.ContainsAny(cfg.subject, " \t\r\n*>"):
		return nil, usageFail(fs, "-subject must be a literal subject (no wildcards, no spaces)")
	case cfg.streamName == "" || strings.ContainsAny(cfg.streamName, " \t\r\n.*>/\\"):
		return nil, usageFail(fs, "-stream-name must not be empty nor contain spaces, '.', '*', '>', '/' or '\\'")
	}
	if cfg.embedded() && cfg.natsListen != "" {
		host, port, err := net.SplitHostPort(cfg.natsListen)
		if err != nil {
			return nil, usageFail(fs, "-nats-listen: %v", err)
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return nil, usageFail(fs, "-nats-listen: bad port %q", port)
		}
		cfg.natsHost, cfg.natsPort = host, int(p)
	}
	if cfg.embedded() {
		if cfg.dataDir == "" {
			return nil, usageFail(fs, "-data: no default (neither $XDG_DATA_HOME nor a home directory is known); give -data DIR")
		}
		abs, err := filepath.Abs(cfg.dataDir)
		if err != nil {
			return nil, usageFail(fs, "-data: %v", err)
		}
		cfg.dataDir = abs
	}
	return cfg, nil
}

// defaultDataDir is -data's default: smtpd-queue in $XDG_DATA_HOME when that is
// an absolute path, else in ~/.local/share (the XDG default), on every system.
// It does not depend on the working directory, so the receiver and -consume
// find the same store wherever each is started. "" when no home directory is
// known: -data must then be given.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "smtpd-queue")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".local", "share", "smtpd-queue")
}

func anySet(set map[string]bool, names []string) bool {
	for _, n := range names {
		if set[n] {
			return true
		}
	}
	return false
}

// usageFail reports a command-line error the way the flag package does.
func usageFail(fs *flag.FlagSet, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	fmt.Fprintln(fs.Output(), err)
	fs.Usage()
	return usageError{err}
}
