package interop

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The load harness (bench/load.sh, `make load`) is run here in miniature, so that
// a change to the script, the sink's flags or the peers' modules that breaks it
// shows up in CI and not at the next measurement: one round of shape b, four
// servers (the streaming sink as smtpd-alt), both Go servers under GOPROCS=1, then
// 50 idle connections each. It asserts that every run completed and that every
// column has a figure; it asserts no speed.
func TestBenchLoadScriptSmoke(t *testing.T) {
	for _, tool := range []string{"smtp-source", "smtp-sink", "ss"} {
		clientsNeed(t, tool)
	}
	out := t.TempDir()
	benchScript(t, "load.sh", "ROUNDS=1", "SHAPES=b", "B_MSGS=400", "SESSIONS=4",
		"IDLE_CONNS=50", "GOPROCS=1", "SINK_FLAGS_ALT=-stream", "SHAPE_TIMEOUT=60", "OUT="+out)

	raw, err := os.ReadFile(filepath.Join(out, "raw.txt"))
	require.NoError(t, err)
	require.Contains(t, string(raw), "GOPROCS='1'")
	summary, err := os.ReadFile(filepath.Join(out, "summary.txt"))
	require.NoError(t, err)
	s := string(summary)
	require.Contains(t, s, "shape b: 4 persistent sessions, 1 KiB messages, 400 messages per run")
	// server msgs/s min-max ratio CPU peakRSS anon clientBusy otherLoad ok
	row := `(?m)^%s +\d+ +\d+-\d+ +\d+\.\d\d +\d+ +\d+\.\d +\d+\.\d +\d\.\d\d +\d\.\d\d +1/1$`
	for _, name := range []string{"smtpd", "smtp-sink", "gosmtp", "smtpd-alt"} {
		require.Regexp(t, regexp.MustCompile(strings.Replace(row, "%s", regexp.QuoteMeta(name), 1)), s,
			"%s's row in:\n%s", name, s)
	}
	require.Regexp(t, regexp.MustCompile(`(?m)^smtp-sink +\d+ +\d+-\d+ +1\.00 `), s)
	for _, name := range []string{"smtpd", "gosmtp", "smtpd-alt"} {
		require.Regexp(t, regexp.MustCompile(`(?m)^`+name+` +50 +\d+\.\d +\d+\.\d-\d+\.\d +\d+\.\d\d$`), s,
			"%s's idle-connection row in:\n%s", name, s)
	}
}

// benchScript runs one of bench/'s scripts from the repository's root with env added
// and returns its output.
func benchScript(t *testing.T, script string, env ...string) string {
	t.Helper()
	if testing.Short() && os.Getenv("CI") == "" { // CI runs it always
		t.Skip("builds the sink and runs the bench scripts")
	}
	clientsNeed(t, "bash")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join("bench", script))
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "bench/%s:\n%s", script, out)
	return string(out)
}

// bench/hostile.sh (`make load-hostile`) in miniature: every scenario once, small
// sizes; each leaves the sink alive with the replies it owes.
func TestBenchHostileScriptSmoke(t *testing.T) {
	clientsNeed(t, "ss")
	out := benchScript(t, "hostile.sh", "SESSIONS=2", "LINES=2", "LINE_SIZES=65536",
		"DATA_SESSIONS=2", "DATA_SIZE=1048576", "OUT="+t.TempDir())
	for _, row := range []string{
		`mail: 2 x 2 x 64 KiB params +\d+\.\d +yes +500:4`,
		`auth: 2 x 2 x 64 KiB params +\d+\.\d +yes +500:4`,
		`noop: 2 x 2 x 64 KiB params +\d+\.\d +yes +500:4`,
		`ehlo: 1 x EHLO <64 KiB name> +\d+\.\d +yes +500:1`,
		`data: 2 x 1 MiB message +\d+\.\d +yes +250:2 in sync 2/2`,
	} {
		require.Regexp(t, regexp.MustCompile(`(?m)^`+row+`$`), out)
	}
}

// bench/bigmsg.sh (`make load-big`) in miniature: an 8 MiB stream and a 4 MiB
// buffered message, each all received (bytes) and measured (rate, peak RSS).
func TestBenchBigMessageScriptSmoke(t *testing.T) {
	out := benchScript(t, "bigmsg.sh", "STREAM_SIZE=8388608", "BUFFERED_SIZE=4194304")
	for _, label := range []string{`streamed \(-stream\)`, `buffered, SIZE= declared`, `buffered, no SIZE=`} {
		require.Regexp(t, regexp.MustCompile(`(?m)^`+label+` +bigmsg bytes=\d+ seconds=[\d.]+ mb_per_s=\d+ rss_before_mib=[\d.]+ peak_rss_mib=[\d.]+$`), out)
	}
}
