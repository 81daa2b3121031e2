package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// queue is the connection to NATS JetStream, and the embedded server when there
// is one.
type queue struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	ns      *server.Server // the embedded server; nil with -nats
	lock    *os.File       // holds the lock of the embedded server's -data
	log     *slog.Logger
	closing atomic.Bool // close has begun: losing the connection is expected
}

// connect starts the embedded server (without -nats), connects to NATS and makes
// sure the stream exists, waiting up to -startup-timeout for both.
func connect(ctx context.Context, cfg *config, logger *slog.Logger, out io.Writer) (*queue, error) {
	q := &queue{log: logger}
	opts := []nats.Option{
		nats.Name("smtpd-queue"),
		nats.MaxReconnects(-1), // for ever: while away, messages get 451
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		// No reconnect buffer: a publish while disconnected fails at once (451)
		// instead of being sent later, after its client was told to retry.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if q.closing.Load() {
				return
			}
			logger.Warn("NATS connection lost; messages get 451 until it is back", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("NATS connection back", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			logger.Warn("NATS error", "err", err)
		}),
	}
	url := cfg.natsURL
	if cfg.embedded() {
		if cfg.consume {
			if err := storeExists(cfg.dataDir); err != nil {
				return nil, err
			}
		}
		lock, err := lockDir(cfg.dataDir)
		if err != nil {
			return nil, err
		}
		q.lock = lock
		ns, err := startEmbedded(cfg, logger)
		if err != nil {
			q.close()
			return nil, err
		}
		q.ns = ns
		opts = append(opts, nats.InProcessServer(ns))
		if cfg.natsListen != "" {
			fmt.Fprintf(out, "nats on %s\n", ns.ClientURL())
		}
	} else if cfg.natsCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.natsCreds))
	}

	deadline := time.Now().Add(cfg.startupWait)
	for {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			q.nc = nc
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			q.close()
			return nil, fmt.Errorf("connecting to NATS %s: %w", redact(url), err)
		}
		logger.Info("NATS not reachable yet; retrying", "url", redact(url), "err", err)
		sleep(ctx, 500*time.Millisecond)
	}
	js, err := jetstream.New(q.nc)
	if err != nil {
		q.close()
		return nil, err
	}
	q.js = js
	if err := q.ensureStream(ctx, cfg, deadline); err != nil {
		q.close()
		return nil, err
	}
	return q, nil
}

// close drains the connection (its pending acknowledgements arrive) and stops
// the embedded server.
func (q *queue) close() {
	q.closing.Store(true)
	if q.nc != nil {
		done := make(chan struct{})
		q.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
		if err := q.nc.Drain(); err == nil {
			select {
			case <-done:
			case <-time.After(5 * time.Second):
			}
		}
		q.nc.Close()
	}
	if q.ns != nil {
		q.ns.Shutdown()
		q.ns.WaitForShutdown()
	}
	if q.lock != nil {
		q.lock.Close()
	}
}

// ensureStream creates the stream when it does not exist, or checks that the
// existing one captures -subject (it is then left as its operator made it).
// While a cluster has no JetStream leader yet it retries until deadline.
func (q *queue) ensureStream(ctx context.Context, cfg *config, deadline time.Time) error {
	want := jetstream.StreamConfig{
		Name:        cfg.streamName,
		Description: "mail accepted by examples/queue (smtpd)",
		Subjects:    []string{cfg.subject},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.maxAge,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		Discard:     jetstream.DiscardNew, // full: refuse new mail (451), never drop stored mail
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.replicas,
		Duplicates:  cfg.dupWindow,
	}
	if cfg.retention == "workqueue" {
		want.Retention = jetstream.WorkQueuePolicy
	}
	if cfg.maxBytes > 0 {
		want.MaxBytes = cfg.maxBytes
	}
	for {
		err := q.tryStream(ctx, want, cfg)
		if err == nil {
			return nil
		}
		var fatal fatalStreamError
		if errors.As(err, &fatal) || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("stream %s: %w", cfg.streamName, err)
		}
		q.log.Info("JetStream not ready yet; retrying", "stream", cfg.streamName, "err", err)
		sleep(ctx, 500*time.Millisecond)
	}
}

// fatalStreamError is a stream problem that waiting does not solve.
type fatalStreamError struct{ error }

func (q *queue) tryStream(ctx context.Context, want jetstream.StreamConfig, cfg *config) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := q.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = q.js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another receiver was first
			st, err = q.js.Stream(ctx, want.Name)
		} else if err == nil {
			q.log.Info("stream created", "stream", want.Name, "subjects", want.Subjects, "replicas", want.Replicas,
				"retention", cfg.retention, "duplicate_window", want.Duplicates)
		}
	}
	if err != nil {
		return err
	}
	have := st.CachedInfo().Config
	if !captures(have.Subjects, cfg.subject) {
		return fatalStreamError{fmt.Errorf("the existing stream's subjects %q do not capture -subject %q", have.Subjects, cfg.subject)}
	}
	if have.Duplicates < cfg.pubTimeout {
		q.log.Warn("the stream's duplicate window is shorter than -publish-timeout: a retried publish may be stored twice",
			"stream", have.Name, "duplicate_window", have.Duplicates, "publish_timeout", cfg.pubTimeout)
	}
	if have.Replicas != cfg.replicas {
		q.log.Info("the existing stream's replicas differ from -replicas; left as it is", "stream", have.Name,
			"replicas", have.Replicas, "flag", cfg.replicas)
	}
	return nil
}

// captures reports whether one of the subject patterns matches subject.
func captures(patterns []string, subject string) bool {
	for _, p := range patterns {
		if subjectMatch(p, subject) {
			return true
		}
	}
	return false
}

func subjectMatch(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || (p != "*" && p != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}

// storeExists checks, for -consume without -nats, that dir (absolute) holds a
// JetStream store: -consume reads what a receiver stored, it does not start an
// empty queue of its own and wait on it.
func storeExists(dir string) error {
	js := filepath.Join(dir, server.JetStreamStoreDir)
	if fi, err := os.Stat(js); err != nil || !fi.IsDir() {
		return fmt.Errorf("-consume: no queue in %s (no %s folder there): start the receiver first (it stores in the same -data by default), "+
			"give the -data it uses, or reach a running receiver with -nats nats://127.0.0.1:4222", dir, js)
	}
	return nil
}

// startEmbedded runs a nats-server with JetStream in this process.
func startEmbedded(cfg *config, logger *slog.Logger) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "queue-embedded",
		JetStream:  true,
		StoreDir:   cfg.dataDir,
		MaxPayload: int32(cfg.maxPayload),
		SyncAlways: cfg.syncAlways,
		NoSigs:     true,
	}
	if cfg.natsListen == "" {
		opts.DontListen = true
	} else {
		p := cfg.natsPort // split and checked by parseFlags
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = cfg.natsHost, p
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	nl := &natsLogger{l: logger.With("component", "nats-server"), fatal: make(chan string, 1)}
	ns.SetLoggerV2(nl, false, false, false)
	ns.Start()
	deadline := time.Now().Add(cfg.startupWait)
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		select {
		case msg := <-nl.fatal:
			ns.Shutdown()
			return nil, fmt.Errorf("embedded NATS server: %s (is another program using -nats-listen %s?)", msg, cfg.natsListen)
		default:
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			return nil, errors.New("embedded NATS server not ready within -startup-timeout")
		}
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS server: JetStream did not start (store %s)", cfg.dataDir)
	}
	logger.Info("embedded NATS server ready", "data", cfg.dataDir, "listen", cfg.natsListen,
		"max_payload", cfg.maxPayload, "sync_always", cfg.syncAlways)
	return ns, nil
}

// natsLogger sends the embedded server's log to slog: notices at Debug (its
// start-up banner is long), warnings and errors as such.
type natsLogger struct {
	l     *slog.Logger
	fatal chan string
}

func (n *natsLogger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Tracef(string, ...any)           {}
func (n *natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	n.l.Error(msg)
	select {
	case n.fatal <- msg:
	default:
	}
}

// redact hides the passwords of NATS URLs in logs.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
				parts[i] = u[:scheme+3] + "***" + u[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
