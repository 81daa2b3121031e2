package interop

import (
	"encoding/base64"
	"net"
	"regexp"
	"sync"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// The server side of the real-client tests: a handler that records every message
// (smtptest.Recorder) and every security-relevant hook call, served by
// smtptest.NewServer (STARTTLS or plaintext) or startImplicit (implicit TLS).

// The one credential the servers accept. The password holds shell metacharacters,
// and the base64 of its PLAIN response both '+' and '/'.
const (
	authUser  = "alice"
	authPass  = "s3cr?t>~~~??"
	authWrong = "wr0ng-Pa55w0rd"
)

// clientsMessage is the message every client sends: CRLF line ends, lines that need
// dot-stuffing, an empty line in the body, and a final CRLF.
const clientsMessage = "From: a@example.com\r\n" +
	"To: b@example.com\r\n" +
	"Subject: real client\r\n" +
	"\r\n" +
	"first line\r\n" +
	".leading dot\r\n" +
	"..two dots\r\n" +
	".\tdot and tab\r\n" +
	"\r\n" +
	"last line\r\n"

// clientsStuffed is clientsMessage dot-stuffed, as a raw client must send it.
func clientsStuffed() string {
	return regexp.MustCompile(`(?m)^\.`).ReplaceAllString(clientsMessage, "..")
}

// plainResp is the base64 PLAIN response (RFC 4616) for the three identities.
func plainResp(authz, authc, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + authc + "\x00" + pass))
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

// secSnapshot is what the Recorder does not keep of a session at OnMessage.
type secSnapshot struct {
	Encrypted bool // IsEncrypted
	TLSOK     bool // TLSState reports a connection state
}

// secHandler records messages (its Recorder) and every OnAuth and OnHelo call.
// OnAuth accepts authUser/authPass only and answers SMTPError535 otherwise.
type secHandler struct {
	smtptest.Recorder

	mu    sync.Mutex
	calls []secCall
	helos []secHelo
	snaps []secSnapshot
}

func (h *secHandler) OnHelo(s *smtpd.Session, helo string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.helos = append(h.helos, secHelo{Helo: helo, Encrypted: s.IsEncrypted()})
	return nil
}

func (h *secHandler) OnAuth(_ *smtpd.Session, authz, authc, pass string) (string, error) {
	h.mu.Lock()
	h.calls = append(h.calls, secCall{Authz: authz, Authc: authc, Password: pass})
	h.mu.Unlock()
	if authc != authUser || pass != authPass {
		return "", smtpd.SMTPError535
	}
	return "", nil
}

// OnMessage keeps the snapshot, then records the message (the client's 250 comes
// after both).
func (h *secHandler) OnMessage(s *smtpd.Session) error {
	_, ok := s.TLSState()
	h.mu.Lock()
	h.snaps = append(h.snaps, secSnapshot{Encrypted: s.IsEncrypted(), TLSOK: ok})
	h.mu.Unlock()
	return h.Recorder.OnMessage(s)
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

// snapshots waits for n messages and returns their snapshots.
func (h *secHandler) snapshots(t *testing.T, n int) []secSnapshot {
	t.Helper()
	h.Wait(t, n)
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]secSnapshot(nil), h.snaps...)
}

// clientsServe serves a secHandler with the given modes on a fresh loopback port
// (smtptest.NewServer: with TLS, once its self-signed certificate is made) and
// returns the server, the handler and the address; mods, in order, set more
// options before the server starts.
func clientsServe(t *testing.T, tlsMode smtpd.TLSMode, authMode smtpd.AuthMode, mods ...func(*smtpd.Server)) (*smtpd.Server, *secHandler, string) {
	t.Helper()
	h := &secHandler{}
	ts := smtptest.NewServer(t, h, func(s *smtpd.Server) {
		s.TLSMode, s.AuthMode = tlsMode, authMode
		for _, mod := range mods {
			mod(s)
		}
	})
	return ts.Server, h, ts.Addr
}

// cliImplicitServe starts a server with one port on 127.0.0.1 that speaks implicit
// TLS (Serve ignores ImplicitTLSPorts, so it is Start) and returns it, its handler
// and its address.
func cliImplicitServe(t *testing.T, authMode smtpd.AuthMode) (*smtpd.Server, *secHandler, string) {
	t.Helper()
	port := freePort(t)
	h := &secHandler{}
	srv := &smtpd.Server{Handler: h, Hosts: "127.0.0.1", Ports: port, ImplicitTLSPorts: port,
		TLSMode: smtpd.TLSRequired, AuthMode: authMode}
	startImplicit(t, srv)
	return srv, h, net.JoinHostPort("127.0.0.1", port)
}

// cliI18n turns Internationalization (8BITMIME, SMTPUTF8) on, for clientsServe.
func cliI18n(srv *smtpd.Server) { srv.Internationalization = true }

// clientsCheck waits for the one message and checks it and its session state.
func clientsCheck(t *testing.T, h *secHandler, encrypted bool, authID string) {
	t.Helper()
	m := h.Wait(t, 1)[0]
	require.Equal(t, clientsMessage, string(m.Data))
	require.Equal(t, "a@example.com", m.From)
	require.Equal(t, []string{"b@example.com"}, m.To)
	snap := h.snapshots(t, 1)[0]
	require.Equal(t, encrypted, snap.Encrypted)
	require.Equal(t, encrypted, m.Encrypted)
	require.Equal(t, encrypted, snap.TLSOK)
	require.Equal(t, authID, m.AuthenticationID)
	require.Len(t, h.Messages(), 1)
}
