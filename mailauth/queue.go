package mailauth

import (
	"context"
	"io"
	"sync"
)

// This file lets the message flow on while go-msgauth waits for a DKIM key: its
// Verify reads the header, looks the keys up, and only then reads the body, so a
// pipe straight to it would stop the receiver's reading (and the SMTP transfer) for
// as long as DNS takes. A queuedWriter holds up to queueBytes of the body meanwhile.

const (
	queueChunk  = 32 << 10 // also the most go-msgauth is given at once: its canonicalizers allocate twice a write
	queueChunks = 8
	queueBytes  = queueChunk * (queueChunks + 1) // the most a message holds waiting: 288 KiB
)

var queueChunkPool = sync.Pool{New: func() any { b := make([]byte, 0, queueChunk); return &b }}

// queuedWriter hands what is written to w from a goroutine of its own. Write copies
// and returns at once while fewer than queueChunks chunks wait; it blocks only when
// w is that far behind. Once w fails, the rest is dropped; once ctx ends (the
// session is gone), everything is dropped and nothing waits.
type queuedWriter struct {
	ctx   context.Context
	w     io.Writer
	cur   *[]byte
	queue chan *[]byte
	done  chan struct{}
}

func newQueuedWriter(ctx context.Context, w io.Writer) *queuedWriter {
	q := &queuedWriter{ctx: ctx, w: w, queue: make(chan *[]byte, queueChunks), done: make(chan struct{})}
	go q.run()
	return q
}

func (q *queuedWriter) run() {
	defer close(q.done)
	failed := false
	for {
		select {
		case b, ok := <-q.queue:
			if !ok {
				return
			}
			if !failed {
				_, err := q.w.Write(*b)
				failed = err != nil
			}
			putChunk(b)
		case <-q.ctx.Done():
			return
		}
	}
}

func putChunk(b *[]byte) {
	*b = (*b)[:0]
	queueChunkPool.Put(b)
}

// send queues the current chunk, or drops it once ctx has ended.
func (q *queuedWriter) send() {
	select {
	case q.queue <- q.cur:
	case <-q.ctx.Done():
		putChunk(q.cur)
	}
	q.cur = nil
}

// Write queues a copy of p; it never fails.
func (q *queuedWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if q.cur == nil {
			q.cur = queueChunkPool.Get().(*[]byte)
		}
		k := copy((*q.cur)[len(*q.cur):cap(*q.cur)], p)
		*q.cur, p = (*q.cur)[:len(*q.cur)+k], p[k:]
		if len(*q.cur) == cap(*q.cur) {
			q.send()
		}
	}
	return n, nil
}

// Close hands on what is left and waits until w has taken everything (or failed).
func (q *queuedWriter) Close() error {
	if q.cur != nil {
		q.send()
	}
	close(q.queue)
	<-q.done
	return nil
}
