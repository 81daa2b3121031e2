package milter_test

import (
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/internal/testenv/realmilter"
	"github.com/midismtp/smtpd/milter"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// Faults of real milters: down, hanging, killed mid-body, garbage; each with
// every DefaultAction, and against Postfix.

// realSession connects to r and greets it. It returns the connection, or the
// reply that refused the session (a milter may refuse it at connect, as in
// Postfix: 554 for reject, 421 for tempfail).
func realSession(t *testing.T, r realReceiver) (*smtptest.Conn, int, string) {
	t.Helper()
	c := r.ts.Dial(t)
	if code, text := c.Reply(); code != 220 {
		return nil, code, text
	}
	c.Send("EHLO client.test\r\n")
	if code, text := c.Reply(); code != 250 {
		return nil, code, text
	}
	return c, 250, ""
}

// realTransaction runs one mail transaction on c, from alice@example.test to
// bob@dest.test, and returns the first reply that is not a success, or the one
// to the message (250 when it was taken). beforeData runs between RCPT and DATA.
func realTransaction(c *smtptest.Conn, msg []byte, beforeData func()) (int, string) {
	for _, cmd := range []string{"MAIL FROM:<alice@example.test>", "RCPT TO:<bob@dest.test>"} {
		c.Send(cmd + "\r\n")
		if code, text := c.Reply(); code != 250 {
			return code, text
		}
	}
	if beforeData != nil {
		beforeData()
	}
	c.Send("DATA\r\n")
	if code, text := c.Reply(); code != 354 {
		return code, text
	}
	c.Send(string(msg) + ".\r\n")
	return c.Reply()
}

// realFaultTimeouts are short per-milter timeouts for the fault tests.
func realFaultTimeouts(addr string) milter.Milter {
	return milter.Milter{Addr: addr, ConnectTimeout: 2 * time.Second, CommandTimeout: 2 * time.Second, EOMTimeout: 2 * time.Second}
}

// realCheckDefault checks a transaction's outcome under action: tempfail is a
// 4xx and nothing stored, reject a 5xx and nothing stored, accept the message
// stored as sent (unfiltered: no milter touched it).
func realCheckDefault(t *testing.T, r realReceiver, action milter.DefaultAction, code int, text string, msg []byte) {
	t.Helper()
	t.Logf("%v: %d %s", action, code, text)
	switch action {
	case milter.TempFail:
		require.Equal(t, 4, code/100, "%d %s", code, text)
		require.Empty(t, r.store.Messages())
	case milter.Reject:
		require.Equal(t, 5, code/100, "%d %s", code, text)
		require.Empty(t, r.store.Messages())
	case milter.Accept:
		require.Equal(t, 250, code, "%d %s", code, text)
		require.Equal(t, string(msg), string(r.one(t).Data))
	}
}

// realActions are the default actions the fault tests try.
var realActions = []milter.DefaultAction{milter.TempFail, milter.Accept, milter.Reject}

// TestRealFaultDown: a milter that is down gets the default action: nothing
// listens on its port (a real OpenDKIM stopped before), or the real OpenDKIM was
// killed (SIGKILL) before the session.
func TestRealFaultDown(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	for _, down := range []string{"nothing listens", "killed"} {
		for _, action := range realActions {
			t.Run(down+"/"+action.String(), func(t *testing.T) {
				m := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key})
				if down == "nothing listens" {
					m.Proc.Stop() // its port is then free: nothing answers there
				} else {
					require.NoError(t, m.Proc.Signal(syscall.SIGKILL))
					require.True(t, m.Proc.Wait(5*time.Second))
				}
				r := realOurs(t, milter.Config{Milters: []milter.Milter{realFaultTimeouts(m.Addr)}, DefaultAction: action}, false)
				msg := realmilter.Message("Hello Bob.\n")
				c, code, text := realSession(t, r)
				if c != nil {
					code, text = realTransaction(c, msg, nil)
				}
				realCheckDefault(t, r, action, code, text, msg)
			})
		}
	}
}

// TestRealFaultHang: a milter that stops answering (a real OpenDKIM stopped by
// SIGSTOP, continued when the test ends) gets its timeout, then the default
// action; stopped before the session, or after RCPT (it then answers neither
// DATA nor the message). The session ends in time either way.
func TestRealFaultHang(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	for _, when := range []string{"before connect", "after RCPT"} {
		for _, action := range realActions {
			t.Run(when+"/"+action.String(), func(t *testing.T) {
				t.Parallel()
				m := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key})
				t.Cleanup(func() { m.Proc.Signal(syscall.SIGCONT) })
				stop := func() { require.NoError(t, m.Proc.Signal(syscall.SIGSTOP)) }
				r := realOurs(t, milter.Config{Milters: []milter.Milter{realFaultTimeouts(m.Addr)}, DefaultAction: action}, false)
				msg := realmilter.Message("Hello Bob.\n")
				if when == "before connect" {
					stop()
					stop = nil
				}
				c, code, text := realSession(t, r)
				if c != nil {
					code, text = realTransaction(c, msg, stop)
				}
				realCheckDefault(t, r, action, code, text, msg)
				if c != nil && code < 500 {
					c.Cmd("NOOP", 250) // the session goes on
				}
			})
		}
	}
}

// TestRealFaultKilledMidBody: spamass-milter (which may replace the body, so the
// streaming path spools the message) is killed (SIGKILL) while the client is
// sending a 6 MiB body. Tempfail: 451 at the end of the data, nothing stored;
// accept: the message stored unfiltered. Either way no spool file is left in
// Config.TempDir, neither as a name nor as a descriptor still open.
func TestRealFaultKilledMidBody(t *testing.T) {
	t.Parallel()
	spamd := realSpamd(t)
	line := strings.Repeat("0123456789", 7) + "\r\n" // 72 bytes
	body := strings.Repeat(line, (6<<20)/len(line))
	for _, action := range []milter.DefaultAction{milter.TempFail, milter.Accept} {
		t.Run(action.String(), func(t *testing.T) {
			m := realmilter.StartSpamassMilter(t, realmilter.SpamassMilter{Spamd: spamd})
			spool := t.TempDir()
			r := realOurs(t, milter.Config{Milters: []milter.Milter{realFaultTimeouts(m.Addr)}, DefaultAction: action, TempDir: spool}, true)
			msg := realmilter.Message(body)
			c, code, text := realSession(t, r)
			require.NotNil(t, c, "%d %s", code, text)
			c.Cmd("MAIL FROM:<alice@example.test>", 250)
			c.Cmd("RCPT TO:<bob@dest.test>", 250)
			c.Cmd("DATA", 354)
			half := len(msg) / 3
			c.Send(string(msg[:half]))
			require.NotEmpty(t, realOpenIn(t, spool, true), "the message is being spooled")
			require.NoError(t, m.Proc.Signal(syscall.SIGKILL))
			require.True(t, m.Proc.Wait(5*time.Second), "spamass-milter killed")
			c.Send(string(msg[half:]) + ".\r\n")
			code, text = c.Reply()
			realCheckDefault(t, r, action, code, text, msg)
			c.Cmd("NOOP", 250)
			realNoSpool(t, spool)
		})
	}
}

// realNoSpool checks that dir is empty and that this process has no file open
// in it (a spool file unlinked but still open would be a leak).
func realNoSpool(t *testing.T, dir string) {
	t.Helper()
	require.Empty(t, realOpenIn(t, dir, false), "spool files still open")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, ents, "spool files left")
}

// realOpenIn returns the files of dir this process has open (unlinked ones
// too), once there are some (want set) or none (want unset), waiting at most
// 5 s for it.
func realOpenIn(t *testing.T, dir string, want bool) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var open []string
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, fd := range fds {
			if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(target, dir+"/") {
				open = append(open, target)
			}
		}
		if (len(open) > 0) == want || time.Now().After(deadline) {
			return open
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// realGarbage is a TCP listener that answers whatever a milter client sends
// with reply, then holds the connection until the client closes it.
func realGarbage(t *testing.T, reply []byte) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				if _, err := c.Read(buf); err != nil {
					return
				}
				c.Write(reply)
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return "inet:" + l.Addr().String()
}

// TestRealFaultGarbage: a "milter" that answers the negotiation with garbage
// gets the default action, a log line names it, and the session goes on: after
// the refused (tempfail) or taken (accept) message, a second transaction on the
// same connection gets the same outcome.
func TestRealFaultGarbage(t *testing.T) {
	t.Parallel()
	garbage := map[string][]byte{
		"http":              []byte("HTTP/1.0 400 Bad Request\r\n\r\n"),
		"unknown command":   {0, 0, 0, 2, 'Z', 'x'},
		"4 GiB length":      {0xff, 0xff, 0xff, 0xff, 'O'},
		"zero length":       {0, 0, 0, 0},
		"short negotiation": {0, 0, 0, 5, 'O', 0, 0, 0, 6},
	}
	for name, reply := range garbage {
		for _, action := range []milter.DefaultAction{milter.TempFail, milter.Accept} {
			t.Run(name+"/"+action.String(), func(t *testing.T) {
				t.Parallel()
				addr := realGarbage(t, reply)
				var logs realmilter.Buffer
				r := realOurs(t, milter.Config{Milters: []milter.Milter{realFaultTimeouts(addr)}, DefaultAction: action,
					Logger: slog.New(slog.NewTextHandler(&logs, nil))}, false)
				msg := realmilter.Message("Hello Bob.\n")
				c, code, text := realSession(t, r)
				if c != nil {
					code, text = realTransaction(c, msg, nil)
				}
				realCheckDefault(t, r, action, code, text, msg)
				require.Contains(t, logs.String(), strings.TrimPrefix(addr, "inet:"), "a log line names the milter")
				if c == nil {
					return // refused at connect (as Postfix does with tempfail there)
				}
				r.store.Reset()
				code, text = realTransaction(c, msg, nil)
				realCheckDefault(t, r, action, code, text, msg)
				c.Cmd("NOOP", 250)
			})
		}
	}
}

// TestRealPostfixFaults compares Postfix and milter.Wrap when a real milter
// fails: OpenDKIM killed before the session (down), or stopped by SIGSTOP
// (hung: 2-second timeouts on both sides), under each default action. Both must
// end the transaction at the same step with the same reply (a refusal's text
// included); with accept both deliver the message unfiltered, the same.
func TestRealPostfixFaults(t *testing.T) {
	t.Parallel()
	key := realmilter.NewDKIMKey(t, "example.test", "sel1")
	down := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key})
	require.NoError(t, down.Proc.Signal(syscall.SIGKILL))
	require.True(t, down.Proc.Wait(5*time.Second))
	hung := realmilter.StartOpenDKIM(t, realmilter.OpenDKIM{Mode: "s", Key: key})
	require.NoError(t, hung.Proc.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { hung.Proc.Signal(syscall.SIGCONT) })

	faults := []struct {
		name string
		m    *realmilter.Milter
	}{{"down", down}, {"hung", hung}}
	type fcase struct {
		fault  string
		addr   string
		action milter.DefaultAction
	}
	var cases []fcase
	var listeners []realmilter.PostfixListener
	for _, f := range faults {
		for _, action := range realActions {
			cases = append(cases, fcase{f.name, f.m.Addr, action})
			listeners = append(listeners, realmilter.PostfixListener{Milters: f.m.Addr, Options: map[string]string{
				"milter_default_action":  action.String(),
				"milter_connect_timeout": "2s", "milter_command_timeout": "2s", "milter_content_timeout": "2s",
			}})
		}
	}
	sink := smtptest.NewServer(t, nil, func(s *smtpd.Server) { s.Internationalization = true })
	pf := realmilter.StartPostfix(t, realmilter.Postfix{RelayTo: sink.Addr, Hostname: realDiffHost,
		Listeners: listeners, Main: map[string]string{"smtpd_peername_lookup": "no"}})
	for i, c := range cases {
		t.Run(c.fault+"/"+c.action.String(), func(t *testing.T) {
			t.Parallel()
			ours := realOurs(t, milter.Config{Hostname: realDiffHost, DaemonName: realDiffHost,
				Milters: []milter.Milter{realFaultTimeouts(c.addr)}, DefaultAction: c.action}, false)
			id := c.fault + "." + c.action.String() + "@example.test"
			msg := realSetID(t, realmilter.Message("Hello Bob.\n"), id)
			pfOut, err := realmilter.Try(pf.Addrs[i], msg)
			require.NoError(t, err, "Postfix")
			oursOut, err := realmilter.Try(ours.addr, msg)
			require.NoError(t, err, "milter.Wrap")
			t.Logf("Postfix: %+v; milter.Wrap: %+v", pfOut, oursOut)
			if pfOut.Code == 250 && oursOut.Code == 250 {
				pfOut.Text, oursOut.Text = "", "" // each server's own words: "Ok: queued as ..."
			}
			require.Equal(t, pfOut, oursOut, "Postfix's (expected) and milter.Wrap's (actual) outcomes differ")
			if c.action == milter.Accept {
				realCompare(t, realWaitID(t, sink.Recorder, id), realWaitID(t, &ours.store.Recorder, id), "", false, false)
			}
		})
	}
}
