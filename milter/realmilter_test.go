package milter_test

// Tests against the real milters (OpenDKIM, spamass-milter with spamd,
// clamav-milter with clamd, rspamd) and against Postfix with the same milters,
// all started by the tests on loopback by internal/realmilter. A missing program
// skips a test, or fails it when CI is set.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/milter"
	"github.com/midismtp/smtpd/milter/internal/realmilter"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// suite holds the slow starters (spamd, rspamd) for all tests of the binary.
var suite realmilter.Suite

func TestMain(m *testing.M) {
	code := m.Run()
	if err := suite.Close(); err != nil {
		fmt.Println(err)
		code = 1
	}
	os.Exit(code)
}

// sharedSpamd is the binary's spamd.
func sharedSpamd(t *testing.T) *realmilter.Spamd {
	return realmilter.Shared(&suite, t, "spamd", realmilter.StartSpamd)
}

// sharedRspamd is the binary's rspamd, with an NSD of its own as its DNS.
func sharedRspamd(t *testing.T) *realmilter.Milter {
	return realmilter.Shared(&suite, t, "rspamd", func(t realmilter.T) *realmilter.Milter {
		return realmilter.StartRspamd(t, realmilter.Rspamd{DNS: realmilter.StartNSD(t)})
	})
}

// store is the program's handler behind milter.Wrap: it keeps every message it
// is given, with the quarantine reason milter.Quarantined reports for it.
type store struct {
	smtptest.Recorder
	mu          sync.Mutex
	quarantined map[string]string // Message.ID: reason
}

func (h *store) OnMessage(s *smtpd.Session) error {
	if reason, ok := milter.Quarantined(s); ok {
		h.mu.Lock()
		if h.quarantined == nil {
			h.quarantined = map[string]string{}
		}
		h.quarantined[s.Message.ID] = reason
		h.mu.Unlock()
	}
	return h.Recorder.OnMessage(s)
}

// quarantine returns the quarantine reason of a stored message.
func (h *store) quarantine(id string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.quarantined[id]
	return r, ok
}

// streamStore is store on the streaming path (smtpd.MessageStreamer).
type streamStore struct{ store }

func (h *streamStore) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.Message.Data = data
	return h.store.OnMessage(s)
}

// receiver is one SMTP server under test: where to send, and what it kept.
type receiver struct {
	addr  string
	store *store
}

// startOurs starts milter.Wrap with config c in front of a store (a streamStore
// when stream is set) on a real smtpd server on 127.0.0.1.
func startOurs(t *testing.T, c milter.Config, stream bool) receiver {
	t.Helper()
	var h smtpd.Handler
	var st *store
	if stream {
		ss := &streamStore{}
		h, st = ss, &ss.store
	} else {
		st = &store{}
		h = st
	}
	ts := smtptest.NewServer(t, milter.Wrap(h, c))
	return receiver{addr: ts.Addr, store: st}
}

// milters is a Config calling ms in order with Postfix's defaults.
func milters(ms ...*realmilter.Milter) milter.Config {
	var c milter.Config
	for _, m := range ms {
		c.Milters = append(c.Milters, milter.Milter{Addr: m.Addr})
	}
	return c
}

// deliver sends msg over SMTP to addr, as client.test, from alice@example.test
// to bob@dest.test. It returns nil when the server accepted the message, else
// the server's refusal (*textproto.Error) or the error that ended the session.
func deliver(t *testing.T, addr string, msg []byte) error {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	require.NoError(t, err)
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	c, err := smtp.NewClient(conn, "127.0.0.1")
	require.NoError(t, err)
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Mail("alice@example.test"); err != nil {
		return err
	}
	if err := c.Rcpt("bob@dest.test"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	c.Quit()
	return nil
}

// requireRefused checks that err is an SMTP refusal with code and that the
// reply's text contains text.
func requireRefused(t *testing.T, err error, code int, text string) {
	t.Helper()
	var te *textproto.Error
	require.ErrorAs(t, err, &te)
	require.Equal(t, code, te.Code, "reply %v", te)
	require.Contains(t, te.Msg, text)
}

// message builds a test message (CRLF): header lines as given, then the body.
func message(body string, header ...string) []byte {
	h := []string{
		"From: Alice <alice@example.test>",
		"To: Bob <bob@dest.test>",
		"Subject: a test",
		"Date: Mon, 07 Dec 2026 20:00:00 +0000",
		"Message-ID: <realmilter@example.test>",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=us-ascii",
	}
	if header != nil {
		h = header
	}
	return []byte(strings.Join(h, "\r\n") + "\r\n\r\n" + strings.ReplaceAll(body, "\n", "\r\n"))
}

// field is one header field as stored: its name and its value as written after
// the colon, folding kept.
type field struct{ name, value string }

// split splits a stored message into its header fields and its body.
func split(t *testing.T, msg []byte) ([]field, []byte) {
	t.Helper()
	head, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	require.True(t, ok, "no end of header in %q", msg)
	var fs []field
	for _, line := range strings.Split(string(head), "\r\n") {
		if line != "" && (line[0] == ' ' || line[0] == '\t') {
			require.NotEmpty(t, fs, "continuation line first in %q", head)
			fs[len(fs)-1].value += "\r\n" + line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		require.True(t, ok, "not a header field: %q", line)
		fs = append(fs, field{name, value})
	}
	return fs, body
}

// values returns the values of the fields named name, in order.
func values(fs []field, name string) []string {
	var vs []string
	for _, f := range fs {
		if strings.EqualFold(f.name, name) {
			vs = append(vs, f.value)
		}
	}
	return vs
}

// one returns the only message r stored.
func (r receiver) one(t *testing.T) smtptest.Message {
	t.Helper()
	msgs := r.store.Messages()
	require.Len(t, msgs, 1)
	return msgs[0]
}
