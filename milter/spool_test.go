package milter_test

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
)

// This file checks the streaming path's spool: a message past the spool's memory
// goes to a temporary file, and no outcome leaves a file or an open descriptor
// behind.

// spoolFiles returns the names of the open descriptors of this process that
// point into dir (a spool file is unlinked at once: its link ends in
// " (deleted)"), and the entries of dir.
func spoolFiles(t *testing.T, dir string) (open, entries []string) {
	t.Helper()
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			open = append(open, target)
		}
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		entries = append(entries, de.Name())
	}
	return open, entries
}

// spoolWatcher is a MessageStreamer that notes whether a spool file was open
// while it read the message.
type spoolWatcher struct {
	streamRecorder
	dir     string
	sawFile atomic.Bool
	t       *testing.T
}

func (w *spoolWatcher) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	if open, _ := spoolFiles(w.t, w.dir); len(open) > 0 && strings.HasSuffix(open[0], " (deleted)") {
		w.sawFile.Store(true)
	}
	return w.streamRecorder.OnMessageStream(s, r)
}

func TestSpoolLeavesNothing(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/fd")
	}
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("y", 998)+"\r\n", 300) // 300 KB: past the spool's memory
	cases := []struct {
		name    string
		answers map[string]answer
		client  string // "ok", "gone" (the client leaves mid-data)
		want    int    // the reply to the final dot (0: none)
		file    bool   // the handler saw the spool file
	}{
		{"delivered", nil, "ok", 250, true},
		{"delivered with a replaced body", map[string]answer{"eom": eomDoes(func(m gomilter.Modifier) error {
			return m.ReplaceBody(strings.NewReader("short\r\n"))
		})}, "ok", 250, true},
		{"refused at the end", map[string]answer{"eom": respond(gomilter.RespReject)}, "ok", 550, false},
		{"refused mid-body", map[string]answer{"body": respond(gomilter.RespReject)}, "ok", 550, false},
		{"milter crashes mid-body", map[string]answer{"body": func(gomilter.Modifier, mevent) (*gomilter.Response, error) {
			return nil, io.ErrClosedPipe
		}}, "ok", 451, false},
		{"client gone mid-data", nil, "gone", 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			sc := startScripted(t, scriptedOpts{}, c.answers)
			h := &spoolWatcher{dir: dir, t: t}
			cfg := milters(sc)
			cfg.TempDir = dir
			ts := milterServer(t, h, cfg)
			conn := inTransaction(t, ts)
			conn.Cmd("DATA", 354)
			if c.client == "gone" {
				conn.Send(big[:200<<10])
				time.Sleep(100 * time.Millisecond) // the spool file is made by now
				if open, _ := spoolFiles(t, dir); len(open) == 0 {
					t.Error("no spool file while the message arrived")
				}
				conn.Close()
			} else {
				conn.Send(big + ".\r\n")
				conn.Expect(c.want)
				conn.Cmd("QUIT", 221)
			}
			sc.waitStage(t, "quit") // the session is over
			if h.sawFile.Load() != c.file {
				t.Errorf("handler saw a spool file: %v, want %v", h.sawFile.Load(), c.file)
			}
			deadline := time.Now().Add(2 * time.Second)
			for {
				open, entries := spoolFiles(t, dir)
				if len(open) == 0 && len(entries) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("left behind: open %q, files %q", open, entries)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if c.want == 250 {
				msgs, _ := delivered(&h.streamRecorder)
				if len(msgs) != 1 || !strings.HasPrefix(msgs[0], "Subject: big\r\n\r\n") {
					t.Errorf("delivered %d messages", len(msgs))
				}
			}
		})
	}
}

// TestSpoolDirUnwritable checks that a spool that cannot be made answers 451 and
// delivers nothing.
func TestSpoolDirUnwritable(t *testing.T) {
	sc := startScripted(t, scriptedOpts{}, nil)
	h := &streamRecorder{}
	cfg := milters(sc)
	cfg.TempDir = filepath.Join(t.TempDir(), "missing")
	ts := milterServer(t, h, cfg)
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("z", 998)+"\r\n", 100)
	if r := transaction(t, ts, "MAIL FROM:<a@example.org>", []string{"RCPT TO:<b@example.net>"}, big); r.Code != 451 {
		t.Fatalf("final reply %v, want 451", r)
	}
	if msgs, _ := delivered(h); len(msgs) != 0 {
		t.Errorf("%d delivered", len(msgs))
	}
}
