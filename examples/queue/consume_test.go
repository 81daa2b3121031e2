package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// userEnv is the environment of a queue process whose home directory is home
// (XDG_DATA_HOME unset): its default -data is home/.local/share/smtpd-queue.
func userEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_DATA_HOME=") {
			env = append(env, kv)
		}
	}
	return append(env, "HOME="+home)
}

// runQueue runs the queue binary to its end (at most a minute) in dir with env and
// returns its output and exit error.
func runQueue(t *testing.T, bin, dir string, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...) // killed by its PID at the deadline
	cmd.Dir, cmd.Env = dir, env
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("queue %q did not end within a minute; stderr:\n%s", args, tail(errOut.String(), 3000))
	}
	return out.String(), errOut.String(), err
}

// messageLineRe is -consume's line per message.
var messageLineRe = regexp.MustCompile(`(?m)^message \d+ \S+ from=<[^>]*> to=<[^>]+> remote=127\.0\.0\.1 port=\d+ proxy= bytes=\d+$`)

// TestDataFolderWhereverItRuns follows the README's two terminals: the receiver
// started in one directory, -consume in another, both without -data, agree on
// the store (the default is in the user's data directory, not the working
// one), and the receiver logs that absolute path. While the receiver runs,
// -consume without -nats is refused and names the folder; with -nats, and once
// the receiver stopped without it, -consume -drain prints every message and
// exits 0; a second -drain finds nothing and exits 0 too.
func TestDataFolderWhereverItRuns(t *testing.T) {
	t.Parallel()
	bin := buildBinaries(t).queue
	home, recvDir, consDir := t.TempDir(), t.TempDir(), t.TempDir()
	env := userEnv(home)
	data := filepath.Join(home, ".local", "share", "smtpd-queue")

	cmd := exec.Command(bin, "-ports", "0", "-nats-listen", "127.0.0.1:0")
	cmd.Dir, cmd.Env = recvDir, env
	recv := startCmd(t, "receiver", cmd)
	natsURL := waitFor(t, "receiver", recv.stdout, natsOnRe, 20*time.Second, recv.dead)[1]
	smtpAddr := waitFor(t, "receiver", recv.stdout, listeningRe, 20*time.Second, recv.dead)[1]
	if want := "data=" + data + " "; !strings.Contains(recv.stderr.String(), want) {
		t.Errorf("the receiver's log does not say %q:\n%s", want, recv.stderr)
	}
	c := dialEHLO(t, smtpAddr)
	for i := range 3 {
		m := message{from: "a@example.org", to: []string{"b@example.net"}, data: fmt.Appendf(nil, "Subject: %d\r\n\r\nbody\r\n", i)}
		if code, text, err := sendOne(c, m); err != nil || code != 250 {
			t.Fatalf("message %d: %d %s %v", i, code, text, err)
		}
	}

	_, stderr, err := runQueue(t, bin, consDir, env, "-consume", "-drain", "-nats-listen", "")
	if err == nil || !strings.Contains(stderr, "-data "+data+" is in use by another process") {
		t.Errorf("-consume on the running receiver's -data: %v, want a refusal naming %s:\n%s", err, data, stderr)
	}
	stdout, stderr, err := runQueue(t, bin, consDir, env, "-consume", "-drain", "-nats", natsURL, "-durable", "live")
	if n := len(messageLineRe.FindAllString(stdout, -1)); err != nil || n != 3 {
		t.Errorf("-consume -drain -nats: %v, %d message lines, want 3 and exit 0:\n%s\n%s", err, n, stdout, stderr)
	}

	recv.cmd.Process.Signal(syscall.SIGTERM) // by PID: the process this test started
	select {
	case <-recv.dead:
	case <-time.After(30 * time.Second):
		t.Fatal("the receiver did not stop within 30s of SIGTERM")
	}
	for _, want := range []int{3, 0} { // the default durable: everything, then nothing left
		stdout, stderr, err := runQueue(t, bin, consDir, env, "-consume", "-drain", "-nats-listen", "")
		if n := len(messageLineRe.FindAllString(stdout, -1)); err != nil || n != want {
			t.Errorf("-consume -drain in another directory: %v, %d message lines, want %d and exit 0:\n%s\n%s", err, n, want, stdout, stderr)
		}
		if !strings.Contains(stderr, "from="+data+" ") {
			t.Errorf("-consume does not log the data folder %s:\n%s", data, stderr)
		}
	}
}

// TestConsumeNoStore checks that -consume without -nats does not start an empty
// queue of its own where there is none: it fails at once, with the absolute
// path it looked in, also for a relative -data.
func TestConsumeNoStore(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "none")
	err := run(context.Background(), []string{"-consume", "-drain", "-data", missing, "-nats-listen", ""}, &syncBuffer{}, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "no queue in "+missing+" ") {
		t.Errorf("-consume -data %s: %v, want it refused naming the folder", missing, err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("-consume created %s: %v", missing, err)
	}

	bin := buildBinaries(t).queue
	dir := t.TempDir()
	_, stderr, err := runQueue(t, bin, dir, userEnv(t.TempDir()), "-consume", "-data", "nope", "-nats-listen", "")
	if want := "no queue in " + filepath.Join(dir, "nope") + " "; err == nil || !strings.Contains(stderr, want) {
		t.Errorf("-consume -data nope: %v, want %q in:\n%s", err, want, stderr)
	}
}
