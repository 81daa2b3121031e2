package milter_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/midismtp/smtpd"
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
	var ms []*scripted
	for range n {
		ms = append(ms, startScripted(b, scriptedOpts{quiet: true}, nil))
	}
	ts := milterServer(b, smtpd.BaseHandler{}, milters(ms...))
	c := ts.Dial(b)
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
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
		c.Send(msg + ".\r\n")
		c.Expect(250)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	c.Cmd("QUIT", 221)
}
