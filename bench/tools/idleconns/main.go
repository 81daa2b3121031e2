// Command idleconns measures a server's memory per idle SMTP connection.
//
// It reads the server's VmRSS from /proc/PID/status, opens -n connections to
// -addr one after another and reads each one's 220 greeting, then sends nothing
// more: every connection sits where a client is before EHLO. After -settle it
// reads VmRSS and VmHWM again, closes the connections and prints one line:
//
//	idle label=smtpd conns=1000 rss_before_kb=9000 rss_after_kb=29000 kib_per_conn=20.0 hwm_kb=29500 open_secs=0.41 failed=0
//
// kib_per_conn = (rss_after_kb - rss_before_kb) / conns. Use a fresh server with
// nothing else connected, allowed to greet -n clients at once (examples/sink:
// -max-processings above -n). Loopback only. It exits 1 if any connection or
// greeting failed (the figures printed then cover the connections that worked).
//
//	go run . -addr 127.0.0.1:12541 -pid 1234 -n 10000
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"smtpd-bench/tools/internal/proc"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:12541", "`host:port` of the server (loopback only)")
	pid := flag.Int("pid", 0, "process id of the server (required)")
	n := flag.Int("n", 1000, "idle connections to open (1..50000)")
	settle := flag.Duration("settle", time.Second, "wait before reading the server's memory")
	timeout := flag.Duration("timeout", 5*time.Second, "time limit for each connect and greeting")
	label := flag.String("label", "", "name printed in the result line (default: -addr)")
	flag.Parse()
	if *label == "" {
		*label = *addr
	}
	if err := check(*addr, *pid, *n); err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(2)
	}
	if lim, err := proc.RaiseFiles(uint64(*n) + 64); err != nil || lim < uint64(*n)+16 {
		fmt.Fprintf(os.Stderr, "idleconns: open-file limit %d is too low for %d connections (%v); raise the hard limit (ulimit -Hn)\n", lim, *n, err)
		os.Exit(2)
	}

	before, err := proc.StatusKB(*pid, "VmRSS")
	if err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(2)
	}
	conns := make([]net.Conn, 0, *n)
	failed := 0
	var firstErr error
	start := time.Now()
	for range *n {
		c, err := open(*addr, *timeout)
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		conns = append(conns, c)
	}
	openSecs := time.Since(start).Seconds()
	time.Sleep(*settle)
	after, err1 := proc.StatusKB(*pid, "VmRSS")
	hwm, err2 := proc.StatusKB(*pid, "VmHWM")
	for _, c := range conns {
		c.Close()
	}
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintln(os.Stderr, "idleconns: the server is gone:", err)
		os.Exit(1)
	}
	per := 0.0
	if len(conns) > 0 {
		per = float64(after-before) / float64(len(conns))
	}
	fmt.Printf("idle label=%s conns=%d rss_before_kb=%d rss_after_kb=%d kib_per_conn=%.1f hwm_kb=%d open_secs=%.2f failed=%d\n",
		*label, len(conns), before, after, per, hwm, openSecs, failed)
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "idleconns: %d of %d connections failed; first: %v\n", failed, *n, firstErr)
		os.Exit(1)
	}
}

func check(addr string, pid, n int) error {
	if err := proc.Loopback(addr); err != nil {
		return err
	}
	if pid <= 0 {
		return errors.New("-pid is required")
	}
	if n < 1 || n > 50000 {
		return errors.New("-n must be 1..50000")
	}
	return nil
}

// open connects and reads the greeting up to its last line ("220 ...").
func open(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	r := bufio.NewReaderSize(c, 512)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("greeting: %w", err)
		}
		if !strings.HasPrefix(line, "220") {
			c.Close()
			return nil, fmt.Errorf("greeting: %q", strings.TrimSpace(line))
		}
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	c.SetReadDeadline(time.Time{})
	return c, nil
}
