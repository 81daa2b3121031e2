package smtpd

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Postfix's own delivery agents against the server: "real clients are the test".
// Each test starts a private Postfix instance in a temporary directory — its own
// main.cf and master.cf, queue, data directory and log file — with no listening
// service at all (master.cf has no inet service and master_service_disable = inet).
// Mail is injected with Postfix's sendmail command; Postfix's smtp(8) or lmtp(8)
// client then delivers it to the server on 127.0.0.1, and the test reads the
// delivery status from the instance's maillog_file. Postfix's master must run as
// root: without root, or without Postfix, the tests skip (or fail when CI is set).
//
// Postfix (3.7, as every release so far) implements CHUNKING in its SMTP server
// only: its smtp and lmtp clients never send BDAT, CHUNKING offered or not. BDAT
// from a client we did not write is in gosmtp_client_test.go.

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
// adding main.cf parameters, starts it and waits until it accepts mail. It is
// stopped, and its directory removed, when the test ends.
func postfixStart(t *testing.T, settings map[string]string) *postfixInstance {
	t.Helper()
	tools := postfixNeed(t)
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

// postfixTraceEntry is a protocol line of the server's Debug trace.
type postfixTraceEntry struct {
	Session string
	Dir     string // "recv" or "send"
	Line    string // as sent or received (a multi-line reply: its lines joined by CRLF)
}

// postfixTrace keeps the server's log: the trace entries and every record as text.
type postfixTrace struct {
	mu      sync.Mutex
	entries []postfixTraceEntry
	text    strings.Builder
}

// postfixLogHandler is the slog.Handler that feeds a postfixTrace.
type postfixLogHandler struct {
	tr    *postfixTrace
	attrs []slog.Attr
}

func (h *postfixLogHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *postfixLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &postfixLogHandler{tr: h.tr, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *postfixLogHandler) WithGroup(string) slog.Handler { return h }

func (h *postfixLogHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	var session, line string
	b.WriteString(r.Level.String() + " " + r.Message)
	each := func(a slog.Attr) bool {
		switch a.Key {
		case "session":
			session = a.Value.String()
		case "line":
			line = a.Value.String()
		}
		fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		each(a)
	}
	r.Attrs(each)
	h.tr.mu.Lock()
	defer h.tr.mu.Unlock()
	h.tr.text.WriteString(b.String() + "\n")
	if r.Message == "recv" || r.Message == "send" {
		// The trace escapes the line as a Go string literal without its quotes
		// (and may add "... (N bytes)" when it cut it).
		if u, err := strconv.Unquote(`"` + line + `"`); err == nil {
			line = u
		}
		h.tr.entries = append(h.tr.entries, postfixTraceEntry{Session: session, Dir: r.Message, Line: line})
	}
	return nil
}

func (tr *postfixTrace) logger() *slog.Logger { return slog.New(&postfixLogHandler{tr: tr}) }

func (tr *postfixTrace) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.text.String()
}

func (tr *postfixTrace) all() []postfixTraceEntry {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.entries)
}

// received returns the received command lines whose verb is one of verbs.
func (tr *postfixTrace) received(verbs ...string) []string {
	var out []string
	for _, e := range tr.all() {
		if e.Dir != "recv" {
			continue
		}
		verb, _, _ := strings.Cut(e.Line, " ")
		if slices.ContainsFunc(verbs, func(v string) bool { return strings.EqualFold(v, verb) }) {
			out = append(out, e.Line)
		}
	}
	return out
}

// replyTo returns the first reply the server sent after the first received line
// starting with prefix, in the same session.
func (tr *postfixTrace) replyTo(t *testing.T, prefix string) string {
	t.Helper()
	entries := tr.all()
	for i, e := range entries {
		if e.Dir != "recv" || !strings.HasPrefix(strings.ToUpper(e.Line), strings.ToUpper(prefix)) {
			continue
		}
		for _, r := range entries[i+1:] {
			if r.Dir == "send" && r.Session == e.Session {
				return r.Line
			}
		}
	}
	require.Failf(t, "trace", "no reply to %q in the trace:\n%s", prefix, tr.String())
	return ""
}

// postfixParam returns the value of an ESMTP parameter of a MAIL or RCPT line.
func postfixParam(line, key string) (string, bool) {
	for _, f := range strings.Fields(line)[2:] {
		if k, v, ok := strings.Cut(f, "="); ok && strings.EqualFold(k, key) {
			return v, true
		}
	}
	return "", false
}

// postfixMessage is what postfixHandler stored of one message.
type postfixMessage struct {
	Envelope Envelope
	Data     string
}

// postfixHandler records every message with its whole Envelope, counts OnDataStart,
// and (LMTP) refuses each recipient whose local part is "bad".
type postfixHandler struct {
	BaseHandler
	mu         sync.Mutex
	dataStarts int
	msgs       []postfixMessage
}

func (h *postfixHandler) OnDataStart(*Session) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dataStarts++
	return nil
}

func (h *postfixHandler) OnMessage(s *Session) error {
	env := s.Envelope
	env.To = slices.Clone(env.To)
	env.DSNRecipients = slices.Clone(env.DSNRecipients)
	for i := range env.DSNRecipients {
		env.DSNRecipients[i].Notify = slices.Clone(env.DSNRecipients[i].Notify)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, postfixMessage{Envelope: env, Data: string(s.Message.Data)})
	return nil
}

// OnMessageRecipient is RecipientHandler's hook (LMTP).
func (h *postfixHandler) OnMessageRecipient(_ *Session, rcpt string) error {
	if strings.HasPrefix(rcpt, "bad@") {
		return &SMTPError{Code: 550, EnhancedCode: "5.1.1", Message: "no such user"}
	}
	return nil
}

var _ RecipientHandler = (*postfixHandler)(nil)

func (h *postfixHandler) messages() []postfixMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.msgs)
}

func (h *postfixHandler) starts() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dataStarts
}

// postfixServe serves srv with a postfixHandler and a trace on 127.0.0.1 and returns
// them and the port.
func postfixServe(t *testing.T, srv *Server) (*postfixHandler, *postfixTrace, int) {
	t.Helper()
	h := &postfixHandler{}
	tr := &postfixTrace{}
	srv.Handler, srv.Logger = h, tr.logger()
	addr := serve(t, srv)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", tr.String())
		}
	})
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	n, err := strconv.Atoi(port)
	require.NoError(t, err)
	return h, tr, n
}

// postfixBody returns a message (LF line ends, as sendmail reads it) with its own
// Message-Id and Date, so that Postfix adds a Received header only, and a body of
// about size bytes: lines of many lengths (up to 990 octets, under Postfix's
// smtp_line_length_limit), lines that need dot-stuffing, a lone dot, white space.
func postfixBody(id string, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Sender <sender@sender.test>\n"+
		"To: rcpt@x.test\n"+
		"Subject: Postfix delivers %s\n"+
		"Message-Id: <%s@sender.test>\n"+
		"Date: Mon, 01 Jan 2024 00:00:00 +0000\n"+
		"X-Folded: a header\n\tfolded once\n"+
		"\n"+
		"first line\n"+
		".leading dot\n"+
		"..two dots\n"+
		".\n"+
		"\n"+
		"   leading spaces, trailing spaces   \n"+
		"\ttab\t\n"+
		"From the start of a line\n", id, id)
	for i := 0; b.Len() < size; i++ {
		n := (i * 37) % 991
		fmt.Fprintf(&b, "%s\n", strings.Repeat(string(rune('a'+i%26)), n))
		if i%50 == 0 {
			b.WriteString(".dot line " + strconv.Itoa(i) + "\n")
		}
	}
	b.WriteString("last line\n")
	return b.String()
}

// postfixCRLF turns LF line ends into CRLF: the message as it must be stored.
func postfixCRLF(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// postfixStripReceived cuts the one header Postfix prepends, Received: with its
// continuation lines, and returns it and the rest.
func postfixStripReceived(t *testing.T, data string) (string, string) {
	t.Helper()
	require.True(t, strings.HasPrefix(data, "Received: "), "the message does not start with Postfix's Received header: %q", data[:min(len(data), 200)])
	i := 0
	for {
		j := strings.Index(data[i:], "\r\n")
		require.GreaterOrEqual(t, j, 0, "unended header")
		i += j + 2
		if i >= len(data) || (data[i] != ' ' && data[i] != '\t') {
			return data[:i], data[i:]
		}
	}
}

// postfixOnlyMessage waits until the handler has one message and returns it.
func postfixOnlyMessage(t *testing.T, h *postfixHandler) postfixMessage {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second) // it is stored before the reply Postfix logs
	for len(h.messages()) == 0 {
		require.True(t, time.Now().Before(deadline), "no message reached the handler")
		time.Sleep(10 * time.Millisecond)
	}
	msgs := h.messages()
	require.Len(t, msgs, 1)
	return msgs[0]
}

// TestPostfixRelay: Postfix's smtp client relays a message to the server with the
// extensions on: it declares SIZE= (the size its queue manager logged), passes
// RET/ENVID/NOTIFY/ORCPT when DSN is offered and BODY=8BITMIME/SMTPUTF8 when the
// message needs them, sends DATA — with CHUNKING offered too: Postfix's client has no
// BDAT — and the message is stored byte for byte after Postfix's Received header.
func TestPostfixRelay(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		chunking, pipelining bool
		utf8                 bool // a UTF-8 header and body: BODY=8BITMIME and SMTPUTF8
	}{
		{"all extensions", true, true, true},
		{"CHUNKING off", false, true, false},
		{"PIPELINING off", true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			postfixNeed(t)
			srv := &Server{Chunking: tc.chunking, Pipelining: tc.pipelining, DSN: true,
				EnhancedStatusCodes: true, Internationalization: true}
			h, tr, port := postfixServe(t, srv)
			pf := postfixStart(t, map[string]string{"relayhost": fmt.Sprintf("[127.0.0.1]:%d", port)})
			msg := postfixBody("relay", 200<<10)
			if tc.utf8 {
				msg = strings.Replace(msg, "\n\n", "\nX-Greeting: Grüße aus Köln\n\nnaïve café, 日本語\n", 1)
			}
			require.NotContains(t, msg, "\r")
			opts := []string{"-N", "success,failure", "-R", "hdrs", "-V", "envid123"}
			if tc.utf8 {
				opts = append(opts, "-B", "8BITMIME") // Postfix detects UTF-8 (SMTPUTF8) but not 8-bit without MIME headers
			}
			pf.sendmail(t, "sender@sender.test", []string{"rcpt@x.test"}, opts, msg)

			d := pf.waitDelivery(t, "rcpt@x.test")
			require.Equal(t, "smtp", d.Agent, d.Line)
			require.Equal(t, "sent", d.Status, d.Line)
			require.Equal(t, "2.0.0", d.DSN, d.Line)
			require.Equal(t, fmt.Sprintf("127.0.0.1[127.0.0.1]:%d", port), d.Relay, d.Line)
			require.True(t, strings.HasPrefix(d.Text, "250 2.0.0 "), d.Line)
			m := postfixOnlyMessage(t, h)
			require.Equal(t, 1, h.starts())

			ehlo := tr.replyTo(t, "EHLO ")
			t.Logf("EHLO reply to Postfix:\n%s", ehlo)
			wantKeywords := []string{"SIZE 33554432", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"}
			if tc.pipelining {
				wantKeywords = append(wantKeywords, "PIPELINING")
			}
			if tc.chunking {
				wantKeywords = append(wantKeywords, "CHUNKING", "BINARYMIME")
			}
			wantKeywords = append(wantKeywords, "OK") // the last line, as MidiSmtpServer
			var gotKeywords []string
			for _, l := range strings.Split(ehlo, "\r\n")[1:] {
				gotKeywords = append(gotKeywords, l[4:])
			}
			require.ElementsMatch(t, wantKeywords, gotKeywords, ehlo)

			// (a) SIZE=: what Postfix declares, the size its queue manager logged.
			mails := tr.received("MAIL")
			require.Len(t, mails, 1)
			size, ok := postfixParam(mails[0], "SIZE")
			require.True(t, ok, "no SIZE= in %q", mails[0])
			declared, err := strconv.Atoi(size)
			require.NoError(t, err)
			require.Positive(t, m.Envelope.Size)
			require.Equal(t, declared, m.Envelope.Size)
			require.Equal(t, pf.queuedSize(t, d.QueueID), m.Envelope.Size)

			// BODY=8BITMIME (sendmail -B) and SMTPUTF8 (Postfix detects UTF-8 headers).
			body, _ := postfixParam(mails[0], "BODY")
			smtputf8 := slices.Contains(strings.Fields(strings.ToUpper(mails[0])), "SMTPUTF8")
			if tc.utf8 {
				require.Equal(t, "8BITMIME", body, mails[0])
				require.True(t, smtputf8, mails[0])
				require.Equal(t, "8bitmime", m.Envelope.EncodingBody)
				require.Equal(t, "utf8", m.Envelope.EncodingUTF8)
			} else {
				require.Empty(t, body, mails[0])
				require.False(t, smtputf8, mails[0])
				require.Empty(t, m.Envelope.EncodingBody)
				require.Empty(t, m.Envelope.EncodingUTF8)
			}

			// (b) BDAT or DATA, never both. Postfix's smtp client has no BDAT at all
			// (Postfix implements RFC 3030 in its SMTP server only): it sends DATA
			// whether CHUNKING is offered or not. Should a later Postfix send BDAT, the
			// chunks must add up to the stored bytes and end with LAST.
			bdats, datas := tr.received("BDAT"), tr.received("DATA")
			if len(bdats) > 0 {
				require.True(t, tc.chunking, "BDAT sent although CHUNKING was not offered: %q", bdats)
				require.Empty(t, datas)
				total := 0
				for i, b := range bdats {
					f := strings.Fields(b)
					require.Len(t, f, map[bool]int{false: 2, true: 3}[i == len(bdats)-1], "BDAT line %q", b)
					n, err := strconv.Atoi(f[1])
					require.NoError(t, err, b)
					total += n
				}
				require.True(t, strings.EqualFold(strings.Fields(bdats[len(bdats)-1])[2], "LAST"))
				require.Equal(t, len(m.Data), total, "BDAT octets and stored bytes differ")
				t.Logf("Postfix sent %d BDAT chunk(s): %q", len(bdats), bdats)
			} else {
				require.Len(t, datas, 1)
				if tc.chunking {
					t.Logf("Postfix's smtp client sent DATA although CHUNKING was offered (it has no BDAT)")
				}
			}

			// (c) DSN parameters passed on.
			require.Equal(t, "sender@sender.test", m.Envelope.From)
			require.Equal(t, []string{"rcpt@x.test"}, m.Envelope.To)
			require.Equal(t, "HDRS", m.Envelope.DSNRet)
			require.Equal(t, "envid123", m.Envelope.DSNEnvID)
			require.Equal(t, []RecipientDSN{{Notify: []string{"SUCCESS", "FAILURE"}, ORcpt: "rfc822;rcpt@x.test"}}, m.Envelope.DSNRecipients)
			// NOTIFY=SUCCESS handed to a DSN server: Postfix sends no "relayed" notice itself.
			pf.waitRemoved(t, d.QueueID)
			require.NotContains(t, pf.log(), d.QueueID+": sender delivery status notification")

			// (d) byte-exact after Postfix's Received header.
			received, rest := postfixStripReceived(t, m.Data)
			require.Contains(t, received, "by postfix.test (Postfix")
			require.Equal(t, postfixCRLF(msg), rest)
		})
	}
}

// TestPostfixSizeLimit: a 10 KB message to a server with MaxMessageSize 2000.
// Postfix's smtp client reads the limit from EHLO's SIZE and bounces the message
// itself, before MAIL: the server never sees a transaction. (So Postfix cannot show
// the 552 a MAIL with a larger SIZE= gets; go-smtp's client does, in
// TestGoSMTPSizeAtMail.) With SIZE hidden from Postfix (smtp_discard_ehlo_keywords)
// Postfix sends the data and the server answers its end with 552 5.3.4.
func TestPostfixSizeLimit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		hideSize bool
		chunking bool
	}{
		{"SIZE advertised", false, true},
		{"SIZE hidden, 552 after DATA", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			postfixNeed(t)
			srv := &Server{MaxMessageSize: 2000, Chunking: tc.chunking, Pipelining: true, DSN: true,
				EnhancedStatusCodes: true, Internationalization: true}
			h, tr, port := postfixServe(t, srv)
			settings := map[string]string{"relayhost": fmt.Sprintf("[127.0.0.1]:%d", port)}
			if tc.hideSize {
				settings["smtp_discard_ehlo_keywords"] = "size"
			}
			pf := postfixStart(t, settings)
			msg := postfixBody("big", 10<<10)
			pf.sendmail(t, "sender@sender.test", []string{"rcpt@x.test"}, nil, msg)
			d := pf.waitDelivery(t, "rcpt@x.test")
			require.Equal(t, "bounced", d.Status, d.Line)
			require.Equal(t, "5.3.4", d.DSN, d.Line)
			require.Contains(t, tr.replyTo(t, "EHLO "), "\r\n250-SIZE 2000\r\n")
			require.Empty(t, h.messages())
			if !tc.hideSize {
				require.Contains(t, d.Text, "exceeds size limit 2000 of server 127.0.0.1[127.0.0.1]", d.Line)
				require.Empty(t, tr.received("MAIL", "RCPT", "DATA", "BDAT"), "Postfix opened a transaction")
				require.Zero(t, h.starts())
				return
			}
			mails := tr.received("MAIL")
			require.Len(t, mails, 1)
			_, sized := postfixParam(mails[0], "SIZE")
			require.False(t, sized, "Postfix sent SIZE= with SIZE discarded: %q", mails[0])
			require.Len(t, tr.received("DATA"), 1)
			require.Contains(t, d.Text, "said: 552 5.3.4 "+SMTPError552.Message+" (in reply to end of DATA command)", d.Line)
			require.Equal(t, 1, h.starts()) // the data began; the limit was passed later
		})
	}
}

// TestPostfixLMTP: Postfix's lmtp client delivers one message to two recipients; the
// handler's RecipientHandler refuses bad@x.test with 550 5.1.1: Postfix delivers
// good@x.test and bounces exactly bad@x.test with that reply, and the handler got
// the message once, with both recipients.
func TestPostfixLMTP(t *testing.T) {
	for _, chunking := range []bool{false, true} {
		t.Run("CHUNKING "+map[bool]string{false: "off", true: "on"}[chunking], func(t *testing.T) {
			postfixNeed(t)
			srv := &Server{LMTP: true, Chunking: chunking, Pipelining: true, DSN: true,
				EnhancedStatusCodes: true, Internationalization: true}
			h, tr, port := postfixServe(t, srv)
			pf := postfixStart(t, map[string]string{"default_transport": fmt.Sprintf("lmtp:inet:127.0.0.1:%d", port)})
			msg := strings.Replace(postfixBody("lmtp", 20<<10), "To: rcpt@x.test\n", "To: good@x.test, bad@x.test\n", 1)
			pf.sendmail(t, "sender@sender.test", []string{"good@x.test", "bad@x.test"}, nil, msg)

			good, bad := pf.waitDelivery(t, "good@x.test"), pf.waitDelivery(t, "bad@x.test")
			relay := fmt.Sprintf("127.0.0.1[127.0.0.1]:%d", port)
			require.Equal(t, "lmtp", good.Agent, good.Line)
			require.Equal(t, relay, good.Relay, good.Line)
			require.Equal(t, "sent", good.Status, good.Line)
			require.Equal(t, "2.0.0", good.DSN, good.Line)
			require.Equal(t, "250 2.0.0 OK <good@x.test> delivered", good.Text, good.Line)
			require.Equal(t, "lmtp", bad.Agent, bad.Line)
			require.Equal(t, "bounced", bad.Status, bad.Line)
			require.Equal(t, "5.1.1", bad.DSN, bad.Line)
			require.Equal(t, "host "+relay[:strings.LastIndex(relay, ":")]+" said: 550 5.1.1 no such user (in reply to end of DATA command)", bad.Text, bad.Line)
			require.Equal(t, good.QueueID, bad.QueueID, "one queue file, one delivery")
			pf.waitRemoved(t, good.QueueID)
			for rcpt, d := range pf.deliveries() {
				if d.Agent == "lmtp" {
					require.Contains(t, []string{"good@x.test", "bad@x.test"}, rcpt, d.Line)
				}
			}
			require.Equal(t, 1, strings.Count(pf.log(), ": "+good.QueueID+": sender non-delivery notification: "),
				"one bounce, for bad@x.test")

			m := postfixOnlyMessage(t, h)
			require.Equal(t, 1, h.starts())
			require.ElementsMatch(t, []string{"good@x.test", "bad@x.test"}, m.Envelope.To)
			require.Len(t, tr.received("MAIL"), 1)
			require.Len(t, tr.received("RCPT"), 2)
			require.Len(t, tr.received("DATA"), 1, "Postfix's lmtp client sends DATA (it has no BDAT)")
			require.Empty(t, tr.received("EHLO", "HELO"))
			lhlo := tr.replyTo(t, "LHLO ")
			t.Logf("LHLO reply to Postfix:\n%s", lhlo)
			_, rest := postfixStripReceived(t, m.Data)
			require.Equal(t, postfixCRLF(msg), rest)
		})
	}
}
