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

	"github.com/midismtp/smtpd/internal/testenv"
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

// BenchmarkReceiveSigned is BenchmarkReceive's comparison with real DNS work:
// mx asks nsd (SPF record, DKIM key, DMARC policy, PTR) and verifies the
// rsa-2048 DKIM signature dkimpy made (mailauth's full check, all passing), on
// a 10 KiB and a 1 MiB message; the sink stores the same messages.
//
//	go test -run '^$' -bench ReceiveSigned -benchtime 2000x
func BenchmarkReceiveSigned(b *testing.B) {
	kr := testenv.NewKeyring(b)
	example := testenv.Zone{Origin: "example.test."}
	example.TXT("@", "v=spf1 ip4:127.0.0.1 -all").TXT("_dmarc", "v=DMARC1; p=reject").
		TXT("s1._domainkey", kr.RSA2048.Record()).Add("mail", "A", "127.0.0.1")
	rev := testenv.Zone{Origin: "127.in-addr.arpa."}
	rev.Add("1.0.0", "PTR", "mail.example.test.")
	nsd := testenv.StartNSD(b, example, rev, testenv.Zone{Origin: "client.test."}, testenv.Zone{Origin: "dest.test."})
	sink := buildSink(b)
	for _, size := range []int{10 << 10, 1 << 20} {
		signed := testenv.Sign(b, nsd.Addr, []testenv.SignJob{{ID: "m", Message: []byte(benchMessage(size)),
			Steps: []testenv.Step{testenv.DKIM(kr.RSA2048, "s1", "example.test")}}})["m"]
		msg := string(signed)
		b.Run(fmt.Sprintf("size=%dKiB/sink", size>>10), func(b *testing.B) {
			benchServer(b, msg, sink, "-stream", "-quiet", "-ports", "0", "-out", b.TempDir())
		})
		b.Run(fmt.Sprintf("size=%dKiB/mx", size>>10), func(b *testing.B) {
			out := b.TempDir()
			benchServer(b, msg, buildMX(b), "-ports", "0", "-out", out, "-authserv-id", "mx.test", "-resolver", nsd.Addr)
			checkAllPass(b, out)
		})
	}
}

// checkAllPass fails the benchmark unless a message stored in dir passed SPF,
// DKIM, DMARC and iprev: the benchmark measured the full check.
func checkAllPass(b *testing.B, dir string) {
	b.Helper()
	for _, m := range messages(b, dir) {
		for _, want := range []string{"spf=pass", "dkim=pass", "dmarc=pass", "iprev=pass"} {
			if !strings.Contains(m.Rec.AuthResults, want) {
				b.Fatalf("auth_results lacks %s: %s", want, m.Rec.AuthResults)
			}
		}
		return
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
