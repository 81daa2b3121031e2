package milter

import (
	"context"
	"log/slog"
	"sync"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
)

// Wrap returns a Handler that calls the milters at every stage Postfix does and
// applies their replies and modifications to what h (the program's handler) sees.
// h may implement the optional interfaces (smtpd.MessageStreamer,
// smtpd.RecipientHandler, smtpd.DataCommandHandler, smtpd.ResetHandler); Wrap
// keeps them. With no milters, Wrap returns h itself.
func Wrap(h smtpd.Handler, c Config) smtpd.Handler {
	if len(c.Milters) == 0 {
		return h
	}
	w := &wrapper{h: h, cfg: c.withDefaults()}
	w.opts = []gomilter.Option{
		gomilter.WithReadTimeout(time.Hour), // guardConn gives each stage its own
		gomilter.WithWriteTimeout(time.Hour),
		gomilter.WithOfferedMaxData(gomilter.DataSize64K),
		gomilter.WithUsedMaxData(gomilter.DataSize64K),
		gomilter.WithoutDefaultMacros(),
	}
	for _, sm := range stageMacros {
		w.opts = append(w.opts, gomilter.WithMacroRequest(sm.stage, sm.names))
	}
	_, stream := h.(smtpd.MessageStreamer)
	_, lmtp := h.(smtpd.RecipientHandler)
	switch {
	case stream && lmtp:
		return &streamLMTPWrapper{streamWrapper{w}}
	case stream:
		return &streamWrapper{w}
	case lmtp:
		return &lmtpWrapper{w}
	}
	return w
}

// wrapper is the Handler Wrap returns for a buffering handler; the other types
// add the optional interfaces h has.
type wrapper struct {
	h        smtpd.Handler
	cfg      Config
	opts     []gomilter.Option
	sessions sync.Map // *smtpd.Session → *msession
}

// streamWrapper is Wrap's Handler for an h that is a MessageStreamer.
type streamWrapper struct{ *wrapper }

// lmtpWrapper is Wrap's Handler for an h that is a RecipientHandler.
type lmtpWrapper struct{ *wrapper }

// streamLMTPWrapper is Wrap's Handler for an h that is both.
type streamLMTPWrapper struct{ streamWrapper }

var (
	_ smtpd.DataCommandHandler = (*wrapper)(nil)
	_ smtpd.ResetHandler       = (*wrapper)(nil)
	_ smtpd.MessageStreamer    = (*streamWrapper)(nil)
	_ smtpd.RecipientHandler   = (*lmtpWrapper)(nil)
	_ smtpd.RecipientHandler   = (*streamLMTPWrapper)(nil)
	_ smtpd.MessageStreamer    = (*streamLMTPWrapper)(nil)
)

// clientOptions are go-milter's options for one connection, dialled by d.
func (w *wrapper) clientOptions(d *dialer) []gomilter.Option {
	return append([]gomilter.Option{gomilter.WithDialer(d)}, w.opts...)
}

// budget is how many bytes a milter may send in answer to one event.
func (w *wrapper) budget(st stage) int64 {
	if st == stEOM {
		return w.cfg.MaxReplyBytes
	}
	return 4 * maxPacket
}

// logger is the log of a session's milter events.
func (w *wrapper) logger(s *smtpd.Session) *slog.Logger {
	if w.cfg.Logger != nil {
		return w.cfg.Logger.With("session", s.ID)
	}
	return s.Logger()
}

// get returns the session's milters (nil when OnConnect did not open them: then
// every hook refuses what it must not pass).
func (w *wrapper) get(s *smtpd.Session) *msession {
	if v, ok := w.sessions.Load(s); ok {
		return v.(*msession)
	}
	return nil
}

// locked runs fn on the session's milters, locked. Without them (their
// OnConnect did not run through the wrapper) it returns none.
func (w *wrapper) locked(s *smtpd.Session, none error, fn func(ss *msession) error) error {
	ss := w.get(s)
	if ss == nil {
		return none
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return fn(ss)
}

// start opens the session's milters (at connect, and again after XCLIENT).
func (ss *msession) start(s *smtpd.Session) outcome {
	o := ss.open(s)
	conns := ss.conns
	ss.unkill = context.AfterFunc(s.Context(), func() { // the server is closing: no milter holds it up
		for _, c := range conns {
			if c.gc != nil {
				c.gc.kill()
			}
		}
	})
	return o
}

// stop ends the session's milters.
func (ss *msession) stop() {
	if ss.unkill != nil {
		ss.unkill()
	}
	ss.close()
}

// Quarantined reports whether a milter asked to quarantine the current message,
// with its reason; valid in h's OnMessage / OnMessageStream (and LMTP's
// OnMessageRecipient).
func Quarantined(s *smtpd.Session) (reason string, ok bool) {
	if v, found := quarantines.Load(s); found {
		return v.(string), true
	}
	return "", false
}

// quarantines holds the quarantine reason of the message each session is
// delivering, while it is delivered: Quarantined's signature has only the session.
var quarantines sync.Map // *smtpd.Session → string

// OnMessageRecipient runs h's for each recipient of a message h took; a message a
// milter discarded gets 250 for each without h.
func (w *lmtpWrapper) OnMessageRecipient(s *smtpd.Session, rcpt string) error {
	return w.messageRecipient(s, rcpt)
}

// OnMessageRecipient runs h's, as lmtpWrapper's.
func (w *streamLMTPWrapper) OnMessageRecipient(s *smtpd.Session, rcpt string) error {
	return w.messageRecipient(s, rcpt)
}

func (w *wrapper) messageRecipient(s *smtpd.Session, rcpt string) error {
	if ss := w.get(s); ss != nil {
		ss.mu.Lock()
		discarded := ss.discarded
		ss.mu.Unlock()
		if discarded {
			return nil
		}
	}
	return w.h.(smtpd.RecipientHandler).OnMessageRecipient(s, rcpt)
}
