// Command mx is the Internet-facing receiver as one command: an SMTP server with
// the abuse limits of a port-25 server, STARTTLS, mail authentication (package
// mailauth: SPF, DKIM, DMARC, ARC, iprev) and milters (package milter), storing
// every message it accepts in a folder as <id>.eml and <id>.json.
//
//	cd examples/mx
//	go run .                                  # 127.0.0.1:2525, into ./mx-out
//	go run . -milter inet:127.0.0.1:8891 -resolver 127.0.0.1:53
//	go run . -h                               # every flag, and the limits
//
// # The chain
//
// The server's Handler is three handlers, outermost first:
//
//	authStage  (chain.go)   reads the message as it arrives through a mailauth.Reader
//	milter.Wrap             the milters, at every stage Postfix calls them
//	mailbox    (handler.go) decides (DMARC) and stores
//
// Each is an smtpd.MessageStreamer, so a message is never whole in memory: it is
// in the server's buffers, in the mailauth Check's bounded header and body queue,
// in milter.Wrap's spool (a file past 64 KiB) while milters decide, and in the
// store's files.
//
// This order makes the .eml what RFC 8601 and Postfix's milters ask for:
//
//   - The verdict is made on the message as received. authStage's Reader feeds a
//     Check with the bytes the server hands over, before any milter sees them,
//     so a milter's changes (a DKIM signature it adds, a From it rewrites, a body
//     it replaces) never reach the verdict.
//   - Incoming Authentication-Results fields that claim our authserv-id are
//     removed before the milters get the message (the Reader returns the message
//     without them, RFC 8601 section 5): milters never see a forged verdict, and
//     the fields a milter adds, whatever authserv-id they name, come after the
//     stripping and are never removed.
//   - The .eml begins with our field: the mailbox writes it, then the message as
//     the milters left it. Our field is added after the milters, so they do not
//     see it and their header indexes count the message as received, as Postfix's
//     do with the fields it adds itself.
//   - The verdict is ready before the reply. When a milter takes the content,
//     milter.Wrap reads the stream to its end (the Check's end) before the
//     milters' end of message, and calls the mailbox after them: the verdict is
//     there when the mailbox starts, and it writes the field, then the spooled,
//     changed message. Otherwise (no milter, or none that takes the content:
//     every milter accepted the message early, or failed under
//     -milter-default-action accept) the mailbox reads the live stream itself:
//     it keeps it (in memory up to 64 KiB, then in a hidden file of the folder),
//     and at its end, the verdict made, writes the field and then the kept
//     message (a file copied in the kernel: copy_file_range). Either way the
//     DMARC decision (550 5.7.1) and the 250 come after the verdict.
//
// A milter's refusal answers before the mailbox runs: a rejected, discarded or
// tempfailed message is never stored, and its Check is released when authStage's
// hook returns.
//
// # Decisions
//
//   - DMARC fail under p=reject is refused with 550 5.7.1 at the end of data
//     (-dmarc-enforce, the default); with -dmarc-enforce=false it is stored with
//     quarantine: true. p=quarantine, or a milter's quarantine action, stores the
//     message with quarantine: true and the reason. SPF fail alone refuses nothing
//     (RFC 7489 10.1): DMARC decides. temperror refuses nothing either.
//   - mx adds no Received field: the .eml is our field, then the message as
//     received and changed by the milters (DESIGN.md), and the .json holds the
//     trace (helo, remote_ip, received_at).
//   - The limits are Postfix's defaults for smtpd where Postfix has one (limits.go).
//
// Standards: RFC 5321 (SMTP), RFC 3207 (STARTTLS), RFC 8601 (Authentication-Results),
// RFC 7208 (SPF), RFC 6376, RFC 8301, RFC 8463 (DKIM), RFC 7489 (DMARC),
// RFC 8617 (ARC), through mailauth; the milter protocol through milter.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/midismtp/smtpd/mailauth"
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
		fmt.Fprintln(os.Stderr, "mx:", err)
		os.Exit(1)
	}
}

// run starts mx as the flags in args describe, prints "listening on HOST:PORT" to
// stdout for each bound address, and serves until ctx is done; then it shuts the
// server down gracefully. Logs go to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: stderr}, nil))
	st, err := newStore(cfg.out)
	if err != nil {
		return err
	}
	v := &mailauth.Verifier{AuthServID: cfg.authServID}
	if cfg.resolver != "" {
		v.Resolver = mailauth.NewResolver(cfg.resolver)
	}

	srv := &cfg.srv
	applyLimits(srv)
	if srv.TLSCertPath == "" {
		srv.TLSCertCN = cfg.authServID // the self-signed certificate names us
	}
	srv.Handler = newHandler(cfg, v, st, logger)
	srv.Logger = logger
	if err := srv.Start(); err != nil {
		return err
	}
	logger.Info("mx ready", "authserv_id", cfg.authServID, "out", cfg.out, "milters", len(cfg.milters),
		"resolver", cmp.Or(cfg.resolver, "system"), "dmarc_enforce", cfg.dmarcEnforce)
	for _, a := range srv.Addrs() {
		fmt.Fprintf(stdout, "listening on %s\n", a)
	}

	<-ctx.Done()
	logger.Info("shutting down", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("sessions still busy at the end of the grace were closed", "err", err)
	}
	return nil
}

// lockedWriter serializes the writes of concurrent sessions.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
