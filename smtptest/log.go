package smtptest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
)

// testLog sends a logger's records to a test's output: those at or above a level
// at once, and every record into a ring of the last few, which dump writes out.
// After stop nothing is written: the test may have completed, and writing to its
// output then panics.
type testLog struct {
	now  slog.Level
	mu   sync.Mutex
	out  io.Writer // t.Output()
	done bool
	ring [][]byte // the last len(ring) records, oldest at next once full
	next int
	seen int // records put in the ring, ever
}

// newTestLog returns a testLog writing to t; keep is the ring's size (0: none).
func newTestLog(t testing.TB, now slog.Level, keep int) *testLog {
	return &testLog{now: now, out: t.Output(), ring: make([][]byte, 0, keep)}
}

// logger returns a logger, enabled at every level, that writes to l.
func (l *testLog) logger() *slog.Logger {
	opts := &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{} // the test output has its own order; times are noise
			}
			return a
		},
	}
	return slog.New(&levelSplit{
		log:   l,
		now:   slog.NewTextHandler(writerFunc(l.writeNow), opts),
		later: slog.NewTextHandler(writerFunc(l.keep), opts),
	})
}

// writeNow writes one record to the test output.
func (l *testLog) writeNow(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.out.Write(p)
	}
	return len(p), nil
}

// keep puts one record into the ring.
func (l *testLog) keep(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done || cap(l.ring) == 0 {
		return len(p), nil
	}
	rec := append([]byte(nil), p...)
	if len(l.ring) < cap(l.ring) {
		l.ring = append(l.ring, rec)
	} else {
		l.ring[l.next] = rec
		l.next = (l.next + 1) % len(l.ring)
	}
	l.seen++
	return len(p), nil
}

// dump writes the ring's records, oldest first, to the test output.
func (l *testLog) dump() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done || len(l.ring) == 0 {
		return
	}
	fmt.Fprintf(l.out, "smtptest: the server's log (%d of %d records):\n", len(l.ring), l.seen)
	for i := range l.ring {
		l.out.Write(l.ring[(l.next+i)%len(l.ring)])
	}
}

// stop makes every later record vanish.
func (l *testLog) stop() {
	l.mu.Lock()
	l.done = true
	l.mu.Unlock()
}

// writerFunc is a function as an io.Writer; a slog.TextHandler writes each
// record with one call.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// levelSplit hands every record to later, and those at or above log.now also to now.
type levelSplit struct {
	log        *testLog
	now, later slog.Handler
}

func (h *levelSplit) Enabled(context.Context, slog.Level) bool { return true }

func (h *levelSplit) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= h.log.now {
		h.now.Handle(ctx, r)
	}
	return h.later.Handle(ctx, r)
}

func (h *levelSplit) WithAttrs(as []slog.Attr) slog.Handler {
	return &levelSplit{log: h.log, now: h.now.WithAttrs(as), later: h.later.WithAttrs(as)}
}

func (h *levelSplit) WithGroup(name string) slog.Handler {
	return &levelSplit{log: h.log, now: h.now.WithGroup(name), later: h.later.WithGroup(name)}
}
