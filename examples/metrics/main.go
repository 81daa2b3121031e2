// Command metrics runs an smtpd.Server that accepts and discards every message, and
// serves the server's counters (Server.Stats) to Prometheus at /metrics. It is the
// example of wiring Stats into a metrics system; it lives in its own Go module, so
// the smtpd module itself depends on nothing of Prometheus.
//
//	cd examples/metrics
//	go run . -ports 2525 -metrics-addr 127.0.0.1:9464
//	curl -s http://127.0.0.1:9464/metrics | grep ^smtpd_
//
// Flags: -hosts and -ports (smtpd's Hosts and Ports syntax; default 127.0.0.1 and
// 2525, "0" picks a free port) and -metrics-addr (default 127.0.0.1:9464, the HTTP
// address of /metrics; keep it off the Internet or behind your scraper's network).
// It prints "listening on HOST:PORT" for every SMTP address and
// "metrics on http://HOST:PORT/metrics" once ready, logs to stderr, and stops
// gracefully on SIGINT/SIGTERM.
//
// A custom prometheus.Collector reads Stats() at each scrape (nothing is counted
// twice, nothing is pushed from the hot path), and exports:
//
//	smtpd_connections_total                 counter  connections accepted
//	smtpd_connections_open                  gauge    connections open now, waiting ones included
//	smtpd_connections_waiting               gauge    connections waiting for a processing slot (stress mode while > 0)
//	smtpd_sessions_active                   gauge    sessions holding a processing slot
//	smtpd_messages_accepted_total           counter  messages answered 250
//	smtpd_messages_refused_total            counter  message transfers answered with an error
//	smtpd_messages_accepted_bytes_total     counter  bytes of accepted messages
//	smtpd_replies_total{class="2xx"}        counter  replies sent, by class: 2xx, 3xx, 4xx, 5xx
//	smtpd_auth_total{result="success"}      counter  AUTH answered 235 (result="failure": 535)
//	smtpd_tls_handshakes_total{result=...}  counter  TLS handshakes, "success" or "failure"
//	smtpd_limit_hits_total{limit="max_errors"} counter  how often each limit ended a command,
//	                                                  a message or a connection: one label
//	                                                  value per smtpd.LimitStats field
//
// plus the Go runtime and process metrics (go_*, process_*) of client_golang.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		os.Exit(2) // the flag package printed it with the usage
	default:
		fmt.Fprintln(os.Stderr, "metrics:", err)
		os.Exit(1)
	}
}

// usageError is a command-line error, already printed with the usage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// run starts the SMTP server and the metrics HTTP server that args describe, prints
// their addresses to stdout, and serves until ctx is done; then it stops both
// gracefully.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("metrics", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hosts := fs.String("hosts", smtpd.DefaultHosts, "SMTP `addresses` to listen on, comma separated; * is every local address")
	ports := fs.String("ports", smtpd.DefaultPorts, "SMTP `ports`, comma separated; 0 picks a free one")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9464", "HTTP `address` that serves /metrics; port 0 picks a free one")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected argument %q", fs.Arg(0))
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return usageError{err}
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))

	srv := &smtpd.Server{Hosts: *hosts, Ports: *ports, Logger: logger} // BaseHandler: accept, discard
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newStatsCollector(srv),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelError)}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}

	ml, err := net.Listen("tcp", *metricsAddr)
	if err != nil {
		return fmt.Errorf("-metrics-addr: %w", err)
	}
	if err := srv.Start(); err != nil {
		ml.Close()
		return err
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ml) }()
	for _, a := range srv.Addrs() {
		fmt.Fprintf(stdout, "listening on %s\n", a)
	}
	fmt.Fprintf(stdout, "metrics on http://%s/metrics\n", ml.Addr())

	select {
	case <-ctx.Done():
	case err = <-served: // the HTTP server failed: stop the SMTP server too
		err = fmt.Errorf("metrics server: %w", err)
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		logger.Warn("sessions still busy after 10s were closed", "err", serr)
	}
	hs.Shutdown(sctx)
	return err
}

// statsCollector is a prometheus.Collector that reads Server.Stats at each scrape.
type statsCollector struct {
	srv *smtpd.Server

	connectionsTotal, connectionsOpen, connectionsWaiting, sessionsActive *prometheus.Desc
	messagesAccepted, messagesRefused, bytesAccepted                      *prometheus.Desc
	replies, auth, tls, limits                                            *prometheus.Desc
}

func newStatsCollector(srv *smtpd.Server) *statsCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("smtpd_"+name, help, labels, nil)
	}
	return &statsCollector{
		srv:                srv,
		connectionsTotal:   d("connections_total", "SMTP connections accepted."),
		connectionsOpen:    d("connections_open", "SMTP connections open now, waiting ones included."),
		connectionsWaiting: d("connections_waiting", "SMTP connections waiting for a processing slot now (stress mode while above 0)."),
		sessionsActive:     d("sessions_active", "SMTP sessions holding a processing slot now."),
		messagesAccepted:   d("messages_accepted_total", "Messages answered 250 after OnMessage."),
		messagesRefused:    d("messages_refused_total", "Message transfers answered with an error (hook, size, memory budget, CRLF)."),
		bytesAccepted:      d("messages_accepted_bytes_total", "Bytes of accepted messages."),
		replies:            d("replies_total", "SMTP replies sent, by class.", "class"),
		auth:               d("auth_total", "AUTH exchanges that ended in 235 (success) or 535 (failure).", "result"),
		tls:                d("tls_handshakes_total", "TLS handshakes (STARTTLS and implicit TLS), by result.", "result"),
		limits:             d("limit_hits_total", "How often each limit ended a command, a message or a connection.", "limit"),
	}
}

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connectionsTotal, c.connectionsOpen, c.connectionsWaiting,
		c.sessionsActive, c.messagesAccepted, c.messagesRefused, c.bytesAccepted, c.replies, c.auth,
		c.tls, c.limits} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one Stats snapshot per scrape.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter(c.connectionsTotal, st.ConnectionsTotal)
	gauge(c.connectionsOpen, st.ConnectionsOpen)
	gauge(c.connectionsWaiting, st.ConnectionsWaiting)
	gauge(c.sessionsActive, st.SessionsActive)
	counter(c.messagesAccepted, st.MessagesAccepted)
	counter(c.messagesRefused, st.MessagesRefused)
	counter(c.bytesAccepted, st.BytesAccepted)
	counter(c.replies, st.Replies2xx, "2xx")
	counter(c.replies, st.Replies3xx, "3xx")
	counter(c.replies, st.Replies4xx, "4xx")
	counter(c.replies, st.Replies5xx, "5xx")
	counter(c.auth, st.AuthSuccesses, "success")
	counter(c.auth, st.AuthFailures, "failure")
	counter(c.tls, st.TLSHandshakes, "success")
	counter(c.tls, st.TLSFailures, "failure")
	v := reflect.ValueOf(st.Limits)
	for i := range v.NumField() {
		if f := v.Field(i); f.CanInt() {
			counter(c.limits, f.Int(), limitLabel(v.Type().Field(i).Name))
		}
	}
}

// limitLabels names the limit label of the smtpd.LimitStats fields whose
// snake_case (see limitLabel) would read badly. A field added to LimitStats is
// exported without any change here.
var limitLabels = map[string]string{
	"XClientRefused": "xclient_refused", // not x_client_refused
}

// limitLabel returns the label value of a LimitStats field, its name in
// snake_case: "MaxErrors" → "max_errors", "MaxConnectionsPerIP" →
// "max_connections_per_ip", "NonSMTP" → "non_smtp".
func limitLabel(field string) string {
	if l, ok := limitLabels[field]; ok {
		return l
	}
	var b strings.Builder
	for i := 0; i < len(field); i++ {
		c := field[i]
		if isUpper(c) && i > 0 && (!isUpper(field[i-1]) || i+1 < len(field) && !isUpper(field[i+1])) {
			b.WriteByte('_')
		}
		if isUpper(c) {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
