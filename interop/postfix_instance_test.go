package interop

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// postfixWait bounds all waiting on one instance — its start, the injection and the
// deliveries — and postfixStopWait its stop, so a test ends within about 20 s even
// when Postfix misbehaves.
const (
	postfixWait     = 13 * time.Second
	postfixStopWait = 5 * time.Second
)

// postfixSyslogName is the instance's syslog_name: its maillog lines carry it.
const postfixSyslogName = "postfix-smtpd-test"

// postfixTools are the paths of the Postfix programs the tests run.
type postfixTools struct {
	postfix, sendmail, daemons string
}

// postfixNeed finds Postfix (in PATH, else at Debian's paths) and checks that the test
// runs as root and that the postfix user exists.
func postfixNeed(t *testing.T) postfixTools {
	t.Helper()
	find := func(name, debian string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		if fi, err := os.Stat(debian); err == nil && !fi.IsDir() {
			return debian
		}
		clientsMissing(t, "Postfix's "+name+" not found (apt-get install postfix)")
		return ""
	}
	tools := postfixTools{
		postfix:  find("postfix", "/usr/sbin/postfix"),
		sendmail: find("sendmail", "/usr/sbin/sendmail"),
		daemons:  "/usr/lib/postfix/sbin",
	}
	if out, err := exec.Command(filepath.Join(filepath.Dir(tools.postfix), "postconf"), "-dh", "daemon_directory").Output(); err == nil {
		tools.daemons = strings.TrimSpace(string(out))
	}
	if _, err := os.Stat(filepath.Join(tools.daemons, "master")); err != nil {
		clientsMissing(t, "Postfix's master daemon not found: "+err.Error())
	}
	if os.Geteuid() != 0 {
		clientsMissing(t, "a private Postfix instance needs root (its master runs as root)")
	}
	if _, err := user.Lookup("postfix"); err != nil {
		clientsMissing(t, "no postfix user: "+err.Error())
	}
	return tools
}

// postfixInstance is a running private Postfix.
type postfixInstance struct {
	tools   postfixTools
	dir     string // everything: conf/, queue/, data/, maillog
	conf    string
	queue   string
	maillog string
	// deadline ends every wait on the instance: postfixWait after it was started.
	deadline time.Time
}

// postfixMasterCf is the instance's master.cf: the internal services only, none
// chrooted, no smtpd and no other inet service.
const postfixMasterCf = `pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// postfixStart writes a private instance's configuration, with settings replacing or
// adding main.cf parameters, starts it with tools (what postfixNeed found) and waits
// until it accepts mail. It is stopped, and its directory removed, when the test ends.
func postfixStart(t *testing.T, tools postfixTools, settings map[string]string) *postfixInstance {
	t.Helper()
	dir, err := os.MkdirTemp("", "smtpd-postfix-")
	require.NoError(t, err)
	// The daemons run as the postfix user: the tree must be searchable.
	require.NoError(t, os.Chmod(dir, 0o755))
	p := &postfixInstance{tools: tools, dir: dir, conf: filepath.Join(dir, "conf"),
		queue: filepath.Join(dir, "queue"), maillog: filepath.Join(dir, "maillog"),
		deadline: time.Now().Add(postfixWait)}
	data := filepath.Join(dir, "data")
	for _, d := range []string{p.conf, p.queue, data} {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	pfUser, err := user.Lookup("postfix")
	require.NoError(t, err)
	uid, _ := strconv.Atoi(pfUser.Uid)
	require.NoError(t, os.Chown(data, uid, -1)) // Postfix wants its data_directory owned by mail_owner

	base := [][2]string{
		{"compatibility_level", "3.6"},
		{"config_directory", p.conf},
		{"queue_directory", p.queue},
		{"data_directory", data},
		{"mail_owner", "postfix"},
		{"inet_interfaces", "loopback-only"},
		{"inet_protocols", "ipv4"},
		{"master_service_disable", "inet"},
		{"myhostname", "postfix.test"},
		{"mydomain", "postfix.test"},
		{"myorigin", "$myhostname"},
		{"mydestination", ""},
		{"relayhost", ""},
		{"default_transport", "smtp"},
		// Bounces and notices (to the sender's domain or to postmaster) go nowhere,
		// never to the server under test.
		{"transport_maps", "inline:{sender.test=discard:, postfix.test=discard:}"},
		{"alias_maps", ""},
		{"alias_database", ""},
		{"notify_classes", ""},
		{"biff", "no"},
		{"smtp_tls_security_level", "none"},
		{"lmtp_tls_security_level", "none"},
		{"smtp_connection_cache_on_demand", "no"},
		{"lmtp_connection_cache_on_demand", "no"},
		{"smtp_connect_timeout", "5s"},
		{"lmtp_connect_timeout", "5s"},
		{"maillog_file", p.maillog},
		{"maillog_file_prefixes", dir},
		{"syslog_name", postfixSyslogName},
		{"queue_run_delay", "1s"},
		{"minimal_backoff_time", "1s"},
		{"maximal_backoff_time", "2s"},
		// A temporary failure is final at once: no test waits for a retry.
		{"maximal_queue_lifetime", "0"},
		{"bounce_queue_lifetime", "0"},
	}
	var mainCf strings.Builder
	for _, kv := range base {
		v := kv[1]
		if s, ok := settings[kv[0]]; ok {
			v = s
		}
		fmt.Fprintf(&mainCf, "%s = %s\n", kv[0], v)
	}
	extra := make([]string, 0, len(settings))
	for k := range settings {
		if !slices.ContainsFunc(base, func(kv [2]string) bool { return kv[0] == k }) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	for _, k := range extra {
		fmt.Fprintf(&mainCf, "%s = %s\n", k, settings[k])
	}
	require.NoError(t, os.WriteFile(filepath.Join(p.conf, "main.cf"), []byte(mainCf.String()), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(p.conf, "master.cf"), []byte(postfixMasterCf), 0o644))

	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("Postfix main.cf:\n%s\nPostfix maillog:\n%s", mainCf.String(), p.log())
		}
		os.RemoveAll(dir)
	})
	// "postfix start" runs Postfix's own checks (postfix check) first.
	out, err := p.run(time.Until(p.deadline), "start")
	require.NoError(t, err, "postfix start: %s\nmaillog:\n%s", out, p.log())
	// The pickup trigger and the master's pid file mean it accepts mail: mail
	// dropped before pickup listens would wait for its 60 s scan.
	for {
		_, errPickup := os.Stat(filepath.Join(p.queue, "public", "pickup"))
		_, errPid := os.Stat(filepath.Join(p.queue, "pid", "master.pid"))
		if errPickup == nil && errPid == nil && strings.Contains(p.log(), "daemon started") {
			break
		}
		require.True(t, time.Now().Before(p.deadline), "Postfix did not start:\n%s", p.log())
		time.Sleep(20 * time.Millisecond)
	}
	p.requireNoListener(t)
	return p
}

// run runs the postfix command on the instance, for at most d.
func (p *postfixInstance) run(d time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), max(d, time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, p.tools.postfix, append([]string{"-c", p.conf}, args...)...)
	cmd.WaitDelay = time.Second // should a daemon keep the output pipe open
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// requireNoListener checks that no process of the instance has a listening TCP
// socket: Postfix must not accept connections from anywhere.
func (p *postfixInstance) requireNoListener(t *testing.T) {
	t.Helper()
	listening := map[string]string{} // socket inode: local address (hex)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if fs := strings.Fields(line); len(fs) > 9 && fs[3] == "0A" { // TCP_LISTEN
				listening[fs[9]] = fs[1]
			}
		}
	}
	pids := p.processes()
	require.NotEmpty(t, pids, "no process of the instance found")
	for _, pid := range pids {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			inode, ok := strings.CutPrefix(target, "socket:[")
			if err != nil || !ok {
				continue
			}
			inode = strings.TrimSuffix(inode, "]")
			addr, isListening := listening[inode]
			require.False(t, isListening, "Postfix process %d listens on TCP %s", pid, addr)
		}
	}
}

// stop stops the instance, then kills what is left of it by PID: its master (from
// its pid file) and every process whose environment names its configuration.
func (p *postfixInstance) stop(t *testing.T) {
	if out, err := p.run(postfixStopWait, "stop"); err != nil {
		t.Logf("postfix stop: %v: %s", err, out)
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && len(p.processes()) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range p.processes() {
		t.Logf("killing leftover Postfix process %d", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// processes lists the PIDs of the instance: its master's, and those of every
// process started with MAIL_CONFIG set to its configuration directory (the postfix
// command exports it; the master and its children inherit it).
func (p *postfixInstance) processes() []int {
	var pids []int
	if b, err := os.ReadFile(filepath.Join(p.queue, "pid", "master.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 && syscall.Kill(pid, 0) == nil {
			pids = append(pids, pid)
		}
	}
	ents, _ := os.ReadDir("/proc")
	mark := []byte("\x00MAIL_CONFIG=" + p.conf + "\x00")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || slices.Contains(pids, pid) {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && bytes.Contains(append([]byte{0}, env...), mark) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// log returns the instance's maillog.
func (p *postfixInstance) log() string {
	b, _ := os.ReadFile(p.maillog)
	return string(b)
}

// sendmail injects msg (LF line ends) with Postfix's sendmail command: -i (a lone
// dot is text), -f from, the extra options, then the recipients.
func (p *postfixInstance) sendmail(t *testing.T, from string, rcpts []string, opts []string, msg string) {
	t.Helper()
	ctx, cancel := context.WithDeadline(context.Background(), p.deadline)
	defer cancel()
	args := append([]string{"-C", p.conf, "-i", "-f", from}, opts...)
	args = append(append(args, "--"), rcpts...)
	cmd := exec.CommandContext(ctx, p.tools.sendmail, args...)
	cmd.Stdin = strings.NewReader(msg)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "sendmail %q: %s\nmaillog:\n%s", args, out, p.log())
}

// postfixDelivery is a delivery agent's log line for one recipient.
type postfixDelivery struct {
	Agent, QueueID, Relay, DSN, Status, Text, Line string
}

var postfixDeliveryRE = regexp.MustCompile(`\b` + postfixSyslogName +
	`/(\w+)\[\d+\]: ([0-9A-F]+): to=<([^>]*)>, (?:orig_to=<[^>]*>, )?relay=([^,]*), .*dsn=([0-9.]+), status=(\w+) \((.*)\)$`)

// deliveries parses the maillog's delivery lines.
func (p *postfixInstance) deliveries() map[string]postfixDelivery {
	out := map[string]postfixDelivery{}
	for _, line := range strings.Split(p.log(), "\n") {
		if m := postfixDeliveryRE.FindStringSubmatch(line); m != nil {
			if _, seen := out[m[3]]; !seen {
				out[m[3]] = postfixDelivery{Agent: m[1], QueueID: m[2], Relay: m[4], DSN: m[5], Status: m[6], Text: m[7], Line: line}
			}
		}
	}
	return out
}

// waitDelivery waits for the first delivery line of rcpt (sent, bounced, deferred ...).
func (p *postfixInstance) waitDelivery(t *testing.T, rcpt string) postfixDelivery {
	t.Helper()
	for {
		if d, ok := p.deliveries()[rcpt]; ok {
			return d
		}
		require.True(t, time.Now().Before(p.deadline), "no delivery status for %s in Postfix's maillog:\n%s", rcpt, p.log())
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRemoved waits until the queue manager removed queueID: every delivery and
// every notice for it has been logged.
func (p *postfixInstance) waitRemoved(t *testing.T, queueID string) {
	t.Helper()
	for !strings.Contains(p.log(), ": "+queueID+": removed\n") {
		require.True(t, time.Now().Before(p.deadline), "%s not removed from the queue:\n%s", queueID, p.log())
		time.Sleep(20 * time.Millisecond)
	}
}

// queuedSize returns the size qmgr logged for a queue ID ("from=<...>, size=N").
func (p *postfixInstance) queuedSize(t *testing.T, queueID string) int {
	t.Helper()
	re := regexp.MustCompile(`/qmgr\[\d+\]: ` + queueID + `: from=<[^>]*>, size=(\d+), `)
	m := re.FindStringSubmatch(p.log())
	require.NotNil(t, m, "no qmgr size line for %s:\n%s", queueID, p.log())
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}
