// Command bigmsg sends one large message (default 1 GiB) to an SMTP server on
// loopback in DATA, timing it, and reports the server's peak RSS (VmHWM) and its
// growth over the idle baseline: the check that a streaming server holds a message
// of any size in bounded memory.
//
//	bigmsg -addr 127.0.0.1:12547 -pid PID -size 1073741824
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"strings"
	"time"

	"smtpd-bench/tools/internal/proc"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:12547", "server `host:port` (loopback only)")
	pid := flag.Int("pid", 0, "server `PID`, for its memory figures")
	size := flag.Int64("size", 1<<30, "message size in `bytes`")
	declare := flag.Bool("declare", false, "declare the size with MAIL FROM SIZE= (RFC 1870)")
	flag.Parse()
	if err := run(*addr, *pid, *size, *declare); err != nil {
		fmt.Fprintln(os.Stderr, "bigmsg:", err)
		os.Exit(1)
	}
}

func run(addr string, pid int, size int64, declare bool) error {
	if err := proc.Loopback(addr); err != nil {
		return err
	}
	before, err := proc.StatusKB(pid, "VmRSS")
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	r := textproto.NewReader(bufio.NewReader(c))
	w := bufio.NewWriterSize(c, 256<<10)
	// expect reads one reply, all its lines, and wants it to have code.
	expect := func(code int) error {
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		if _, _, err := r.ReadResponse(code); err != nil {
			return fmt.Errorf("want %d: %w", code, err)
		}
		return nil
	}
	cmd := func(line string, code int) error {
		fmt.Fprintf(w, "%s\r\n", line)
		if err := w.Flush(); err != nil {
			return err
		}
		return expect(code)
	}
	if err := expect(220); err != nil {
		return err
	}
	mail := "MAIL FROM:<big@example.org>"
	if declare {
		mail += fmt.Sprintf(" SIZE=%d", size)
	}
	for _, step := range []struct {
		line string
		code int
	}{{"EHLO bigmsg.example", 250}, {mail, 250}, {"RCPT TO:<sink@example.org>", 250}, {"DATA", 354}} {
		if err := cmd(step.line, step.code); err != nil {
			return fmt.Errorf("%s: %w", step.line, err)
		}
	}
	line := []byte(strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 17)[:998] + "\r\n")
	start := time.Now()
	w.WriteString("Subject: big\r\n\r\n")
	var sent int64
	for sent < size {
		n, err := w.Write(line)
		if err != nil {
			return err
		}
		sent += int64(n)
	}
	if err := cmd(".", 250); err != nil {
		return fmt.Errorf("final dot: %w", err)
	}
	took := time.Since(start)
	cmd("QUIT", 221)
	hwm, err := proc.StatusKB(pid, "VmHWM")
	if err != nil {
		return err
	}
	fmt.Printf("bigmsg bytes=%d seconds=%.2f mb_per_s=%.0f rss_before_mib=%.1f peak_rss_mib=%.1f\n",
		sent, took.Seconds(), float64(sent)/took.Seconds()/1e6, float64(before)/1024, float64(hwm)/1024)
	return nil
}
