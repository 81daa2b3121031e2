package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/midismtp/smtpd"
)

// sink is the Handler: it accepts every message and saves or discards it, and
// accepts AUTH for the one configured credential.
type sink struct {
	smtpd.BaseHandler
	userSum [32]byte // SHA-256 of -user and -pass: equal-length values to compare
	passSum [32]byte
	store   *store    // nil: discard messages
	out     io.Writer // per-message lines; nil with -quiet
	seq     atomic.Uint64
}

// OnAuth accepts exactly -user/-pass, compared in constant time, for the user
// itself (an authorization identity naming anyone else is refused).
func (h *sink) OnAuth(_ *smtpd.Session, authzID, authcID, password string) (string, error) {
	u := sha256.Sum256([]byte(authcID))
	p := sha256.Sum256([]byte(password))
	ok := subtle.ConstantTimeCompare(u[:], h.userSum[:]) & subtle.ConstantTimeCompare(p[:], h.passSum[:])
	if ok != 1 || (authzID != "" && authzID != authcID) {
		return "", smtpd.SMTPError535
	}
	return "", nil
}

// OnMessage saves the message when -out is set and prints one line unless -quiet.
// Without either it returns at once: it is the load-test path. An error (a write
// that failed) is answered 451 and the message is not acknowledged.
func (h *sink) OnMessage(s *smtpd.Session) error {
	if h.store == nil && h.out == nil {
		return nil
	}
	id := h.newID()
	if h.store != nil {
		if err := h.store.save(id, s); err != nil {
			return err
		}
	}
	if h.out != nil {
		fmt.Fprintf(h.out, "message %s from=<%s> to=<%s> bytes=%d\n",
			id, s.Envelope.From, strings.Join(s.Envelope.To, ">,<"), s.Message.Bytesize)
	}
	return nil
}

// newID returns a unique id that sorts in arrival order: the UTC time to the
// nanosecond, then a per-process counter.
func (h *sink) newID() string {
	n := h.seq.Add(1)
	b := make([]byte, 0, 40)
	b = time.Now().UTC().AppendFormat(b, "20060102T150405.000000000")
	b = append(b, '-')
	digits := strconv.AppendUint(make([]byte, 0, 20), n, 10)
	for i := len(digits); i < 8; i++ {
		b = append(b, '0')
	}
	return string(append(b, digits...))
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
