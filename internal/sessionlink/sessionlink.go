// Package sessionlink lets package smtptest build a *smtpd.Session for unit tests
// without a public constructor in package smtpd: smtpd sets New at init, smtptest
// calls it. Nothing else may use it.
package sessionlink

import (
	"context"
	"log/slog"
)

// New returns a *smtpd.Session (as any) whose Context, Logger and ID are set; it is
// set by package smtpd.
var New func(ctx context.Context, logger *slog.Logger, id string) any
