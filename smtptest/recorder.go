package smtptest

import (
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
)

// Message is a message as a Recorder saw it in OnMessage. Its slices are copies:
// they stay as they are whatever the session does next.
type Message struct {
	ID               string   // smtpd.Message.ID: "<SessionID>-<n>"
	SessionID        string   // smtpd.Session.ID
	Helo             string   // the client's HELO/EHLO domain
	RemoteIP         string   // the client's address
	From             string   // reverse-path without angle brackets; "" for <>
	To               []string // forward-paths without angle brackets, in RCPT order
	Data             []byte   // the message exactly as delivered to OnMessage
	EncodingBody     string   // MAIL FROM BODY= ("", "7bit" or "8bitmime")
	EncodingUTF8     string   // "utf8" when MAIL FROM had SMTPUTF8
	AuthorizationID  string   // set when AUTH succeeded
	AuthenticationID string   // the login name, set when AUTH succeeded
	AuthMechanism    string   // the SASL mechanism of the AUTH, set when it succeeded
	Encrypted        bool     // the message came over TLS
	RequireTLS       bool     // MAIL FROM had REQUIRETLS (RFC 8689)
	TLSRequiredNo    bool     // the message has a "TLS-Required: No" header field (RFC 8689)
}

// Recorder is an smtpd.Handler that accepts everything BaseHandler accepts and
// records every message in OnMessage, before the client gets its 250: once a
// client has read the 250, Messages includes that message. Its zero value is
// ready to use, and it is safe for concurrent sessions.
//
// To record what a handler written for a test accepts, embed Recorder in it in
// place of smtpd.BaseHandler; a handler that overrides OnMessage calls
// h.Recorder.OnMessage(s) to record. NewServer finds an embedded Recorder and sets
// Server.Recorder to it.
type Recorder struct {
	smtpd.BaseHandler

	mu      sync.Mutex
	msgs    []Message
	changed chan struct{} // closed and replaced at each new message
}

// recorder lets NewServer find a Recorder embedded in a handler.
func (r *Recorder) recorder() *Recorder { return r }

// OnMessage records the session's message and accepts it.
func (r *Recorder) OnMessage(s *smtpd.Session) error {
	m := Message{
		ID:               s.Message.ID,
		SessionID:        s.ID,
		Helo:             s.Helo,
		RemoteIP:         s.RemoteIP,
		From:             s.Envelope.From,
		To:               append([]string(nil), s.Envelope.To...),
		Data:             append([]byte(nil), s.Message.Data...),
		EncodingBody:     s.Envelope.EncodingBody,
		EncodingUTF8:     s.Envelope.EncodingUTF8,
		AuthorizationID:  s.AuthorizationID,
		AuthenticationID: s.AuthenticationID,
		Encrypted:        s.IsEncrypted(),
		AuthMechanism:    s.AuthMechanism,
		RequireTLS:       s.Envelope.RequireTLS,
		TLSRequiredNo:    s.Envelope.TLSRequiredNo,
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
	return nil
}

// Messages returns the messages recorded so far, in the order OnMessage saw them.
func (r *Recorder) Messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs...)
}

// Reset forgets the messages recorded so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = nil
}

// Wait waits until at least n messages have been recorded and returns them all,
// as Messages does. When that takes longer than DefaultTimeout it fails the test
// (t.Fatalf). Messages sent by the test goroutine itself are recorded once their
// 250 is read; Wait is for messages sent by other goroutines or processes.
func (r *Recorder) Wait(t testing.TB, n int) []Message {
	t.Helper()
	timeout := time.NewTimer(DefaultTimeout)
	defer timeout.Stop()
	for {
		r.mu.Lock()
		if len(r.msgs) >= n {
			msgs := append([]Message(nil), r.msgs...)
			r.mu.Unlock()
			return msgs
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed, got := r.changed, len(r.msgs)
		r.mu.Unlock()
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("smtptest: Recorder.Wait: %d messages after %v, want %d", got, DefaultTimeout, n)
			return nil
		}
	}
}
