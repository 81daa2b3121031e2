package smtpd

import (
	"crypto/tls"
	"encoding/base64"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The one credential the AUTH tests accept. The base64 of the password, and of the
// PLAIN response carrying it, contain both '+' and '/' (checked in
// TestAuthBase64Alphabet).
const (
	authUser  = "alice"
	authPass  = "s3cr?t>~~~??"
	authWrong = "wr0ng-Pa55w0rd"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// plainResp is the base64 PLAIN response (RFC 4616) for the three identities.
func plainResp(authz, authc, pass string) string {
	return b64(authz + "\x00" + authc + "\x00" + pass)
}

// secCall is one OnAuth call.
type secCall struct {
	Authz, Authc, Password string
}

// secHelo is one OnHelo call.
type secHelo struct {
	Helo      string
	Encrypted bool
}

// secSnapshot is the security state of a session as OnMessage saw it.
type secSnapshot struct {
	AuthorizationID  string
	AuthenticationID string
	AuthenticatedAt  time.Time
	EncryptedAt      time.Time
	Authenticated    bool
	Encrypted        bool
	TLSOK            bool
	TLS              tls.ConnectionState
	Helo             string
	To               []string
}

// secHandler records messages (as recorder) and every security-relevant hook call.
// OnAuth accepts user/pass only and answers SMTPError535 otherwise; on success it
// returns ret.
type secHandler struct {
	*recorder
	user, pass string
	ret        string
	// onHelo, when set, runs inside OnHelo (after recording).
	onHelo func(s *Session)

	mu          sync.Mutex
	calls       []secCall
	helos       []secHelo
	mails       []string
	snaps       []secSnapshot
	disconnects []int // s.Exceptions at OnDisconnect
}

func newSecHandler() *secHandler {
	return &secHandler{recorder: newRecorder(), user: authUser, pass: authPass}
}

func (h *secHandler) OnHelo(s *Session, helo string) error {
	h.mu.Lock()
	h.helos = append(h.helos, secHelo{Helo: helo, Encrypted: s.IsEncrypted()})
	h.mu.Unlock()
	if h.onHelo != nil {
		h.onHelo(s)
	}
	return nil
}

func (h *secHandler) OnAuth(s *Session, authz, authc, pass string) (string, error) {
	h.mu.Lock()
	h.calls = append(h.calls, secCall{Authz: authz, Authc: authc, Password: pass})
	h.mu.Unlock()
	if authc != h.user || pass != h.pass {
		return "", SMTPError535
	}
	return h.ret, nil
}

func (h *secHandler) OnMailFrom(s *Session, from string) (string, error) {
	h.mu.Lock()
	h.mails = append(h.mails, from)
	h.mu.Unlock()
	return "", nil
}

func (h *secHandler) OnMessage(s *Session) error {
	st, ok := s.TLSState()
	snap := secSnapshot{
		AuthorizationID: s.AuthorizationID, AuthenticationID: s.AuthenticationID,
		AuthenticatedAt: s.AuthenticatedAt, EncryptedAt: s.EncryptedAt,
		Authenticated: s.IsAuthenticated(), Encrypted: s.IsEncrypted(),
		TLSOK: ok, TLS: st, Helo: s.Helo, To: append([]string(nil), s.Envelope.To...),
	}
	h.mu.Lock()
	h.snaps = append(h.snaps, snap)
	h.mu.Unlock()
	return h.recorder.OnMessage(s)
}

func (h *secHandler) OnDisconnect(s *Session) {
	h.mu.Lock()
	h.disconnects = append(h.disconnects, s.Exceptions)
	h.mu.Unlock()
}

func (h *secHandler) authCalls() []secCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]secCall(nil), h.calls...)
}

func (h *secHandler) heloCalls() []secHelo {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]secHelo(nil), h.helos...)
}

func (h *secHandler) mailCalls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.mails...)
}

// snapshots waits for n messages and returns their security snapshots.
func (h *secHandler) snapshots(t *testing.T, n int) []secSnapshot {
	t.Helper()
	h.waitMessages(t, n)
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]secSnapshot(nil), h.snaps...)
}

// waitDisconnects waits until n sessions ended and returns their Exceptions counts.
func (h *secHandler) waitDisconnects(t *testing.T, n int) []int {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		h.mu.Lock()
		d := append([]int(nil), h.disconnects...)
		h.mu.Unlock()
		if len(d) >= n {
			return d
		}
		if time.Now().After(deadline) {
			require.FailNowf(t, "disconnects", "wanted %d OnDisconnect calls, got %d", n, len(d))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
