package smtpd

import (
	"context"
	"log/slog"

	"github.com/midismtp/smtpd/internal/sessionlink"
)

func init() {
	sessionlink.New = func(ctx context.Context, logger *slog.Logger, id string) any {
		return newDetachedSession(ctx, logger, id)
	}
}

// newDetachedSession is a Session with no connection, for unit tests of hooks
// (smtptest.NewSession): Context, Logger and ID work, the rest is what the test sets.
func newDetachedSession(ctx context.Context, logger *slog.Logger, id string) *Session {
	s := &Session{ID: id, ctx: ctx, cancel: func() {}, Message: Message{CRLF: "\r\n"}}
	s.logger = logger.With(slog.String("session", id))
	return s
}
