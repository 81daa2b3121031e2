package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/mailauth"
	"github.com/midismtp/smtpd/milter"
)

// newHandler builds mx's handler chain (see the package documentation):
//
//	authStage → milter.Wrap → mailbox
//
// authStage sees the message first, as it arrives; the milters see it without
// the forged Authentication-Results fields; the mailbox gets it as the milters
// changed it, with the verdict on the message as received.
func newHandler(cfg *config, v *mailauth.Verifier, st *store, logger *slog.Logger) smtpd.Handler {
	box := &mailbox{name: cfg.authServID, store: st, enforce: cfg.dmarcEnforce}
	next := milter.Wrap(box, milter.Config{
		Milters:       cfg.milters,
		DefaultAction: cfg.milterAction,
		Hostname:      cfg.authServID, // macro j: Postfix's $myhostname
		DaemonName:    cfg.authServID, // {daemon_name}: Postfix's default is $myhostname too
		Logger:        logger,
	})
	return &authStage{Handler: next, v: v}
}

// authStage is the outermost Handler of mx. Its OnMessageStream reads the
// message from the server through a mailauth.Reader, so that a Check sees every
// byte as received, and passes on what that Reader returns (the message
// without the Authentication-Results fields that claim our authserv-id) to the
// next Handler: milter.Wrap's, whose milters therefore get the stripped
// message, and whose changes (fields a milter adds included) come after the
// stripping. The Reader is the session's UserData while the message is handed
// on: the mailbox takes the verdict from it.
//
// Every other hook is the next Handler's: Handler's methods by embedding, and the
// optional interfaces milter.Wrap's Handler has (DataCommandHandler,
// ResetHandler) by the methods below.
type authStage struct {
	smtpd.Handler // the next Handler: milter.Wrap's (the mailbox itself without milters)
	v             *mailauth.Verifier
}

var (
	_ smtpd.MessageStreamer    = (*authStage)(nil)
	_ smtpd.DataCommandHandler = (*authStage)(nil)
	_ smtpd.ResetHandler       = (*authStage)(nil)
)

// OnMessageStream checks the message while the next Handler reads it. The
// verdict is ready when the Reader returned io.EOF: before the mailbox writes
// anything when a milter took the content (milter.Wrap spools the message and
// runs the milters' end of message first), at the mailbox's own io.EOF
// otherwise. Either way before this hook returns, so before the reply.
func (a *authStage) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	ctx, cancel := context.WithCancel(s.Context())
	defer cancel() // a message refused mid-way (by a milter, say) releases its Check here
	rx := a.v.NewReader(ctx, mailauth.ConnectionOf(s), r)
	s.UserData = rx
	defer func() { s.UserData = nil }()
	err := a.Handler.(smtpd.MessageStreamer).OnMessageStream(s, rx)
	if err != nil {
		s.Logger().Info("message not stored", "id", s.Message.ID, "err", err)
	}
	return err
}

// OnDataCommand runs the next Handler's (the milters' DATA stage).
func (a *authStage) OnDataCommand(s *smtpd.Session) error {
	if d, ok := a.Handler.(smtpd.DataCommandHandler); ok {
		return d.OnDataCommand(s)
	}
	return nil
}

// OnReset runs the next Handler's (the milters' abort).
func (a *authStage) OnReset(s *smtpd.Session) {
	if r, ok := a.Handler.(smtpd.ResetHandler); ok {
		r.OnReset(s)
	}
}

// verdictOf returns the verdict on the message s is delivering, as received;
// nil before authStage's Reader reached the message's end.
func verdictOf(s *smtpd.Session) *mailauth.Verdict {
	rx, _ := s.UserData.(*mailauth.Reader)
	if rx == nil {
		return nil
	}
	return rx.Verdict()
}
