package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/midismtp/smtpd"
)

// sink is the Handler: it accepts every message and saves or discards it, and
// accepts AUTH for the one configured credential.
type sink struct {
	smtpd.BaseHandler
	user     string   // -user, for EXTERNAL's certificate subject
	userSum  [32]byte // SHA-256 of -user, -pass and -token: equal-length values to compare
	passSum  [32]byte
	tokenSum [32]byte
	store    *store    // nil: discard messages
	out      io.Writer // per-message lines; nil with -quiet
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

// OnAuthToken accepts exactly -token for -user (OAUTHBEARER, XOAUTH2), compared
// in constant time.
func (h *sink) OnAuthToken(_ *smtpd.Session, t smtpd.AuthToken) (string, error) {
	u := sha256.Sum256([]byte(t.User))
	k := sha256.Sum256([]byte(t.Token))
	if t.Token == "" || subtle.ConstantTimeCompare(u[:], h.userSum[:])&subtle.ConstantTimeCompare(k[:], h.tokenSum[:]) != 1 {
		return "", smtpd.SMTPError535
	}
	return "", nil
}

// OnAuthExternal accepts a client certificate that TLS verified (-client-auth
// verify-if-given or require-and-verify, against -client-ca) whose subject's common
// name is -user, for -user itself.
func (h *sink) OnAuthExternal(s *smtpd.Session, authzID string) (string, error) {
	st, ok := s.TLSState()
	if !ok || len(st.VerifiedChains) == 0 || h.user == "" ||
		st.PeerCertificates[0].Subject.CommonName != h.user || authzID != "" && authzID != h.user {
		return "", smtpd.SMTPError535
	}
	return h.user, nil
}

// OnMessage saves the message when -out is set and prints one line unless -quiet.
// Without either it returns at once: it is the load-test path. An error (a write
// that failed) is answered 451 and the message is not acknowledged.
//
// The files and the line carry the message's smtpd Message.ID, "<Session.ID>-<n>"
// (n counts the session's transactions from 1). Session.ID is unique per
// connection and starts with a random prefix per run, so ids do not repeat
// across restarts either (store.save refuses one that is taken, with 451).
func (h *sink) OnMessage(s *smtpd.Session) error {
	if h.store == nil && h.out == nil {
		return nil
	}
	id := s.Message.ID
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

// streamSink is the sink with -stream: it implements smtpd.MessageStreamer, so each
// message goes straight from the connection to its .eml, never whole in memory.
type streamSink struct {
	*sink
}

// OnMessageStream writes the message to its .eml as it arrives (with -out), or
// reads and discards it. A read error (the message refused mid-way: too big, bare
// line ends under -crlf strict, the client gone) leaves no file behind.
func (h streamSink) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	if h.store == nil && h.out == nil {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	id := s.Message.ID // set at MAIL FROM; the library changes it only after this hook returned
	if h.store != nil {
		if err := h.store.saveStream(id, s, r); err != nil {
			return err
		}
	} else if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	if h.out != nil {
		fmt.Fprintf(h.out, "message %s from=<%s> to=<%s> streamed\n",
			id, s.Envelope.From, strings.Join(s.Envelope.To, ">,<"))
	}
	return nil
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
