package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// record is the .json written next to each .eml with -consume -out.
type record struct {
	ID         string   `json:"id"` // the Nats-Msg-Id
	StreamSeq  uint64   `json:"stream_seq"`
	From       string   `json:"from"`
	To         []string `json:"to"`
	RemoteIP   string   `json:"remote_ip"`
	RemotePort int      `json:"remote_port"`
	ProxyIP    string   `json:"proxy_ip,omitempty"`
	Helo       string   `json:"helo"`
	Session    string   `json:"session"`
	ReceivedAt string   `json:"received_at"`
	Bytes      int      `json:"bytes"`
}

// consume reads the stream with a durable pull consumer until ctx is done (with
// -drain: until nothing is pending): each message is printed (one line) or
// written to -out, then acknowledged — with a confirmation from the server, so a
// message is never acknowledged before it was handled. A message that could not
// be written is redelivered later.
func consume(ctx context.Context, cfg *config, q *queue, logger *slog.Logger, out io.Writer) error {
	if cfg.out != "" {
		abs, err := filepath.Abs(cfg.out)
		if err != nil {
			return err
		}
		cfg.out = abs
		if err := os.MkdirAll(cfg.out, 0o750); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := q.js.CreateOrUpdateConsumer(cctx, cfg.streamName, jetstream.ConsumerConfig{
		Durable:       cfg.durable,
		Description:   "examples/queue -consume",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1000,
	})
	if err != nil {
		return fmt.Errorf("consumer %s on stream %s: %w", cfg.durable, cfg.streamName, err)
	}
	info, err := cons.Info(cctx)
	if err != nil {
		return fmt.Errorf("consumer %s on stream %s: %w", cfg.durable, cfg.streamName, err)
	}
	logger.Info("consuming", "stream", cfg.streamName, "durable", cfg.durable, "pending", info.NumPending,
		"unacknowledged", info.NumAckPending, "from", source(cfg), "out", cfg.out, "drain", cfg.drain)
	if cfg.drain {
		return drain(ctx, cfg, cons, logger, out)
	}
	return follow(ctx, cfg, cons, logger, out)
}

// source is where -consume reads: the NATS URLs or the embedded server's -data.
func source(cfg *config) string {
	if cfg.embedded() {
		return cfg.dataDir
	}
	return redact(cfg.natsURL)
}

// follow handles messages as they come until ctx is done.
func follow(ctx context.Context, cfg *config, cons jetstream.Consumer, logger *slog.Logger, out io.Writer) error {
	iter, err := cons.Messages(jetstream.PullMaxMessages(100))
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, iter.Stop)
	defer stop()
	defer iter.Stop()
	for {
		m, err := iter.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			logger.Warn("consumer", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		if err := handle(cfg, m, out); err != nil {
			logger.Error("message not handled; it will be redelivered", "err", err)
			m.NakWithDelay(5 * time.Second)
			continue
		}
		ack(ctx, m, logger)
	}
}

// drain handles every message pending for the consumer and returns once none is
// left: neither new to it nor delivered and unacknowledged (such a message, of a
// consumer that died, comes again after its AckWait). A message it cannot handle
// ends it with an error; that message and the rest stay in the stream.
func drain(ctx context.Context, cfg *config, cons jetstream.Consumer, logger *slog.Logger, out io.Writer) error {
	handled := 0
	for ctx.Err() == nil {
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		info, err := cons.Info(ictx)
		cancel()
		if err != nil {
			return fmt.Errorf("consumer %s: %w", cfg.durable, err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			logger.Info("drained: nothing left to read", "handled", handled)
			return nil
		}
		// As many as are pending (at most 100), so that the fetch returns as soon
		// as they came; one when only unacknowledged ones are left.
		want := int(min(max(info.NumPending, 1), 100))
		batch, err := cons.Fetch(want, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		var failed error
		for m := range batch.Messages() {
			if failed != nil {
				m.Nak() // unread: at once to the next consumer
				continue
			}
			if err := handle(cfg, m, out); err != nil {
				m.Nak()
				failed = fmt.Errorf("message not handled (it stays in the stream): %w", err)
				continue
			}
			ack(ctx, m, logger)
			handled++
		}
		if failed != nil {
			return failed
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			logger.Warn("consumer", "err", err)
		}
	}
	return nil
}

// ack acknowledges m and waits for the server's confirmation.
func ack(ctx context.Context, m jetstream.Msg, logger *slog.Logger) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := m.DoubleAck(actx); err != nil && ctx.Err() == nil {
		logger.Warn("acknowledgement not confirmed; the message may come again", "err", err)
	}
}

// handle prints m or writes it to -out.
func handle(cfg *config, m jetstream.Msg, out io.Writer) error {
	h := m.Headers()
	rec := record{
		ID:         h.Get(jetstream.MsgIDHeader),
		From:       h.Get(HeaderFrom),
		To:         h.Values(HeaderTo),
		RemoteIP:   h.Get(HeaderRemoteIP),
		ProxyIP:    h.Get(HeaderProxyIP),
		Helo:       h.Get(HeaderHelo),
		Session:    h.Get(HeaderSession),
		ReceivedAt: h.Get(HeaderReceivedAt),
		Bytes:      len(m.Data()),
	}
	rec.RemotePort, _ = strconv.Atoi(h.Get(HeaderRemotePort))
	if meta, err := m.Metadata(); err == nil {
		rec.StreamSeq = meta.Sequence.Stream
	}
	if cfg.out == "" {
		_, err := fmt.Fprintf(out, "message %d %s from=<%s> to=<%s> remote=%s port=%d proxy=%s bytes=%d\n",
			rec.StreamSeq, rec.ID, rec.From, strings.Join(rec.To, ">,<"), rec.RemoteIP, rec.RemotePort, rec.ProxyIP, rec.Bytes)
		return err
	}
	name := fileName(rec)
	if err := writeFile(filepath.Join(cfg.out, name+".eml"), m.Data()); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(cfg.out, name+".json"), append(js, '\n'))
}

// fileName is the message's Nats-Msg-Id when it is a safe file name, else its
// stream sequence: a redelivered message overwrites its own files.
func fileName(rec record) string {
	ok := rec.ID != "" && len(rec.ID) <= 200 && strings.IndexFunc(rec.ID, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) < 0
	if ok {
		return rec.ID
	}
	return fmt.Sprintf("seq-%012d", rec.StreamSeq)
}

// writeFile writes data to path atomically: a temporary file, synced, renamed.
func writeFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
