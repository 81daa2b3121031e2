package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The headers of a stored message: its SMTP envelope and where it came from. The
// message itself, exactly as received (dot-unstuffed), is the payload.
const (
	HeaderFrom       = "X-Smtp-From"        // reverse-path without <>; empty for the null sender
	HeaderTo         = "X-Smtp-To"          // one value per recipient, in RCPT order
	HeaderRemoteIP   = "X-Smtp-Remote-Ip"   // the client (from the PROXY header behind a load balancer)
	HeaderRemotePort = "X-Smtp-Remote-Port" // the client's port
	HeaderProxyIP    = "X-Smtp-Proxy-Ip"    // the load balancer that sent the PROXY header; absent when direct
	HeaderHelo       = "X-Smtp-Helo"        // the HELO/EHLO domain
	HeaderSession    = "X-Smtp-Session"     // smtpd's Session.ID, the "session" attribute of the receiver's log
	HeaderReceivedAt = "X-Smtp-Received-At" // RFC 3339 UTC, when the final dot arrived
	HeaderBody       = "X-Smtp-Body"        // MAIL FROM BODY= (7bit, 8bitmime, binarymime) when given
	HeaderSMTPUTF8   = "X-Smtp-Smtputf8"    // "yes" when MAIL FROM had SMTPUTF8
)

// receivedAtLayout is HeaderReceivedAt's RFC 3339 layout, fixed width (always
// nanoseconds) so that the value stamped once the data has ended is as long as the
// one headers() counted in the headers' size.
const receivedAtLayout = "2006-01-02T15:04:05.000000000Z"

// headerRoom is what -max-message leaves of max_payload for the headers above
// (with -max-recipients 100 of the longest addresses they stay under 32 KiB).
const headerRoom = 64 << 10

// The replies of the receiver.
var (
	errQueueDown = &smtpd.SMTPError{Code: 451, EnhancedCode: "4.3.0", Message: "Queue unavailable, try again later"}
	errNotQueued = &smtpd.SMTPError{Code: 451, EnhancedCode: "4.3.0", Message: "Message not queued, try again later"}
	errTooBig    = &smtpd.SMTPError{Code: 552, EnhancedCode: "5.3.4", Message: "Message too big for the queue"} // within MaxMessageSize, over what max_payload leaves
	errNoMemory  = &smtpd.SMTPError{Code: 452, EnhancedCode: "4.3.1", Message: "Insufficient system storage, try again later"}
)

// receiver is the smtpd Handler: each message is streamed in, published to
// JetStream, and acknowledged to the client only after JetStream acknowledged it.
type receiver struct {
	smtpd.BaseHandler
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  string
	subject string
	timeout time.Duration
	max     int    // -max-message: what the SMTP server lets through
	nonce   string // random per process: part of every Nats-Msg-Id
	mem     *budget
}

func newReceiver(q *queue, cfg *config, maxMessage int) *receiver {
	var b [4]byte
	rand.Read(b[:])
	return &receiver{
		nc: q.nc, js: q.js, stream: cfg.streamName, subject: cfg.subject, timeout: cfg.pubTimeout,
		max: maxMessage, nonce: hex.EncodeToString(b[:]), mem: newBudget(cfg.maxBuffered),
	}
}

// receive runs the SMTP server until ctx is done, then shuts it down gracefully.
func receive(ctx context.Context, cfg *config, q *queue, logger *slog.Logger, out io.Writer) error {
	maxPayload := int(q.nc.MaxPayload())
	limit := maxPayload - headerRoom
	if limit < maxPayload/2 {
		limit = maxPayload / 2
	}
	switch {
	case cfg.maxMessage > limit:
		return fmt.Errorf("-max-message %d is over what the NATS server's max_payload %d allows (%d); raise max_payload (embedded: -max-payload)",
			cfg.maxMessage, maxPayload, limit)
	case cfg.maxMessage > 0:
		limit = cfg.maxMessage
	}
	h := newReceiver(q, cfg, limit)
	srv := &smtpd.Server{
		Handler:              h,
		Hosts:                cfg.hosts,
		Ports:                cfg.ports,
		ProxyTrustedNetworks: cfg.proxyTrusted,
		MaxProcessings:       cfg.maxProcessings,
		MaxMessageSize:       limit, // SIZE=n over it: 552 at MAIL, before any data
		MaxRecipients:        cfg.maxRecipients,
		IOCmdTimeout:         cfg.cmdTimeout,
		Pipelining:           true,
		Internationalization: true,
		EnhancedStatusCodes:  true,
		Chunking:             true,
		Logger:               logger,
	}
	if err := srv.Start(); err != nil {
		return err
	}
	logger.Info("receiving into JetStream", "stream", cfg.streamName, "subject", cfg.subject,
		"max_message", limit, "max_payload", maxPayload, "publish_timeout", cfg.pubTimeout)
	for _, a := range srv.Addrs() {
		fmt.Fprintf(out, "listening on %s\n", a)
	}

	<-ctx.Done()
	logger.Info("shutting down", "grace", cfg.grace)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("sessions still busy at the end of -grace were closed; their messages were not acknowledged", "err", err)
	}
	return nil
}

// OnMailFrom refuses a transaction at once while NATS is not connected: the
// message could not be stored, so the client need not send it.
func (h *receiver) OnMailFrom(s *smtpd.Session, _ string) (string, error) {
	if st := h.nc.Status(); st != nats.CONNECTED {
		s.Logger().Warn("NATS not connected; MAIL answered 451", "nats_status", st.String())
		return "", errQueueDown
	}
	return "", nil
}

// OnMessageStream reads the message into memory (a JetStream message is one
// payload), publishes it with its envelope in headers and returns nil — 250 — only
// once the PubAck arrived.
func (h *receiver) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	id := h.msgID(s)
	log := s.Logger().With("msg_id", id)
	hdr := h.headers(s, id)
	maxPayload := int(h.nc.MaxPayload())
	room := maxPayload - headerSize(hdr)

	body, err := h.readBody(r, min(room, h.max), s.Envelope.Size)
	defer h.mem.release(cap(body)) // the one release of what readBody took, error or not
	switch {
	case errors.Is(err, smtpd.SMTPError552):
		// The library stopped at MaxMessageSize (-max-message): its reply, "552
		// 5.3.4 Requested mail action aborted: exceeded storage allocation", wins
		// over whatever this returns. It reads and discards the rest of the data.
		log.Warn("message over -max-message; refused with 552", "max_message", h.max,
			"max_payload", maxPayload, "hint", "raise max_payload in the NATS servers' configuration (embedded: -max-payload), up to 64 MiB")
		return err
	case errors.Is(err, errTooBig):
		// Within MaxMessageSize, but over what max_payload leaves after this
		// message's headers (many long recipients): the queue's own limit, its
		// own reply. The library reads and discards the rest of the data.
		log.Warn("message over what max_payload leaves after its headers; refused with 552", "max_message", h.max,
			"max_payload", maxPayload, "header_bytes", maxPayload-room,
			"hint", "raise max_payload in the NATS servers' configuration (embedded: -max-payload), up to 64 MiB")
		return errTooBig
	case errors.Is(err, errNoMemory):
		log.Warn("messages in flight hold -max-buffered bytes; refused with 452", "max_buffered", h.mem.max)
		return err
	case err != nil:
		return err // the client left, or bare line ends under CRLFStrict: the library's reply
	}
	// The data has ended (the final dot, or BDAT LAST): that is the time received.
	// Same width as the value headers() set, so room above stays exact.
	hdr.Set(HeaderReceivedAt, time.Now().UTC().Format(receivedAtLayout))

	msg := &nats.Msg{Subject: h.subject, Header: hdr, Data: body}
	start := time.Now()
	ack, attempts, err := h.publish(s.Context(), msg)
	if errors.Is(err, nats.ErrMaxPayload) {
		log.Warn("message over the NATS server's max_payload; refused with 552", "bytes", len(body),
			"max_payload", maxPayload, "hint", "raise max_payload in the NATS servers' configuration (embedded: -max-payload)")
		return errTooBig
	}
	if err != nil {
		log.Warn("message not stored by JetStream; answered 451", "err", err, "attempts", attempts,
			"elapsed", time.Since(start).Round(time.Millisecond), "bytes", len(body))
		return errNotQueued
	}
	log.Debug("message stored", "stream", ack.Stream, "seq", ack.Sequence, "duplicate", ack.Duplicate,
		"attempts", attempts, "bytes", len(body), "elapsed", time.Since(start).Round(time.Microsecond))
	return nil
}

// publish publishes msg and waits for its PubAck, retrying until -publish-timeout:
// each attempt may take a third of it. Every attempt carries the same Nats-Msg-Id,
// so an attempt whose acknowledgement was lost (a leader change, a dead NATS
// node) and the retry that follows are stored once.
func (h *receiver) publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, int, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	per := max(h.timeout/3, 100*time.Millisecond)
	var err error
	for attempt := 1; ; attempt++ {
		actx, acancel := context.WithTimeout(ctx, per)
		var ack *jetstream.PubAck
		ack, err = h.js.PublishMsg(actx, msg, jetstream.WithRetryAttempts(0))
		acancel()
		switch {
		case err == nil && ack.Duplicate && attempt == 1:
			// A fresh ID that JetStream knows: another message had it (it cannot
			// happen with the random per-process nonce, but a 250 here would lose
			// this message). 451: the client's retry is a new transaction, a new ID.
			return nil, attempt, fmt.Errorf("Nats-Msg-Id %s already in the stream (seq %d)", msg.Header.Get(jetstream.MsgIDHeader), ack.Sequence)
		case err == nil:
			return ack, attempt, nil
		case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrBadHeaderMsg):
			return nil, attempt, err
		}
		if ctx.Err() != nil {
			return nil, attempt, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		}
		sleep(ctx, 50*time.Millisecond)
	}
}

// msgID returns the message's Nats-Msg-Id: "<nonce>-<Message.ID>", smtpd's
// Message.ID being "<Session.ID>-<n>". Session.ID is unique per connection
// (smtpd's random per-server prefix and a counter), n counts the session's
// transactions, and the nonce, random per process, keeps two receivers apart even
// if their prefixes met. Message.ID is set at MAIL FROM and changes only after
// this hook returned, so the stream hook may read it. A client that retries after
// a lost 250 sends a new transaction and gets a new ID: that copy is stored again
// (a duplicate the client caused, see README).
func (h *receiver) msgID(s *smtpd.Session) string {
	return h.nonce + "-" + s.Message.ID
}

// headers returns the message's NATS headers: the envelope and the session facts,
// the de-duplication ID, and the stream expected to store it.
func (h *receiver) headers(s *smtpd.Session, id string) nats.Header {
	hdr := nats.Header{}
	hdr.Set(jetstream.MsgIDHeader, id)
	hdr.Set(jetstream.ExpectedStreamHeader, h.stream)
	hdr.Set(HeaderFrom, clean(s.Envelope.From))
	for _, to := range s.Envelope.To {
		hdr.Add(HeaderTo, clean(to))
	}
	hdr.Set(HeaderRemoteIP, clean(s.RemoteIP))
	hdr.Set(HeaderRemotePort, strconv.Itoa(s.RemotePort))
	if s.ProxyIP != "" {
		hdr.Set(HeaderProxyIP, clean(s.ProxyIP))
	}
	hdr.Set(HeaderHelo, clean(s.Helo))
	hdr.Set(HeaderSession, clean(s.ID))
	// A placeholder of the final value's width, for headerSize: OnMessageStream
	// sets the time once the data has ended.
	hdr.Set(HeaderReceivedAt, time.Now().UTC().Format(receivedAtLayout))
	if s.Envelope.EncodingBody != "" {
		hdr.Set(HeaderBody, clean(s.Envelope.EncodingBody))
	}
	if s.Envelope.EncodingUTF8 != "" {
		hdr.Set(HeaderSMTPUTF8, "yes")
	}
	return hdr
}

// clean makes v a safe header value: control characters (CR and LF above all,
// which would end the header) are removed. The library has already refused them
// in addresses and HELO; this is the second line.
func clean(v string) string {
	if strings.IndexFunc(v, isCtl) < 0 {
		return v
	}
	return strings.Map(func(r rune) rune {
		if isCtl(r) {
			return -1
		}
		return r
	}, v)
}

func isCtl(r rune) bool { return r < 0x20 || r == 0x7f }

// headerSize is the size of hdr as NATS sends it ("NATS/1.0\r\n", "Key: value\r\n"
// lines, "\r\n"): it counts against max_payload with the message.
func headerSize(hdr nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range hdr {
		for _, v := range vs {
			n += len(k) + len(textproto.TrimString(v)) + len(": \r\n")
		}
	}
	return n
}

// readChunk is how much the buffer grows by at least.
const readChunk = 32 << 10

// readBody reads the message into memory: at most limit bytes (a longer one:
// errTooBig), holding its buffer against the -max-buffered budget (over it:
// errNoMemory). A SIZE= declared by the client sizes the first buffer. The buffer
// is returned on an error too: the caller releases its cap from the budget in
// every case. On an error the rest of the message is left unread: the library
// reads and discards it.
func (h *receiver) readBody(r io.Reader, limit, hint int) ([]byte, error) {
	if limit < 0 { // the headers alone are over max_payload
		return nil, errTooBig
	}
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			size := max(2*cap(buf), readChunk)
			if cap(buf) == 0 && hint > 0 {
				size = hint + 1 // +1: the EOF needs room to be seen without growing
			}
			size = min(size, limit+1) // limit+1 bytes read: over the limit
			if !h.mem.take(size - cap(buf)) {
				return buf, errNoMemory
			}
			nb := make([]byte, len(buf), size)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			return buf, errTooBig
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// budget bounds the bytes all messages in flight hold (-max-buffered).
type budget struct {
	max  int64 // < 0: none
	used atomic.Int64
}

func newBudget(max int) *budget { return &budget{max: int64(max)} }

func (b *budget) take(n int) bool {
	if b.max < 0 {
		return true
	}
	if b.used.Add(int64(n)) > b.max {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

func (b *budget) release(n int) {
	if b.max >= 0 {
		b.used.Add(-int64(n))
	}
}
