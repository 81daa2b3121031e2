package milter_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/milter"
)

// BenchmarkMilters measures the cost of a message through no milter, one and two
// milters (go-milter servers on loopback that continue at every event), driven by
// a loopback SMTP client. Compare the msgs/s of the sub-benchmarks of one run.
//
//	go test -run '^$' -bench Milters -benchtime 2s
func BenchmarkMilters(b *testing.B) {
	sizes := map[string]int{"4KiB": 4 << 10, "256KiB": 256 << 10}
	for _, size := range []string{"4KiB", "256KiB"} {
		body := strings.Repeat(strings.Repeat("b", 78)+"\r\n", sizes[size]/80)
		msg := "Subject: bench\r\nFrom: <a@example.org>\r\nTo: <b@example.net>\r\n\r\n" + body
		for _, perSession := range []bool{false, true} {
			for _, n := range []int{0, 1, 2} {
				mode := "session-reused"
				if perSession {
					mode = "session-per-message"
				}
				if perSession && size != "4KiB" {
					continue
				}
				b.Run(fmt.Sprintf("%s/%s/milters=%d", size, mode, n), func(b *testing.B) {
					benchMessages(b, n, msg, perSession)
				})
			}
		}
	}
}

func benchMessages(b *testing.B, n int, msg string, perSession bool) {
	var cfg milter.Config
	for range n {
		cfg.Milters = append(cfg.Milters, milter.Milter{Addr: milterProcess(b)})
	}
	ts := milterServer(b, smtpd.BaseHandler{}, cfg)
	c := greeted(b, ts)
	data := msg + ".\r\n"
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if perSession {
			c.Cmd("QUIT", 221)
			c.Close()
			c = ts.Dial(b)
			c.Expect(220)
			c.Cmd("EHLO client.test", 250)
		}
		c.Cmd("MAIL FROM:<a@example.org>", 250)
		c.Cmd("RCPT TO:<b@example.net>", 250)
		c.Cmd("DATA", 354)
		c.Send(data)
		c.Expect(250)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	c.Cmd("QUIT", 221)
}

// discardStreamer reads and drops each message (a MessageStreamer).
type discardStreamer struct{ smtpd.BaseHandler }

func (discardStreamer) OnMessageStream(_ *smtpd.Session, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// BenchmarkLargeMessageMemory sends 32 MiB messages through one milter to a
// buffering and to a streaming handler and reports the peak heap in use while
// they pass (sampled): the streaming path's stays small (the message is spooled
// to a file), the buffered path's holds the message.
func BenchmarkLargeMessageMemory(b *testing.B) {
	data := []byte("Subject: large\r\n\r\n" + strings.Repeat(strings.Repeat("m", 998)+"\r\n", 32<<10) + ".\r\n")
	for _, variant := range []string{"buffered/milters=0", "buffered/milters=1", "streaming/milters=0", "streaming/milters=1"} {
		var h smtpd.Handler = smtpd.BaseHandler{}
		if strings.HasPrefix(variant, "streaming") {
			h = discardStreamer{}
		}
		b.Run(variant, func(b *testing.B) {
			cfg := milter.Config{TempDir: b.TempDir()}
			if strings.HasSuffix(variant, "=1") {
				cfg.Milters = []milter.Milter{{Addr: milterProcess(b)}}
			}
			ts := milterServer(b, h, cfg, func(s *smtpd.Server) { s.MaxMessageSize = 64 << 20 })
			c := greeted(b, ts)
			runtime.GC()
			var base runtime.MemStats
			runtime.ReadMemStats(&base)
			var peak atomic.Uint64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				var m runtime.MemStats
				for {
					select {
					case <-stop:
						return
					case <-time.After(2 * time.Millisecond):
					}
					runtime.ReadMemStats(&m)
					if m.HeapInuse > peak.Load() {
						peak.Store(m.HeapInuse)
					}
				}
			}()
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				c.Cmd("MAIL FROM:<a@example.org>", 250)
				c.Cmd("RCPT TO:<b@example.net>", 250)
				c.Cmd("DATA", 354)
				if _, err := c.NetConn().Write(data); err != nil { // no string copy in the client
					b.Fatal(err)
				}
				c.Expect(250)
			}
			b.StopTimer()
			close(stop)
			<-sampled
			b.ReportMetric(float64(int64(peak.Load())-int64(base.HeapInuse))/(1<<20), "peak-heap-MiB")
			c.Cmd("QUIT", 221)
		})
	}
}

// milterProcess starts a milter (go-milter's server, continuing at every event,
// allowed every change) in a process of its own — this test binary, running
// TestHelperMilterProcess — so that a benchmark measures this process's side
// only, as in production. It is stopped by PID when the benchmark ends.
func milterProcess(b *testing.B) string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperMilterProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MILTER_HELPER_PROCESS=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "milter listening on "); ok {
			go io.Copy(io.Discard, out)
			return "inet:" + addr
		}
	}
	b.Fatalf("the milter process did not start: %v", sc.Err())
	return ""
}

// TestHelperMilterProcess is not a test of its own: with MILTER_HELPER_PROCESS=1
// (set by milterProcess) it serves a milter until it is killed.
func TestHelperMilterProcess(t *testing.T) {
	if os.Getenv("MILTER_HELPER_PROCESS") != "1" {
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := gomilter.NewServer(gomilter.WithMilter(func() gomilter.Milter { return gomilter.NoOpMilter{} }),
		gomilter.WithActions(gomilter.AllClientSupportedActionMasks&^gomilter.OptSetMacros))
	fmt.Println("milter listening on", l.Addr())
	srv.Serve(l)
}
