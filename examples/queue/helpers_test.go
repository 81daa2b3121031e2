package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The tests start real parts only: an embedded nats-server in this process, or
// nats-server, examples/queue, examples/sink, HAProxy and Postfix's smtp-source as
// processes of their own (built once per test run, without the race detector, so
// that kill -9 is real and throughput figures are not the race detector's). Every
// process is started by the test and killed by its PID when the test ends;
// everything listens on 127.0.0.1 only.

// binDir holds the binaries built for this test run; removed by TestMain.
var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries are the programs the process-based tests run.
type binaries struct {
	queue, natsServer, sink string
}

// buildBinaries builds examples/queue, nats-server (from this module's
// dependency, the version the embedded server is) and examples/sink once per
// test run. The Go build cache makes later runs a matter of linking.
func buildBinaries(t *testing.T) binaries {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "queue-test-bin-")
		if binErr != nil {
			return
		}
		root, err := filepath.Abs("../..")
		if err != nil {
			binErr = err
			return
		}
		for _, b := range []struct{ dir, out, pkg string }{
			{".", "queue", "."},
			{".", "nats-server", "github.com/nats-io/nats-server/v2"},
			{root, "sink", "./examples/sink"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.out), b.pkg)
			cmd.Dir = b.dir
			cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false")
			if out, err := cmd.CombinedOutput(); err != nil {
				binErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if binErr != nil {
		t.Fatalf("building the test binaries: %v", binErr)
	}
	return binaries{
		queue:      filepath.Join(binDir, "queue"),
		natsServer: filepath.Join(binDir, "nats-server"),
		sink:       filepath.Join(binDir, "sink"),
	}
}

// need returns the path of an external tool (PATH, then /usr/sbin, where Debian
// puts haproxy and smtp-source); missing, the test is skipped, or fails when the
// CI environment variable is set.
func need(t *testing.T, tool string) string {
	t.Helper()
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, tool)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	why := tool + " not found (Debian: apt-get install haproxy postfix)"
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set and a needed tool is missing: %s", why)
	}
	t.Skip(why)
	return ""
}

// syncBuffer is an io.Writer that a process or goroutine writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tail is the end of s for failure messages.
func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// waitFor polls the text of buf until re matches, and returns the submatches.
func waitFor(t *testing.T, what string, buf fmt.Stringer, re *regexp.Regexp, timeout time.Duration, dead <-chan struct{}) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(buf.String()); m != nil {
			return m
		}
		select {
		case <-dead:
			t.Fatalf("%s ended before %s appeared", what, re)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not appear within %s", what, re, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	listeningRe = regexp.MustCompile(`(?m)^listening on (\S+)$`)
	natsOnRe    = regexp.MustCompile(`(?m)^nats on (nats://\S+)$`)
)

// inproc is run() in this process, as the embedded tests use it.
type inproc struct {
	smtp, nats     string // the addresses it printed
	stdout, stderr *syncBuffer
	cancel         context.CancelFunc
	err            error // run's result, set before dead is closed
	dead           chan struct{}
	reported       sync.Once
}

// startRun runs run(args) in this process until the test ends (or stop) and
// waits for its "listening on" line (and "nats on" when wantNATS).
func startRun(t *testing.T, wantNATS bool, args ...string) *inproc {
	t.Helper()
	p := runBackground(t, args...)
	if wantNATS {
		p.nats = waitFor(t, "run", p.stdout, natsOnRe, 20*time.Second, p.dead)[1]
	}
	p.smtp = waitFor(t, "run", p.stdout, listeningRe, 20*time.Second, p.dead)[1]
	return p
}

// runBackground runs run(args) in this process until the test ends (or stop).
func runBackground(t *testing.T, args ...string) *inproc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inproc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, dead: make(chan struct{})}
	go func() {
		p.err = run(ctx, args, p.stdout, p.stderr)
		close(p.dead)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("run %q stderr:\n%s", args, tail(p.stderr.String(), 6000))
		}
	})
	return p
}

// stop cancels run and waits for it; it may be called more than once.
func (p *inproc) stop(t *testing.T) {
	t.Helper()
	p.cancel()
	select {
	case <-p.dead:
		p.reported.Do(func() {
			if p.err != nil {
				t.Errorf("run: %v", p.err)
			}
		})
	case <-time.After(20 * time.Second):
		t.Errorf("run did not return within 20s of cancel")
	}
}

// proc is a process started by a test.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	dead           chan struct{}
	killed         bool
}

// startProc starts bin; it is killed (SIGKILL, by its PID) when the test ends.
func startProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, exec.Command(bin, args...))
}

// startCmd starts cmd (its Dir and Env as the caller set them) as startProc does.
func startCmd(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	args := cmd.Args[1:]
	p := &proc{name: name, cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, dead: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.dead)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() && !p.killed {
			t.Logf("%s %q\nstdout:\n%s\nstderr:\n%s", name, args, tail(p.stdout.String(), 2000), tail(p.stderr.String(), 4000))
		}
	})
	return p
}

// kill sends SIGKILL to the process (kill -9) and waits until it is gone.
func (p *proc) kill() {
	select {
	case <-p.dead:
		return
	default:
	}
	p.cmd.Process.Kill() // by PID: only the process this test started
	<-p.dead
}

// freePorts returns n ports that were free a moment ago on 127.0.0.1.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// natsNode is one nats-server process of a test cluster.
type natsNode struct {
	name string
	url  string
	*proc
}

// startCluster starts three nats-server processes with JetStream, clustered over
// loopback routes, and waits until JetStream answers (a meta leader is elected).
// The ports are picked free beforehand; should one have been taken in between
// (a node exits at once), the cluster is started again on new ports.
func startCluster(t *testing.T, bin string) []*natsNode {
	t.Helper()
	for attempt := 1; ; attempt++ {
		nodes, err := tryCluster(t, bin)
		if err == nil {
			return nodes
		}
		for _, n := range nodes {
			n.kill()
		}
		if attempt == 3 {
			t.Fatalf("the NATS cluster did not come up: %v", err)
		}
		t.Logf("NATS cluster, attempt %d: %v; again on new ports", attempt, err)
	}
}

func tryCluster(t *testing.T, bin string) ([]*natsNode, error) {
	t.Helper()
	ports := freePorts(t, 6)
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3+i]))
	}
	dir := t.TempDir()
	var nodes []*natsNode
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
max_payload: 8MB
jetstream {
  store_dir: %q
  max_memory_store: 64MB
  max_file_store: 2GB
}
cluster {
  name: mailq
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, name, ports[i], filepath.Join(dir, name), ports[3+i], strings.Join(routes, ", "))
		path := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, "nats-server "+name, bin, "-c", path)
		nodes = append(nodes, &natsNode{name: name, url: fmt.Sprintf("nats://127.0.0.1:%d", ports[i]), proc: p})
	}
	deadline := time.Now().Add(30 * time.Second)
	var nc *nats.Conn
	for nc == nil {
		for _, n := range nodes {
			select {
			case <-n.dead:
				return nodes, fmt.Errorf("nats-server %s exited: %s", n.name, tail(n.stderr.String(), 300))
			default:
			}
		}
		var err error
		if nc, err = nats.Connect(clusterURLs(nodes)); err != nil {
			if time.Now().After(deadline) {
				return nodes, err
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return nodes, nil
		}
		for _, n := range nodes {
			select {
			case <-n.dead:
				return nodes, fmt.Errorf("nats-server %s exited: %s", n.name, tail(n.stderr.String(), 300))
			default:
			}
		}
		if time.Now().After(deadline) {
			return nodes, fmt.Errorf("JetStream did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func clusterURLs(nodes []*natsNode) string {
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.url)
	}
	return strings.Join(urls, ",")
}

// natsConnect connects the test to NATS; closed when the test ends.
func natsConnect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	var nc *nats.Conn
	var err error
	for range 50 {
		if nc, err = nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond)); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// stored is one message read back from the stream.
type stored struct {
	seq    uint64
	header nats.Header
	data   []byte
}

// readStream reads every message of the stream with an ordered consumer. Right
// after a node died the JetStream API may answer "no responders" for a while:
// then it starts over, for up to a minute.
func readStream(t *testing.T, nc *nats.Conn, stream string) []stored {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var errs []string
	for {
		out, err := readStreamOnce(ctx, js, stream)
		if err == nil {
			if len(errs) > 0 {
				t.Logf("reading stream %s needed %d more attempts: %s", stream, len(errs), strings.Join(errs, "; "))
			}
			return out
		}
		errs = append(errs, fmt.Sprintf("%s %v", time.Now().Format("15:04:05.000"), err))
		if ctx.Err() != nil {
			t.Fatalf("reading stream %s: %s", stream, strings.Join(errs, "; "))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func readStreamOnce(ctx context.Context, js jetstream.JetStream, stream string) ([]stored, error) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := js.Stream(actx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	info, err := st.Info(actx)
	if err != nil {
		return nil, fmt.Errorf("info: %w", err)
	}
	want := info.State.Msgs
	if want == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(actx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer: %w", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	var out []stored
	for uint64(len(out)) < want {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			out = append(out, stored{seq: meta.Sequence.Stream, header: m.Headers(), data: m.Data()})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("read %d of %d messages in 20s", len(out), want)
		}
	}
	return out, nil
}

// smtpConn is a minimal SMTP client: exact bytes on the wire, every reply read.
type smtpConn struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialSMTP connects from the local address from ("" for any) and reads the banner.
func dialSMTP(addr, from string) (*smtpConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &smtpConn{conn: conn, r: bufio.NewReader(conn)}
	if code, text, err := c.reply(); err != nil || code != 220 {
		conn.Close()
		if err == nil {
			err = fmt.Errorf("banner %d %s", code, text)
		}
		return nil, err
	}
	return c, nil
}

// dialEHLO connects to addr, says EHLO client.test and closes the connection when
// the test ends; a failure ends the test.
func dialEHLO(t *testing.T, addr string) *smtpConn {
	t.Helper()
	c, err := dialSMTP(addr, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	if err := c.expect("EHLO client.test", 250); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *smtpConn) localPort() int { return c.conn.LocalAddr().(*net.TCPAddr).Port }

func (c *smtpConn) close() { c.conn.Close() }

// reply reads one (possibly multi-line) reply.
func (c *smtpConn) reply() (int, string, error) {
	c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 0, "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, "", fmt.Errorf("bad reply %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, "", fmt.Errorf("bad reply %q", line)
		}
		lines = append(lines, line[min(4, len(line)):])
		if len(line) == 3 || line[3] == ' ' {
			return code, strings.Join(lines, "\n"), nil
		}
	}
}

// send writes s as it is.
func (c *smtpConn) send(s string) error {
	c.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
	_, err := io.WriteString(c.conn, s)
	return err
}

// cmd sends a command line and returns the reply's code.
func (c *smtpConn) cmd(line string) (int, string, error) {
	if err := c.send(line + "\r\n"); err != nil {
		return 0, "", err
	}
	return c.reply()
}

// expect runs a command that must get code.
func (c *smtpConn) expect(line string, code int) error {
	got, text, err := c.cmd(line)
	if err != nil {
		return fmt.Errorf("%s: %w", line, err)
	}
	if got != code {
		return &replyError{line, got, text}
	}
	return nil
}

// replyError is a reply other than the one expected.
type replyError struct {
	cmd  string
	code int
	text string
}

func (e *replyError) Error() string { return fmt.Sprintf("%s: %d %s", e.cmd, e.code, e.text) }

// dotStuff returns data as DATA sends it: a leading dot doubled, then ".\r\n".
// data must end with CRLF.
func dotStuff(data []byte) string {
	var b strings.Builder
	for line := range strings.SplitAfterSeq(string(data), "\r\n") {
		if strings.HasPrefix(line, ".") {
			b.WriteByte('.')
		}
		b.WriteString(line)
	}
	b.WriteString(".\r\n")
	return b.String()
}

// outcome is what one transaction got.
type outcome struct {
	code    int  // the reply to the final dot; 0 when none came
	dotSent bool // the final dot was (or may have been) sent: without a 250 the message may be stored
	stage   string
	err     error
}

// transaction sends one message over an open session (EHLO done).
func (c *smtpConn) transaction(from string, to []string, data []byte) outcome {
	if code, text, err := c.cmd("MAIL FROM:<" + from + ">"); err != nil || code != 250 {
		return outcome{code: code, stage: "MAIL", err: errOr(err, code, text)}
	}
	for _, r := range to {
		if code, text, err := c.cmd("RCPT TO:<" + r + ">"); err != nil || code != 250 {
			return outcome{code: code, stage: "RCPT", err: errOr(err, code, text)}
		}
	}
	if code, text, err := c.cmd("DATA"); err != nil || code != 354 {
		return outcome{code: code, stage: "DATA", err: errOr(err, code, text)}
	}
	err := c.send(dotStuff(data))
	o := outcome{dotSent: true, stage: "dot"}
	if err != nil {
		o.err = err
		return o
	}
	code, text, err := c.reply()
	o.code = code
	if err != nil || code != 250 {
		o.err = errOr(err, code, text)
	}
	return o
}

func errOr(err error, code int, text string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%d %s", code, text)
}

// haproxy is a running HAProxy with one frontend and a backend of receivers.
type haproxy struct {
	addr string
	sock string
	out  *syncBuffer
	cfg  string
}

// startHAProxy runs HAProxy in the foreground (-db): a TCP frontend on a free
// port, balancing over backends with send-proxy-v2 and SMTP health checks
// (option smtpchk with check-send-proxy) every 200 ms, as the README recipe does.
// It returns once every backend server is UP; HAProxy is killed by its PID when
// the test ends. Should the port have been taken in between, it starts again on
// another.
func startHAProxy(t *testing.T, backends []string) *haproxy {
	t.Helper()
	bin := need(t, "haproxy")
	for attempt := 1; ; attempt++ {
		hp, p, err := tryHAProxy(t, bin, backends)
		if err == nil {
			return hp
		}
		p.kill()
		if attempt == 3 {
			t.Fatalf("%v\n%s", err, hp.cfg)
		}
		t.Logf("haproxy, attempt %d: %v; again on a new port", attempt, err)
	}
}

func tryHAProxy(t *testing.T, bin string, backends []string) (*haproxy, *proc, error) {
	t.Helper()
	dir := t.TempDir()
	hp := &haproxy{
		addr: fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0]),
		sock: filepath.Join(dir, "stats.sock"),
	}
	var servers strings.Builder
	for i, b := range backends {
		fmt.Fprintf(&servers, "\tserver r%d %s send-proxy-v2 check check-send-proxy inter 200ms fall 2 rise 2\n", i+1, b)
	}
	hp.cfg = fmt.Sprintf(`global
	maxconn 512
	nbthread 2
	stats socket %s mode 600 level admin

defaults
	mode tcp
	timeout connect 1s
	timeout client 30s
	timeout server 30s
	timeout check 1s
	retries 3
	option redispatch

frontend smtp
	bind %s
	default_backend receivers

backend receivers
	balance leastconn
	option smtpchk EHLO haproxy.test
%s`, hp.sock, hp.addr, servers.String())
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(hp.cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "haproxy", bin, "-f", path, "-db")
	hp.out = p.stderr
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.dead:
			return hp, p, fmt.Errorf("haproxy exited: %s%s", p.stderr, p.stdout)
		default:
		}
		st, err := hp.stat()
		up := 0
		for _, row := range st {
			if row["status"] == "UP" {
				up++
			}
		}
		if err == nil && up == len(backends) {
			return hp, p, nil
		}
		if time.Now().After(deadline) {
			return hp, p, fmt.Errorf("haproxy's health checks did not pass: %v %v\n%s", st, err, p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stat returns the "show stat" rows of the backend's servers by name (r1, r2).
func (hp *haproxy) stat() (map[string]map[string]string, error) {
	conn, err := net.DialTimeout("unix", hp.sock, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, "show stat\n"); err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(conn)
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(bytes.NewReader(raw))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, fmt.Errorf("show stat: %v %q", err, raw)
	}
	head := rows[0]
	head[0] = strings.TrimPrefix(head[0], "# ")
	out := map[string]map[string]string{}
	for _, row := range rows[1:] {
		if len(row) < 2 || row[0] != "receivers" || row[1] == "BACKEND" {
			continue
		}
		m := map[string]string{}
		for i, k := range head {
			if i < len(row) {
				m[k] = row[i]
			}
		}
		out[row[1]] = m
	}
	return out, nil
}
