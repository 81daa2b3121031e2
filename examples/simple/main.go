// Command simple is the smallest useful smtpd server, the port of MidiSmtpServer's
// first README example: it accepts every message and prints its sender, recipients
// and Subject.
//
//	go run ./examples/simple               # listens on 127.0.0.1:2525
//	swaks --server 127.0.0.1:2525 --to you@example.com
//
// Stop it with Ctrl-C: sessions in the middle of a message may finish it.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/mail"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/midismtp/smtpd"
)

// handler accepts everything (BaseHandler) and overrides only OnMessage.
type handler struct {
	smtpd.BaseHandler
	out io.Writer // where the message lines go: standard output
}

// OnMessage runs once per message, after the final dot. Returning nil answers 250.
func (h handler) OnMessage(s *smtpd.Session) error {
	subject := "(no subject)"
	if msg, err := mail.ReadMessage(bytes.NewReader(s.Message.Data)); err == nil {
		subject = msg.Header.Get("Subject")
		// RFC 2047 encoded words ("=?utf-8?q?Gr=C3=BC=C3=9Fe?=") decoded; a charset
		// the decoder does not know leaves the subject as sent.
		if decoded, err := new(mime.WordDecoder).DecodeHeader(subject); err == nil {
			subject = decoded
		}
	}
	fmt.Fprintf(h.out, "from <%s> to %q: %s\n", s.Envelope.From, s.Envelope.To, subject)
	return nil
}

func main() {
	hosts := flag.String("hosts", "127.0.0.1", "addresses to listen on, comma separated")
	ports := flag.String("ports", "2525", "ports to listen on, comma separated")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	srv := &smtpd.Server{
		Handler: handler{out: os.Stdout},
		Hosts:   *hosts,
		Ports:   *ports,
		Logger:  logger,
	}
	if err := srv.Start(); err != nil {
		logger.Error("cannot start", "err", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()

	logger.Info("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		logger.Error("shutdown", "err", err)
		os.Exit(1)
	}
}
