// Command tls is an smtpd server that wants encryption and a login: STARTTLS is
// offered (AUTH on plaintext is answered 538) and AUTH is required before mail is
// accepted. The one credential is user "demo", password "password". The
// certificate is a self-signed one made at start, unless -cert and -key are given;
// its SHA-256 fingerprint is printed so clients can pin it.
//
//	go run ./examples/tls
//	swaks --server 127.0.0.1:2525 --tls --auth PLAIN --auth-user demo --auth-password password --to you@example.com
package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/midismtp/smtpd"
)

const demoUser, demoPass = "demo", "password"

const usageHead = `tls is an SMTP server that wants encryption and a login: STARTTLS is offered
(AUTH on plaintext is answered 538) and AUTH is required before mail is accepted.
The one credential is user "demo", password "password". The certificate is a
self-signed one made at start unless -cert (and -key) are given; its SHA-256
fingerprint is printed so that clients can pin it. Each message received is printed.
Ctrl-C stops it gracefully.

  swaks --server 127.0.0.1:2525 --tls --auth PLAIN --auth-user demo --auth-password password --to you@example.com

Usage: tls [flags]
`

// handler accepts the demo credential and prints each message it receives.
type handler struct {
	smtpd.BaseHandler
	mu  sync.Mutex
	out io.Writer
}

// OnAuth accepts the demo user, for itself only; anything else gets 535.
func (*handler) OnAuth(_ *smtpd.Session, authzID, authcID, password string) (string, error) {
	ok := subtle.ConstantTimeCompare([]byte(authcID), []byte(demoUser)) &
		subtle.ConstantTimeCompare([]byte(password), []byte(demoPass))
	if ok != 1 || (authzID != "" && authzID != authcID) {
		return "", smtpd.SMTPError535
	}
	return "", nil
}

// OnMessage prints the envelope, the login and the TLS version of each message.
func (h *handler) OnMessage(s *smtpd.Session) error {
	version := "none"
	if st, ok := s.TLSState(); ok {
		version = tls.VersionName(st.Version)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(h.out, "message from=<%s> to=<%s> user=%s tls=%q bytes=%d\n",
		s.Envelope.From, strings.Join(s.Envelope.To, ">,<"), s.AuthenticationID, version, s.Message.Bytesize)
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "tls:", err)
		os.Exit(2)
	}
}

// run serves until ctx is done, then shuts down gracefully.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}
	hosts := fs.String("hosts", smtpd.DefaultHosts, "addresses to listen on, comma separated")
	ports := fs.String("ports", smtpd.DefaultPorts, "ports to listen on, comma separated")
	cert := fs.String("cert", "", "PEM certificate `file`; default: a self-signed certificate")
	key := fs.String("key", "", "PEM key `file` of -cert; default: the key inside the -cert file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	h := &handler{out: stdout}
	srv := &smtpd.Server{
		Handler:     h,
		Hosts:       *hosts,
		Ports:       *ports,
		AuthMode:    smtpd.AuthRequired,
		TLSMode:     smtpd.TLSOptional,
		TLSCertPath: *cert,
		TLSKeyPath:  *key,
		Logger:      logger,
	}
	if err := srv.Start(); err != nil {
		return err
	}

	h.mu.Lock()
	fmt.Fprintf(stdout, "demo credential: user %q, password %q\n", demoUser, demoPass)
	fmt.Fprintf(stdout, "certificate SHA-256 fingerprint: %s\n", fingerprint(srv.ActiveTLSConfig().Certificates[0].Certificate[0]))
	for _, a := range srv.Addrs() {
		fmt.Fprintf(stdout, "listening on %s\n", a)
	}
	h.mu.Unlock()

	<-ctx.Done()
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// fingerprint formats the SHA-256 of a DER certificate as openssl does: AB:CD:...
func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	hex := make([]string, len(sum))
	for i, b := range sum {
		hex[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(hex, ":")
}
