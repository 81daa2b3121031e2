// Command queue is an SMTP receiver that hands every message to NATS JetStream, a
// durable, replicated queue, and answers 250 only once JetStream has acknowledged
// (stored, and with replicas, replicated) it. Several receivers behind a TCP load
// balancer (HAProxy with send-proxy-v2) and a three-node NATS cluster lose no
// acknowledged message when any one receiver or NATS node crashes. It lives in its
// own Go module, so the smtpd module itself depends on nothing of NATS.
//
//	cd examples/queue
//	go run .                                                # embedded NATS + JetStream, SMTP on 127.0.0.1:2525
//	go run . -consume -nats nats://127.0.0.1:4222 -drain    # (another terminal) print what is stored, then exit
//	go run . -nats nats://n1:4222,nats://n2:4222,nats://n3:4222 -replicas 3 -proxy-trusted 10.0.0.5
//
// With no flags everything runs in one process: an embedded nats-server with
// JetStream storing in -data (smtpd-queue in $XDG_DATA_HOME, else in
// ~/.local/share: the same folder wherever it runs; logged as an absolute path
// at start), listening for other NATS clients on -nats-listen (127.0.0.1:4222),
// a stream (-stream-name MAIL, -subject mail.incoming), and the SMTP receiver on
// 127.0.0.1:2525. -nats URL uses an existing NATS server or cluster instead.
// -consume reads the stream back with a durable pull consumer, prints one line
// per message or writes .eml files (-out), and acknowledges each; -drain makes
// it exit once nothing is left. Without -nats, -consume opens -data itself (the
// receivers stopped), and refuses a folder that holds no queue.
//
// Each message is taken as a stream (smtpd.MessageStreamer), read into memory up
// to what the NATS server's max_payload allows (a JetStream message is one
// payload), and published with the envelope in headers (X-Smtp-From, X-Smtp-To once
// per recipient, X-Smtp-Remote-Ip, X-Smtp-Remote-Port, X-Smtp-Proxy-Ip, X-Smtp-Helo,
// X-Smtp-Session, X-Smtp-Received-At) and a de-duplication ID (Nats-Msg-Id) of its
// own, so that a publish retried after a lost acknowledgement is stored once. The
// reply is 250 only after the PubAck; no PubAck within -publish-timeout (NATS
// unreachable, no JetStream leader): 451, logged. A message larger than
// max_payload allows: 552, logged. The README has the deployment recipe.
//
// It prints "listening on HOST:PORT" for every SMTP address and, with the embedded
// server listening, "nats on nats://HOST:PORT" once ready; logs go to stderr.
// SIGINT or SIGTERM stops it gracefully.
package main

import (
	"context"
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
		fmt.Fprintln(os.Stderr, "queue:", err)
		os.Exit(1)
	}
}

// run does what the flags in args say — receive, or with -consume read the stream
// back — until ctx is done. Ready lines go to stdout, logs to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))

	// Everything that writes to stdout runs on this goroutine: the "nats on" and
	// "listening on" lines, and -consume's message lines. No lock needed.
	q, err := connect(ctx, cfg, logger, stdout)
	if err != nil {
		return err
	}
	defer q.close()

	if cfg.consume {
		return consume(ctx, cfg, q, logger, stdout)
	}
	return receive(ctx, cfg, q, logger, stdout)
}
