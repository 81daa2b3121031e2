// Command hostile sends one hostile-input scenario to an SMTP server on loopback
// and reports the server's peak memory growth and the replies it got.
//
// Scenarios (-scenario):
//
//	mail  -sessions parallel sessions, each sends EHLO and then -lines command
//	      lines "MAIL FROM:<a@example.org> a a a ..." with -size bytes of " a"
//	auth  the same with "AUTH PLAIN w w w ..." (-size bytes of space-separated words;
//	      the server should offer AUTH without TLS)
//	noop  the same with "NOOP xxx..." (-size bytes of x)
//	ehlo  one session sends one "EHLO <-size bytes name>" line
//	data  -sessions parallel sessions each send one message of -msg-size bytes
//	      (EHLO, MAIL, RCPT, DATA, body, "."), then RSET to check that the session
//	      is still in step (its reply is 250 and nothing else follows)
//
// Every session reads the reply to each line it sends; the server may close the
// connection. Replies are counted by code; "close" counts connections the server
// closed (or reset) before a reply, "timeout" lines that got no reply in -wait.
//
// Before the scenario it reads the server's VmHWM from /proc/PID/status (the
// idle baseline; give a fresh server), after it VmHWM again, and prints one line:
//
//	scenario=mail sessions=16 base_kb=9000 hwm_kb=60000 growth_mib=49.8 replies=500:16,close:16 secs=1.2 [in_sync=6/6]
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"smtpd-bench/tools/internal/proc"
)

var (
	addr    = flag.String("addr", "127.0.0.1:12546", "`host:port` of the server (loopback only)")
	pid     = flag.Int("pid", 0, "process id of the server, for its memory figures (0: none)")
	wait    = flag.Duration("wait", 30*time.Second, "time limit for a write or a reply")
	verbose = flag.Bool("v", false, "print each session's transcript summary on stderr")
)

func main() {
	scenario := flag.String("scenario", "", "mail, auth, noop, ehlo or data")
	sessions := flag.Int("sessions", 16, "parallel sessions (mail, auth, noop, data)")
	lines := flag.Int("lines", 8, "hostile lines per session (mail, auth, noop)")
	size := flag.Int("size", 1<<20, "bytes of hostile parameters per line")
	msgSize := flag.Int("msg-size", 30<<20, "message size in bytes (data)")
	flag.Parse()
	if err := proc.Loopback(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(2)
	}

	var run func() *tally
	switch *scenario {
	case "mail":
		run = func() *tally {
			return commandLines(*sessions, *lines, "MAIL FROM:<a@example.org>", repeatTo(" a", *size))
		}
	case "auth":
		run = func() *tally { return commandLines(*sessions, *lines, "AUTH PLAIN", words(*size)) }
	case "noop":
		run = func() *tally { return commandLines(*sessions, *lines, "NOOP ", repeatTo("x", *size)) }
	case "ehlo":
		run = func() *tally { return ehlo(*size) }
	case "data":
		run = func() *tally { return bigMessages(*sessions, *msgSize) }
	default:
		fmt.Fprintln(os.Stderr, "hostile: -scenario must be mail, auth, noop, ehlo or data")
		os.Exit(2)
	}

	base := hwm()
	start := time.Now()
	t := run()
	secs := time.Since(start).Seconds()
	time.Sleep(200 * time.Millisecond)
	peak := hwm()
	growth := "NA"
	if base >= 0 && peak >= 0 {
		growth = fmt.Sprintf("%.1f", float64(peak-base)/1024)
	}
	n := *sessions
	if *scenario == "ehlo" {
		n = 1
	}
	fmt.Printf("scenario=%s sessions=%d base_kb=%d hwm_kb=%d growth_mib=%s replies=%s secs=%.2f",
		*scenario, n, base, peak, growth, t.String(), secs)
	if *scenario == "data" {
		fmt.Printf(" in_sync=%d/%d", t.inSync, n)
	}
	fmt.Println()
}

// hwm returns the server's VmHWM in KiB, or -1.
func hwm() int64 {
	if *pid <= 0 {
		return -1
	}
	v, err := proc.StatusKB(*pid, "VmHWM")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		return -1
	}
	return v
}

// tally counts outcomes by reply code, "close" and "timeout".
type tally struct {
	mu     sync.Mutex
	counts map[string]int
	inSync int
}

func (t *tally) add(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts == nil {
		t.counts = map[string]int{}
	}
	t.counts[key]++
}

// synced counts a session that ended in step.
func (t *tally) synced() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.inSync++
}

func (t *tally) String() string {
	keys := make([]string, 0, len(t.counts))
	for k := range t.counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, t.counts[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// reply is one complete SMTP reply, or the error that ended the reading.
type reply struct {
	code string
	text string // first line, shortened
	err  error
}

// session is a connection whose replies a goroutine reads as they come, so a
// reply the server sends before it has read the whole line is not lost.
type session struct {
	c       net.Conn
	replies chan reply
}

func dial() (*session, error) {
	c, err := net.DialTimeout("tcp", *addr, *wait)
	if err != nil {
		return nil, err
	}
	s := &session{c: c, replies: make(chan reply, 64)}
	go s.read()
	return s, nil
}

func (s *session) read() {
	defer close(s.replies)
	r := bufio.NewReaderSize(s.c, 4096)
	for {
		var first string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				s.replies <- reply{err: err}
				return
			}
			if first == "" {
				first = strings.TrimRight(line, "\r\n")
			}
			if len(line) < 4 || line[3] != '-' {
				break
			}
		}
		code := first
		if len(code) > 3 {
			code = code[:3]
		}
		text := first
		if len(text) > 80 {
			text = text[:80] + "..."
		}
		s.replies <- reply{code: code, text: text}
	}
}

// next waits up to d for the next reply. It returns the outcome's tally key:
// the code, "close" or "timeout".
func (s *session) next(d time.Duration) (reply, string) {
	select {
	case r, ok := <-s.replies:
		if !ok || r.err != nil {
			return r, "close"
		}
		return r, r.code
	case <-time.After(d):
		return reply{}, "timeout"
	}
}

// write sends p; false when the connection broke or the write timed out.
func (s *session) write(p []byte) bool {
	s.c.SetWriteDeadline(time.Now().Add(*wait))
	_, err := s.c.Write(p)
	return err == nil
}

// send writes p and returns the outcome of the reply to it. When the write fails,
// a reply that arrived before the server closed still counts.
func (s *session) send(p []byte) (reply, string) {
	if !s.write(p) {
		r, key := s.next(2 * time.Second)
		if key == "timeout" {
			key = "close"
		}
		return r, key
	}
	return s.next(*wait)
}

// quiet reports whether nothing more arrives within d (true also on close).
func (s *session) quiet(d time.Duration) bool {
	select {
	case r, ok := <-s.replies:
		return !ok || r.err != nil
	case <-time.After(d):
		return true
	}
}

func (s *session) close() { s.c.Close() }

// banner dials the server and reads its 220 banner. When either fails it tallies
// "connect-failed" or "greet-failed" and returns nil.
func banner(t *tally) *session {
	s, err := dial()
	if err != nil {
		t.add("connect-failed")
		return nil
	}
	if _, key := s.next(*wait); key != "220" {
		s.close()
		t.add("greet-failed")
		return nil
	}
	return s
}

// parallel runs sessions sessions at once, each on its own connection: banner,
// then EHLO, then body (i numbers the session). A session whose EHLO is not
// answered 250 tallies "greet-failed" and runs no body.
func parallel(sessions int, t *tally, body func(i int, s *session)) {
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Go(func() {
			s := banner(t)
			if s == nil {
				return
			}
			defer s.close()
			if _, key := s.send([]byte("EHLO client.example.org\r\n")); key != "250" {
				t.add("greet-failed")
				return
			}
			body(i, s)
		})
	}
	wg.Wait()
}

func repeatTo(unit string, size int) []byte {
	return bytes.Repeat([]byte(unit), max(1, size/len(unit)))
}

// words returns about size bytes of space-separated short words.
func words(size int) []byte {
	b := make([]byte, 0, size+16)
	for i := 0; len(b) < size; i++ {
		b = fmt.Appendf(b, " w%d", i%1000)
	}
	return b
}

// commandLines runs sessions in parallel, each sending n lines prefix+params+CRLF.
func commandLines(sessions, n int, prefix string, params []byte) *tally {
	line := make([]byte, 0, len(prefix)+len(params)+2)
	line = append(append(append(line, prefix...), params...), "\r\n"...)
	t := &tally{}
	parallel(sessions, t, func(i int, s *session) {
		var seen []string
		for range n {
			r, key := s.send(line)
			t.add(key)
			seen = append(seen, key)
			if key == "close" || key == "timeout" {
				break
			}
			if *verbose && len(seen) == 1 {
				fmt.Fprintf(os.Stderr, "session %d first reply: %s\n", i, r.text)
			}
		}
		if *verbose {
			fmt.Fprintf(os.Stderr, "session %d: %s\n", i, strings.Join(seen, " "))
		}
	})
	return t
}

// ehlo sends one EHLO line with a size-byte name.
func ehlo(size int) *tally {
	t := &tally{}
	s := banner(t)
	if s == nil {
		return t
	}
	defer s.close()
	line := append(append([]byte("EHLO "), repeatTo("h", size)...), "\r\n"...)
	r, key := s.send(line)
	t.add(key)
	if *verbose {
		fmt.Fprintf(os.Stderr, "EHLO reply: %s\n", r.text)
	}
	return t
}

// body returns a message of about size bytes: a few headers, then 76-character
// lines.
func body(size int) []byte {
	b := make([]byte, 0, size+128)
	b = append(b, "From: <a@example.org>\r\nTo: <b@example.org>\r\nSubject: big\r\n\r\n"...)
	line := append(bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz"), 3)[:76], "\r\n"...)
	for len(b) < size {
		b = append(b, line...)
	}
	return append(b, ".\r\n"...)
}

// bigMessages runs sessions in parallel, each sending one size-byte message and
// then RSET to check that it is still in step.
func bigMessages(sessions, size int) *tally {
	msg := body(size)
	t := &tally{}
	parallel(sessions, t, func(i int, s *session) {
		for _, cmd := range []string{"MAIL FROM:<a@example.org>\r\n", "RCPT TO:<b@example.org>\r\n"} {
			if _, key := s.send([]byte(cmd)); key != "250" {
				t.add(strings.Fields(cmd)[0] + "-" + key)
				return
			}
		}
		if _, key := s.send([]byte("DATA\r\n")); key != "354" {
			t.add("DATA-" + key)
			return
		}
		r, key := s.send(msg)
		t.add(key)
		if key == "close" || key == "timeout" {
			return
		}
		r2, key2 := s.send([]byte("RSET\r\n"))
		inStep := key2 == "250" && s.quiet(300*time.Millisecond)
		if inStep {
			t.synced()
		}
		if *verbose {
			fmt.Fprintf(os.Stderr, "session %d: message %s, RSET %s, in sync %v\n", i, r.text, r2.text, inStep)
		}
	})
	return t
}
