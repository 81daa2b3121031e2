// Command gosmtp is the load harness's peer server built on
// github.com/emersion/go-smtp: the Go SMTP library a user would otherwise pick.
//
// It takes every sender and recipient, reads each message to its end and drops
// it, like examples/sink -quiet: no AUTH, no TLS, 32 MiB largest message, 1000
// recipients, 30 s to send a line. go-smtp always offers PIPELINING.
// It prints "listening on ADDR" on stdout once ready and stops on SIGINT or
// SIGTERM, printing its counters on stderr.
//
// It is its own Go module, so the library's go.mod stays free of go-smtp:
//
//	cd bench/peers/gosmtp && go build -o /tmp/gosmtp . && /tmp/gosmtp -addr 127.0.0.1:12543
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

// counters, printed on exit: they show the peer really read what it was sent.
var messages, octets atomic.Int64

type backend struct{}

func (backend) NewSession(*smtp.Conn) (smtp.Session, error) { return discard{}, nil }

// discard is a session that accepts everything.
type discard struct{}

func (discard) Mail(string, *smtp.MailOptions) error { return nil }
func (discard) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (discard) Reset()                               {}
func (discard) Logout() error                        { return nil }

// Data reads the message to its end; go-smtp undoes the dot-stuffing and stops
// at MaxMessageBytes.
func (discard) Data(r io.Reader) error {
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return err
	}
	messages.Add(1)
	octets.Add(n)
	return nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:12543", "`host:port` to listen on")
	maxMessage := flag.Int64("max-message", 32<<20, "largest message in `bytes`")
	maxRcpt := flag.Int("max-recipients", 1000, "recipients per message")
	timeout := flag.Duration("timeout", 30*time.Second, "read and write timeout")
	verbose := flag.Bool("v", false, "log go-smtp's connection errors on stderr")
	flag.Parse()

	srv := smtp.NewServer(backend{})
	srv.Domain = "localhost"
	srv.MaxMessageBytes = *maxMessage
	srv.MaxRecipients = *maxRcpt
	srv.ReadTimeout = *timeout
	srv.WriteTimeout = *timeout
	if !*verbose {
		srv.ErrorLog = log.New(io.Discard, "", 0)
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = srv.Close()
	}
	fmt.Fprintf(os.Stderr, "gosmtp: messages=%d bytes=%d\n", messages.Load(), octets.Load())
	if err != nil && !errors.Is(err, smtp.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		log.Fatal(err)
	}
}
