package smtpd

import (
	"bufio"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// benchClient is a minimal SMTP client for benchmarks: no testify in the hot loop,
// replies read with ReadSlice so the client side allocates next to nothing.
type benchClient struct {
	b    *testing.B
	conn net.Conn
	r    *bufio.Reader
}

func benchDial(b *testing.B, addr string) *benchClient {
	b.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	c := &benchClient{b: b, conn: conn, r: bufio.NewReaderSize(conn, 4096)}
	c.expect(220)
	c.write([]byte("EHLO bench.example\r\n"))
	c.expect(250)
	return c
}

func (c *benchClient) write(p []byte) {
	if _, err := c.conn.Write(p); err != nil {
		c.b.Fatal(err)
	}
}

// expect reads one reply (all its lines) and fails unless its code is code.
func (c *benchClient) expect(code int) {
	want := strconv.Itoa(code)
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			c.b.Fatalf("reading a reply: %v", err)
		}
		if len(line) < 4 || string(line[:3]) != want {
			c.b.Fatalf("want %d, got %q", code, line)
		}
		if line[3] == ' ' {
			return
		}
	}
}

// The envelope and DATA command lines of the benchmarks' transactions.
var (
	benchMail = []byte("MAIL FROM:<a@example.org>\r\n")
	benchRcpt = []byte("RCPT TO:<b@example.org>\r\n")
	benchData = []byte("DATA\r\n")
)

// lockstepTransaction writes MAIL, RCPT, DATA and the message (wire, stuffed and
// ending in ".\r\n") one by one, each after the reply to the one before, as a
// client without PIPELINING does.
func (c *benchClient) lockstepTransaction(wire []byte) {
	c.write(benchMail)
	c.expect(250)
	c.write(benchRcpt)
	c.expect(250)
	c.write(benchData)
	c.expect(354)
	c.write(wire)
	c.expect(250)
}

// pipelinedTransaction writes MAIL, RCPT, DATA and the message in one request and
// reads their four replies.
func (c *benchClient) pipelinedTransaction(req []byte) {
	c.write(req)
	c.expect(250)
	c.expect(250)
	c.expect(354)
	c.expect(250)
}

func (c *benchClient) quit() {
	c.write([]byte("QUIT\r\n"))
	c.expect(221)
}

// benchMessage is a message of about size bytes: headers, then 76-character lines,
// every 10th of them starting with a dot (stuffed on the wire). It returns the wire
// form (stuffed, with the final ".\r\n") and the message length after unstuffing.
func benchMessage(size int) (wire []byte, msgLen int) {
	var w strings.Builder
	w.WriteString("From: <a@example.org>\r\nTo: <b@example.org>\r\nSubject: benchmark\r\n\r\n")
	msgLen = w.Len()
	const text = "The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstu"
	for i := 0; msgLen < size; i++ {
		if i%10 == 9 {
			w.WriteString(".." + text[1:] + "\r\n")
		} else {
			w.WriteString(text + "\r\n")
		}
		msgLen += len(text) + 2
	}
	w.WriteString(".\r\n")
	return []byte(w.String()), msgLen
}

// BenchmarkDataReader measures the DATA path (line reading, terminator test,
// dot-unstuffing, line-end handling, storing) for 1 MiB messages over one loopback
// connection, in each CRLF mode. MB/s counts message bytes.
func BenchmarkDataReader(b *testing.B) {
	wire, msgLen := benchMessage(1 << 20)
	envelope := []byte("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
	req := append(append([]byte(nil), envelope...), wire...)
	for _, mode := range smugModes {
		b.Run(mode.String(), func(b *testing.B) {
			addr := serve(b, &Server{CRLFMode: mode, Pipelining: true})
			c := benchDial(b, addr)
			b.SetBytes(int64(msgLen))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c.pipelinedTransaction(req)
			}
			b.StopTimer()
			c.quit()
		})
	}
}

// BenchmarkTransaction measures a whole small transaction (MAIL, RCPT, DATA, a
// 1 KiB message, 250) over one loopback connection: "lockstep" waits for every
// reply as a client without PIPELINING does; "pipelined" sends the envelope, DATA
// and the message in one write (RFC 2920). Allocations are the client's and the
// in-process server's together.
func BenchmarkTransaction(b *testing.B) {
	wire, _ := benchMessage(1 << 10)
	b.Run("lockstep", func(b *testing.B) {
		c := benchDial(b, serve(b, &Server{}))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c.lockstepTransaction(wire)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		c.quit()
	})
	b.Run("pipelined", func(b *testing.B) {
		c := benchDial(b, serve(b, &Server{Pipelining: true}))
		req := append(append(append(append([]byte(nil), benchMail...), benchRcpt...), benchData...), wire...)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c.pipelinedTransaction(req)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		c.quit()
	})
}

// TestBenchMessage checks the benchmark's message generator: its wire form
// unstuffs to a message of the announced length, so MB/s is computed right.
func TestBenchMessage(t *testing.T) {
	wire, n := benchMessage(1 << 10)
	h := newSmugHandler()
	addr := serve(t, &Server{Handler: h})
	c := dialGreeted(t, addr)
	c.cmd("EHLO bench.example", 250)
	c.cmd("MAIL FROM:<a@example.org>", 250)
	c.cmd("RCPT TO:<b@example.org>", 250)
	c.cmd("DATA", 354)
	c.send(string(wire))
	c.expect(250)
	c.cmd("QUIT", 221)
	got := h.take("bench.example")
	require.Len(t, got, 1)
	require.Len(t, got[0].Data, n)
	require.Contains(t, got[0].Data, "\r\n.he quick", "stuffed lines are unstuffed")
	require.GreaterOrEqual(t, n, 1<<10)
}

// BenchmarkConnection is shape a of make load: a new connection per 1 KiB message
// (banner, EHLO, MAIL, RCPT, DATA, QUIT), in lockstep.
func BenchmarkConnection(b *testing.B) {
	wire, _ := benchMessage(1 << 10)
	addr := serve(b, &Server{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := benchDial(b, addr)
		c.lockstepTransaction(wire)
		c.quit()
		c.conn.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
