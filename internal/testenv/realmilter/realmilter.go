// Package realmilter starts real mail filters for the milter package's tests:
// OpenDKIM, SpamAssassin (spamd behind spamass-milter), ClamAV (clamd behind
// clamav-milter) and rspamd in milter mode, with the servers they lean on (NSD for
// DNS) and a private Postfix to compare with. These are the Debian programs
// themselves, not imitations: each runs as a private instance in its own
// temporary directory, from a configuration file this package writes, in the
// foreground, on 127.0.0.1 and a free port. None of them uses anything
// system-wide (no /run, no system sockets, no system DNS: every name they look up
// goes to an NSD of the test's) and none talks to anything but loopback: each is
// checked for sockets beyond loopback before it is stopped. The one file kept
// outside a temporary directory is rspamd's cache of compiled regular
// expressions (see rspamdCache).
//
// A Start function waits until its daemon answers on its port, and stops it by
// PID (SIGTERM, then SIGKILL of its process group) when the test ends. Programs
// that are slow to start (spamd, rspamd) can be shared by the tests of one binary
// through a Suite.
//
// A missing program skips the test, or fails it when the environment variable CI
// is set: CI must install every program (see the Debian package names in Need's
// callers).
package realmilter

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// T is what the Start functions need of a test: *testing.T and *testing.B have it.
type T interface {
	Helper()
	Cleanup(func())
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Failed() bool
}

// StartTimeout bounds the wait for one daemon to answer on its port. rspamd
// compiles its regular expressions and its list of TLDs at its first start: some
// 15 s on two idle cores, over 90 s on a loaded machine.
const StartTimeout = 3 * time.Minute

// stopWait is how long a daemon has to exit after SIGTERM before its process
// group gets SIGKILL. The milters built on libmilter notice SIGTERM only at their
// listener's next 5-second poll: they get libmilterStopWait, then SIGKILL (they
// keep no state worth a clean exit).
const (
	stopWait          = 3 * time.Second
	libmilterStopWait = 300 * time.Millisecond
)

// Missing reports a program the test cannot do without: the test fails when CI
// is set in the environment, and is skipped otherwise.
func Missing(t T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set and a program the test needs is missing: %s", why)
	}
	t.Skipf("%s", why)
}

// Need returns the path of the program name: from PATH, else from /usr/sbin or
// /usr/bin (root's PATH is not every test's). pkg is the Debian package that has
// it, named in the message when it is missing.
func Need(t T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	Missing(t, fmt.Sprintf("%s not found (apt-get install %s)", name, pkg))
	return ""
}

// tempRoot is where every instance directory is made: the TMPDIR of the moment
// the package was loaded.
var tempRoot = os.TempDir()

// instanceDir makes a directory for one instance, searchable by every user (the
// daemons that drop privileges read their files as another user), and removes it
// when the test ends.
func instanceDir(t T, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp(tempRoot, "realmilter-"+name+"-")
	if err != nil {
		t.Fatalf("realmilter: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("realmilter: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// writeFile writes a file of an instance, readable by all (no secrets: test keys).
func writeFile(t T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("realmilter: %v", err)
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago. A daemon
// that then fails to bind it is started again on another (see start).
func freePort(t T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("realmilter: no free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Proc is one running daemon.
type Proc struct {
	Name string // what it is, for messages: "opendkim", "spamd" ...
	Dir  string // its instance directory
	cmd  *exec.Cmd
	out  *Buffer       // its standard output and error
	logs []string      // log files it writes, shown when a test fails
	done chan struct{} // closed when it exited
	err  error         // its exit status, once done is closed
	// grace is how long Stop waits after SIGTERM.
	grace time.Duration

	stopOnce sync.Once
}

// Buffer is a bytes.Buffer safe for concurrent writes: a daemon's output, a
// test's log.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// spawn starts argv in dir, in its own process group, with env added to a
// minimal environment. It is not yet waited for: see startListening.
func spawn(name, dir string, env []string, logs []string, argv ...string) (*Proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir, "TMPDIR=" + dir, "LANG=C"}, env...)
	out := &Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own group, so that stop reaches the workers it forks; and killed should
	// the test binary die without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Name: name, Dir: dir, cmd: cmd, out: out, logs: logs, done: make(chan struct{}), grace: stopWait}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the daemon's process ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the daemon's main process (SIGSTOP and SIGCONT to make it
// hang and go on, SIGKILL to crash it).
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("realmilter: %s already exited", p.Name)
	}
	return syscall.Kill(p.PID(), sig)
}

// SignalGroup sends sig to every process of the daemon (its workers too).
func (p *Proc) SignalGroup(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("realmilter: %s already exited", p.Name)
	}
	return syscall.Kill(-p.PID(), sig)
}

// Exited reports whether the daemon's main process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits at most d for the daemon to exit and reports whether it did.
func (p *Proc) Wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// Output returns what the daemon wrote to its standard output and error, then
// the log files it writes.
func (p *Proc) Output() string {
	var b strings.Builder
	b.WriteString(p.out.String())
	for _, f := range p.logs {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		const keep = 16 << 10
		if len(data) > keep {
			data = append([]byte("...\n"), data[len(data)-keep:]...)
		}
		fmt.Fprintf(&b, "--- %s:\n%s", filepath.Base(f), data)
	}
	return b.String()
}

// Stop stops the daemon: SIGCONT (it may have been stopped by a test) and
// SIGTERM to its main process, then SIGKILL to its process group after stopWait
// or once the main process has exited (workers left behind). Stopping twice is
// stopping once.
func (p *Proc) Stop() {
	p.stopOnce.Do(func() {
		pgid := p.PID()
		if !p.Exited() {
			syscall.Kill(-pgid, syscall.SIGCONT)
			syscall.Kill(pgid, syscall.SIGTERM)
			p.Wait(p.grace)
		}
		// The group's leader is gone or stuck: what is left of the group goes.
		syscall.Kill(-pgid, syscall.SIGKILL)
		p.Wait(stopWait)
	})
}

// stopChecked checks that the daemon reaches nothing beyond loopback, stops it,
// and shows its output if the test failed.
func (p *Proc) stopChecked(t T, argv []string) {
	for _, bad := range p.offLoopback() {
		t.Errorf("realmilter: %s reaches beyond loopback: %s", p.Name, bad)
	}
	p.Stop()
	if t.Failed() {
		t.Logf("%s (pid %d, %s) output:\n%s", p.Name, p.PID(), strings.Join(argv, " "), p.Output())
	}
}

// errExited is returned by waitListening when the daemon exited before it
// answered: typically because another process took its port.
var errExited = errors.New("exited")

// waitListening waits until addr accepts TCP connections, the daemon exits, or
// StartTimeout passes.
func (p *Proc) waitListening(addr string) error {
	deadline := time.Now().Add(StartTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%w (%v) before listening on %s", errExited, p.err, addr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %v", addr, StartTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLog waits until the daemon's log file holds line, the daemon exits, or
// StartTimeout passes.
func (p *Proc) waitLog(file, line string) error {
	deadline := time.Now().Add(StartTimeout)
	for {
		if b, err := os.ReadFile(file); err == nil && bytes.Contains(b, []byte(line)) {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%w (%v) before logging %q", errExited, p.err, line)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q in %s after %v", line, file, StartTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startSpec says how to start one daemon that listens on one port.
type startSpec struct {
	name string
	dir  string
	env  []string
	logs []string
	// setup writes the configuration for port and returns the command line.
	setup func(port int) []string
	// ready is an optional extra wait after the port answers.
	ready func(p *Proc, port int) error
	// libmilter is set for milters built on libmilter (see libmilterStopWait).
	libmilter bool
}

// start starts a daemon, waits until it listens, and stops it when the test
// ends. A daemon that exits before it listens (its port was taken meanwhile) is
// tried again on another port, at most three times.
func start(t T, s startSpec) (*Proc, int) {
	t.Helper()
	var lastErr error
	for range 3 {
		port := freePort(t)
		argv := s.setup(port)
		p, err := spawn(s.name, s.dir, s.env, s.logs, argv...)
		if err != nil {
			t.Fatalf("realmilter: starting %s: %v", s.name, err)
		}
		if s.libmilter {
			p.grace = libmilterStopWait
		}
		t.Cleanup(func() { p.stopChecked(t, argv) })
		err = p.waitListening("127.0.0.1:" + strconv.Itoa(port))
		if err == nil && s.ready != nil {
			err = s.ready(p, port)
		}
		if err == nil {
			return p, port
		}
		lastErr = fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, p.Output())
		p.Stop()
		if !errors.Is(err, errExited) {
			break
		}
	}
	t.Fatalf("realmilter: %s did not start: %v", s.name, lastErr)
	return nil, 0
}

// Milter is a running milter.
type Milter struct {
	// Addr is its address in Postfix's syntax: "inet:127.0.0.1:PORT".
	Addr string
	// Proc is the milter's process, for the fault tests' signals.
	Proc *Proc
}

// newMilter describes the milter p listening on port.
func newMilter(p *Proc, port int) *Milter {
	return &Milter{Addr: "inet:127.0.0.1:" + strconv.Itoa(port), Proc: p}
}

// HostPort returns the milter's address as net.Dial takes it.
func (m *Milter) HostPort() string { return strings.TrimPrefix(m.Addr, "inet:") }
