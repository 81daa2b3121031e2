// Command sink is an SMTP server with every smtpd option as a flag. It accepts
// every message and discards it, or saves it to a folder (-out DIR) as <id>.eml and
// <id>.json. The interop, acceptance and load-test suites drive it.
//
//	go run ./examples/sink -ports 2525 -out /tmp/mail
//	SINK_PASS=secret go run ./examples/sink -auth optional -user alice
//	go run ./examples/sink -h
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		os.Exit(2) // already printed with the usage
	default:
		fmt.Fprintln(os.Stderr, "sink:", err)
		os.Exit(1)
	}
}

// run starts the server the flags in args describe, prints "listening on HOST:PORT"
// to stdout for each bound address, and serves until ctx is done; then it shuts the
// server down gracefully. Logs go to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	out := &lockedWriter{w: stdout}

	h := &sink{}
	if cfg.user != "" {
		h.user = cfg.user
		h.userSum = sha256.Sum256([]byte(cfg.user))
		h.passSum = sha256.Sum256([]byte(cfg.pass))
		h.tokenSum = sha256.Sum256([]byte(cfg.token))
	}
	if !cfg.quiet {
		h.out = out
	}
	if cfg.out != "" {
		if h.store, err = newStore(cfg.out, cfg.srv.LMTP); err != nil {
			return err
		}
	}

	srv := &cfg.srv
	srv.Handler = h
	if cfg.stream {
		srv.Handler = streamSink{h}
	}
	srv.Logger = logger
	if err := srv.Start(); err != nil {
		return err
	}
	if tc := srv.ActiveTLSConfig(); tc != nil && len(tc.Certificates) > 0 && len(tc.Certificates[0].Certificate) > 0 {
		sum := sha256.Sum256(tc.Certificates[0].Certificate[0])
		logger.Info("TLS certificate", "sha256", fmt.Sprintf("%X", sum))
	}
	for _, a := range srv.Addrs() {
		fmt.Fprintf(out, "listening on %s\n", a)
	}

	<-ctx.Done()
	logger.Info("shutting down", "grace", cfg.grace)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("sessions still busy at the end of -grace were closed", "err", err)
	}
	return nil
}
