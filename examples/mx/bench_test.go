package main

import (
	"bufio"
	"errors"
	"fmt"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkReceive measures what mx's chain costs against the plain sink
// (examples/sink -stream -out, the same streaming into .eml and .json files) on
// the same messages: the server process's CPU time per message (from
// /proc/PID/stat) and messages per second over 4 connections, for a 10 KiB and a
// 1 MiB message. mx runs with a resolver that refuses at once (no DNS work; the
// e2e benchmark with nsd adds real lookups and DKIM) and with one milter (the
// tests' go-milter, in this process: its CPU is not counted).
//
//	go test -run '^$' -bench Receive -benchtime 2000x
func BenchmarkReceive(b *testing.B) {
	sink := buildSink(b)
	for _, size := range []int{10 << 10, 1 << 20} {
		msg := benchMessage(size)
		b.Run(fmt.Sprintf("size=%dKiB/sink", size>>10), func(b *testing.B) {
			benchServer(b, msg, sink, "-stream", "-quiet", "-ports", "0", "-out", b.TempDir())
		})
		b.Run(fmt.Sprintf("size=%dKiB/mx", size>>10), func(b *testing.B) {
			benchServer(b, msg, buildMX(b), mxBenchArgs(b)...)
		})
		b.Run(fmt.Sprintf("size=%dKiB/mx+milter", size>>10), func(b *testing.B) {
			tm := startTestMilter(b, 0, nil)
			benchServer(b, msg, buildMX(b), append(mxBenchArgs(b), "-milter", tm.Addr)...)
		})
	}
}

// mxBenchArgs are mx's flags for a benchmark.
func mxBenchArgs(b *testing.B) []string {
	return []string{"-ports", "0", "-out", b.TempDir(), "-authserv-id", "mx.test", "-resolver", deadDNS(b)}
}

// benchMessage is a message of about size bytes.
func benchMessage(size int) string {
	var sb strings.Builder
	sb.WriteString(plainMessage)
	for sb.Len() < size {
		sb.WriteString("The quick brown fox jumps over the lazy dog, and then over the lazy dog again.\r\n")
	}
	return sb.String()
}

// buildSink builds examples/sink (a package of the smtpd module, which this
// module requires) once.
func buildSink(b *testing.B) string {
	b.Helper()
	path := filepath.Join(filepath.Dir(buildMX(b)), "sink")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	cmd := exec.Command("go", "build", "-o", path, "github.com/midismtp/smtpd/examples/sink")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build sink: %v\n%s", err, out)
	}
	return path
}

// benchServer starts the program with args, sends b.N messages over 4
// connections and reports msgs/s and the server's CPU µs per message.
func benchServer(b *testing.B, msg, prog string, args ...string) {
	cmd := exec.Command(prog, args...)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	var addr string
	for addr == "" && sc.Scan() {
		addr, _ = strings.CutPrefix(sc.Text(), "listening on ")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	const conns = 4
	cpu0 := processCPU(b, cmd.Process.Pid)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		n := b.N / conns
		if i < b.N%conns {
			n++
		}
		wg.Go(func() { errs <- sendMany(addr, msg, n) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	cpu := processCPU(b, cmd.Process.Pid) - cpu0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "server-cpu-µs/msg")
}

// sendMany sends msg n times over one SMTP connection.
func sendMany(addr, msg string, n int) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	for range n {
		if err := c.Mail("alice@example.test"); err != nil {
			return err
		}
		if err := c.Rcpt("bob@dest.test"); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		if _, err := w.Write([]byte(msg)); err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	return c.Quit()
}

// processCPU returns the user and system CPU time of the process pid.
func processCPU(b *testing.B, pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	_, rest, ok := strings.Cut(string(stat), ") ") // after the command name, which may hold spaces
	fields := strings.Fields(rest)
	if !ok || len(fields) < 13 {
		b.Fatal(errors.New("unreadable /proc stat"))
	}
	utime, _ := strconv.Atoi(fields[11])
	stime, _ := strconv.Atoi(fields[12])
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}
