package interop

// The helpers every test of this package shares: finding a program (missing: skip,
// or fail when CI is set), running it with a time limit, temporary files, and
// servers: smtptest.NewServer for most tests, startImplicit where a port must
// speak implicit TLS (NewServer serves through Serve, which has no
// ImplicitTLSPorts). Set SMTPD_TEST_LOG=1 to see the logs of the servers that
// startImplicit starts on stderr (NewServer's go to the test's output).

import (
	"bytes"
	"context"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/stretchr/testify/require"
)

// testTimeout bounds every wait on a server: a dial, a reply, a stop.
const testTimeout = 10 * time.Second

// clientsTimeout bounds every run of a program.
const clientsTimeout = 30 * time.Second

// repoRoot is the repository's checkout: this module's parent directory.
const repoRoot = ".."

// clientsNeed returns the path of tool; a missing tool fails the test when CI is
// set and skips it otherwise.
func clientsNeed(t *testing.T, tool string) string {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		clientsMissing(t, tool+" not found in PATH")
	}
	return path
}

// clientsNeedSbin is clientsNeed for a program Debian installs in /usr/sbin, not
// in the PATH of every user: PATH first, then /usr/sbin.
func clientsNeedSbin(t *testing.T, tool string) string {
	t.Helper()
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	if fi, err := os.Stat(filepath.Join("/usr/sbin", tool)); err == nil && !fi.IsDir() {
		return filepath.Join("/usr/sbin", tool)
	}
	return clientsNeed(t, tool)
}

// clientsMissing skips the test for why, or fails it when the environment variable
// CI is set: CI must have every program.
func clientsMissing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set and a real client is missing: %s", why)
	}
	t.Skip(why)
}

// cliRun runs a tool with stdin and extra environment variables (NAME=value) under
// clientsTimeout and returns its stdout and stderr, failing the test (with both) when
// it does not exit 0.
func cliRun(t *testing.T, stdin string, env []string, name string, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientsTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, err, "%s %q\nstdout:\n%s\nstderr:\n%s", name, args, stdout.String(), stderr.String())
	return stdout.String(), stderr.String()
}

// cliRunFail runs a tool as cliRun does, requires it to fail and returns its stdout
// and stderr together.
func cliRunFail(t *testing.T, stdin string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientsTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "%s %q must fail; output:\n%s", name, args, out)
	require.NotErrorIs(t, ctx.Err(), context.DeadlineExceeded, "%s timed out; output:\n%s", name, out)
	return string(out)
}

// clientsFile writes content to a temporary file and returns its path.
func clientsFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// clientsCertPEM writes the server's active certificate chain as PEM (a CA file
// for clients).
func clientsCertPEM(t *testing.T, srv *smtpd.Server) string {
	t.Helper()
	cfg := srv.ActiveTLSConfig()
	require.NotNil(t, cfg)
	var b bytes.Buffer
	for _, der := range cfg.Certificates[0].Certificate {
		require.NoError(t, pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	return clientsFile(t, "server.pem", b.String())
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// testLogger is the logger of the servers startImplicit starts: it discards every
// record unless the environment variable SMTPD_TEST_LOG is set (non-empty); then
// every record, Debug included, goes to stderr.
func testLogger() *slog.Logger {
	if os.Getenv("SMTPD_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startImplicit starts srv through Start (with testLogger when it has no Logger);
// at the end of the test it is closed and every session must end within
// testTimeout.
func startImplicit(t *testing.T, srv *smtpd.Server) {
	t.Helper()
	if srv.Logger == nil {
		srv.Logger = testLogger()
	}
	require.NoError(t, srv.Start())
	t.Cleanup(func() {
		srv.Close()
		waited := make(chan struct{})
		go func() { srv.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(testTimeout):
			t.Errorf("sessions still running %v after Close (Wait did not return)", testTimeout)
		}
	})
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes (a logger's, a
// process's output).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
