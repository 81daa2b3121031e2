package smtptest

import (
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
)

// sessions numbers the Sessions NewSession makes, for their IDs.
var sessions atomic.Uint64

// NewSession returns a Session for calling one hook of a handler directly, with
// no server and no connection: a unit test of OnMailFrom, say.
//
// Its Context is the test's (t.Context()): it is cancelled just before the
// test's Cleanup functions run, as a real session's is at disconnect. Its Logger
// writes every record, Debug included, to the test's output (shown with -v or
// when the test fails). Its ID is "smtptest-N"; it looks like a fresh plaintext
// connection from 127.0.0.1 port 49152 to 127.0.0.1 port 2525, connected now:
// RemoteIP, RemoteHost, LocalIP, LocalHost, the ports, ConnectedAt, and
// LocalResponse and HeloResponse as the server sets them.
//
// Everything else is zero: no HELO yet, not authenticated, not encrypted, an
// empty Envelope and Message (with Message.CRLF "\r\n"). The test sets the fields
// the hook expects, e.g. s.Helo and s.Envelope.From before calling OnRcptTo, or
// s.Message.Data before calling OnMessage. The methods that need a connection
// (TLSState) report none.
func NewSession(t testing.TB) *smtpd.Session {
	t.Helper()
	log := newTestLog(t, slog.LevelDebug, 0)
	t.Cleanup(log.stop)
	id := "smtptest-" + strconv.FormatUint(sessions.Add(1), 10)
	s := smtpd.NewSession(t.Context(), log.logger(), id)
	const local, remote = "127.0.0.1", "127.0.0.1"
	s.LocalIP, s.LocalHost, s.LocalPort = local, local, 2525
	s.RemoteIP, s.RemoteHost, s.RemotePort = remote, remote, 49152
	s.ConnectedAt = time.Now().UTC()
	s.LocalResponse = s.LocalHost + " says welcome!"
	s.HeloResponse = s.LocalHost + " at your service!"
	return s
}
