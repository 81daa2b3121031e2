// Package testenv starts and drives, on loopback only, the programs that the mailauth tests
// hold the package against: implementations we did not write.
//
//   - Debian's nsd as a private DNS server on 127.0.0.1 and a free high port, serving zone
//     files the test writes (StartNSD), and a DNS server that never answers (StartBlackhole).
//   - DKIM keys made with Go's crypto, written where dkimpy and OpenDKIM read them, with their
//     DNS records (NewKeyring).
//   - Signers: python3-dkim's dkimsign and arcsign, dkimpy's Python API, and OpenDKIM's
//     opendkim-testmsg (Sign).
//   - Oracles, asked about the same message and the same zones (Ask): dkimpy (DKIM, ARC),
//     pyspf (SPF, RFC 7208), OpenDMARC's libopendmarc through ctypes (DMARC, RFC 7489), and a
//     dnspython check of RFC 8601 §3 for iprev.
//
// The Python parts run under Debian's /usr/bin/python3 (the python3-dkim, python3-spf and
// python3-dnspython packages install there, not into any other Python on PATH), one process
// per batch of jobs, reading and writing JSON.
//
// Every helper fails the test when the environment variable CI is set and a program is
// missing, and skips it otherwise. Every process is stopped by its PID at cleanup.
//
// The package is a harness for _test.go files; it does not import mailauth.
package testenv

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// DebianPython is the interpreter the Debian packages python3-dkim, python3-spf,
// python3-dnspython, python3-nacl and python3-authres install their modules for.
const DebianPython = "/usr/bin/python3"

//go:embed scripts/*.py
var scripts embed.FS

// Missing ends the test because an outside program or module is not there: t.Fatal when
// the environment variable CI is set (CI must have every tool), t.Skip otherwise.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set and a tool is missing: %s", msg)
	}
	t.Skipf("skipped, a tool is missing: %s", msg)
}

// Need returns the path of the program prog (looked up on PATH, then in /usr/sbin and
// /sbin, where Debian puts daemons), or ends the test through Missing.
func Need(t testing.TB, prog string) string {
	t.Helper()
	if p, err := exec.LookPath(prog); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, prog)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	Missing(t, "program %s (Debian package: %s)", prog, debianPackage(prog))
	return ""
}

// debianPackage names the package that ships prog, for the message of Missing.
func debianPackage(prog string) string {
	switch prog {
	case "nsd":
		return "nsd"
	case "dkimsign", "arcsign":
		return "python3-dkim"
	case "opendkim-testmsg":
		return "opendkim-tools"
	}
	return "?"
}

// pythonCheck is the import line that proves the Debian modules and libopendmarc are there.
const pythonCheck = `import dkim, spf, dns.resolver, nacl.signing, authres, ctypes; ctypes.CDLL("libopendmarc.so.2")`

var pythonOnce = sync.OnceValue(func() error {
	if _, err := os.Stat(DebianPython); err != nil {
		return err
	}
	out, err := exec.Command(DebianPython, "-c", pythonCheck).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
	}
	return nil
})

// NeedPython returns DebianPython once it imports dkimpy, pyspf, dnspython, PyNaCl and
// authres and loads libopendmarc.so.2, or ends the test through Missing.
func NeedPython(t testing.TB) string {
	t.Helper()
	if err := pythonOnce(); err != nil {
		Missing(t, "Debian's python3 with python3-dkim python3-spf python3-dnspython python3-nacl python3-authres and libopendmarc2 (apt-get install python3-dkim python3-spf python3-dnspython python3-nacl python3-authres libopendmarc2): %v", err)
	}
	return DebianPython
}

// runScript runs the embedded Python script name, after scripts/common.py, under
// DebianPython with in as JSON on its standard input and decodes its standard output, JSON, into out. env adds variables.
func runScript(ctx context.Context, t testing.TB, name string, env []string, in, out any) error {
	t.Helper()
	py := NeedPython(t)
	common, err := scripts.ReadFile("scripts/common.py")
	if err != nil {
		return err
	}
	src, err := scripts.ReadFile("scripts/" + name)
	if err != nil {
		return err
	}
	input, err := json.Marshal(in)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, py, "-c", string(common)+"\n"+string(src))
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = bytes.NewReader(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("python %s: %v\n%s", name, err, tail(stderr.String(), 4000))
	}
	t.Logf("python %s: %d bytes of JSON in, %d out, %v", name, len(input), stdout.Len(), time.Since(start).Round(time.Millisecond))
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("python %s: decoding its answer: %v\n%s", name, err, tail(stderr.String(), 4000))
	}
	return nil
}

// logSlowest logs the three jobs that took longest, to keep the suite fast.
func logSlowest(t testing.TB, what string, ms map[string]int) {
	t.Helper()
	ids := make([]string, 0, len(ms))
	for id := range ms {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int { return ms[b] - ms[a] })
	var parts []string
	for _, id := range ids[:min(3, len(ids))] {
		parts = append(parts, fmt.Sprintf("%s %d ms", id, ms[id]))
	}
	t.Logf("slowest for %s: %s", what, strings.Join(parts, ", "))
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// quoteTXT renders text as the character-strings of a TXT record in zone-file syntax:
// quoted, split every 255 bytes, with '"' and '\' escaped.
func quoteTXT(text string) string {
	var b strings.Builder
	for first := true; first || text != ""; first = false {
		n := min(len(text), 255)
		chunk := text[:n]
		text = text[n:]
		if !first {
			b.WriteByte(' ')
		}
		b.WriteByte('"')
		for i := 0; i < len(chunk); i++ {
			c := chunk[i]
			switch {
			case c == '"' || c == '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case c < 0x20 || c > 0x7e:
				fmt.Fprintf(&b, "\\%03d", c)
			default:
				b.WriteByte(c)
			}
		}
		b.WriteByte('"')
	}
	return b.String()
}
