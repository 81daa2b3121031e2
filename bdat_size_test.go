package smtpd

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBdatOverMaxMessageSizeAcrossChunks: chunks that together pass MaxMessageSize
// get 552 at the chunk that passes it, its octets read and discarded in bounded
// memory (nothing of them stored, the buffered-data budget given back); later chunks
// get 503 and the session stays in sync.
func TestBdatOverMaxMessageSizeAcrossChunks(t *testing.T) {
	const mib = 1 << 20
	var mu sync.Mutex
	peak := int64(0)
	h := newBdatHandler()
	// MaxBufferedData above what a 2 MiB message needs while its buffer grows (both
	// buffers count during a copy), far below what storing the refused octets would.
	srv := &Server{Handler: h, Chunking: true, MaxMessageSize: 2 * mib, MaxBufferedData: 5 * mib}
	h.dataRecv = func(s *Session) error {
		mu.Lock()
		peak = max(peak, srv.buffered.used.Load(), int64(cap(s.Message.Data)))
		mu.Unlock()
		return nil
	}
	addr := serve(t, srv)
	line := strings.Repeat("x", 1022) + "\r\n"
	chunk := strings.Repeat(line, mib/len(line)) // 1 MiB of whole lines
	require.Len(t, chunk, mib)

	for _, tc := range []struct {
		name   string
		chunks int
		want   []int
	}{
		{"4 chunks of 1 MiB, limit 2 MiB", 4, []int{250, 250, 552, 503}},
		{"3 chunks of 1 MiB, third LAST", 3, []int{250, 250, 552}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			helo := bdatHelo()
			c := bdatTransaction(t, addr, helo)
			done := make(chan struct{})
			go func() { // write while the replies are read
				defer close(done)
				for i := 0; i < tc.chunks; i++ {
					c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.conn.Write([]byte(bdatCmd(mib, i == tc.chunks-1) + chunk)); err != nil {
						return
					}
				}
			}()
			var got []int
			for range tc.want {
				got = append(got, c.bdatReplyOf().Code)
			}
			<-done
			require.Equal(t, tc.want, got)
			require.Zero(t, srv.buffered.used.Load(), "the refused message's buffer was given back")
			c.bdatRetryDelivers(h, helo, "small\r\n", "only the small message")
		})
	}
	mu.Lock()
	defer mu.Unlock()
	require.LessOrEqual(t, peak, int64(5*mib), "memory held for a message stays near MaxMessageSize")
}

// TestBdatExpandingChunkOverMaxMessageSize: under CRLFEnsure a chunk of bare LFs
// grows when stored; a chunk whose announced size fits but whose stored size passes
// MaxMessageSize is refused with 552 at that chunk, and the session stays in sync.
func TestBdatExpandingChunkOverMaxMessageSize(t *testing.T) {
	h := newBdatHandler()
	addr, _ := bdatServe(t, h, func(s *Server) { s.MaxMessageSize = 30 })
	helo := bdatHelo()
	c := bdatTransaction(t, addr, helo)
	lf := strings.Repeat("\n", 20) // 20 octets, 40 stored
	c.send(bdatCmd(len(lf), false) + lf + bdatCmd(3, true) + "x\r\n")
	require.Equal(t, bdatReply{552, protoText552}, c.bdatReplyOf())
	require.Equal(t, bdatReply{503, protoText503}, c.bdatReplyOf())
	c.bdatInSync()
	require.Empty(t, h.take(helo))
}

// bdatStreamer is a MessageStreamer that records what its reader gave and how it ended.
type bdatStreamer struct {
	bdatHandler
	ended chan string
}

func (h *bdatStreamer) OnMessageStream(s *Session, r io.Reader) error {
	b, err := io.ReadAll(r)
	h.ended <- fmt.Sprintf("%q, %v", b, err)
	return err
}

// TestBdatStreamChunkOverMaxMessageSize: with a MessageStreamer, a chunk whose
// announced size takes the streamed message past MaxMessageSize is refused 552 at
// once, and the stream hook's reader fails with an error wrapping SMTPError552 (the
// hook is not left waiting for data that never comes).
func TestBdatStreamChunkOverMaxMessageSize(t *testing.T) {
	h := &bdatStreamer{bdatHandler: *newBdatHandler(), ended: make(chan string, 4)}
	addr, _ := bdatServe(t, h, func(s *Server) { s.MaxMessageSize = 100 })
	for _, tc := range []struct {
		name   string
		chunks []string
		want   []int
	}{
		{"second chunk alone over the limit", []string{strings.Repeat("a", 48) + "\r\n", strings.Repeat("b", 200)}, []int{250, 552}},
		{"second chunk passes the total", []string{strings.Repeat("a", 58) + "\r\n", strings.Repeat("b", 58) + "\r\n", "c"}, []int{250, 552, 503}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			helo := bdatHelo()
			c := bdatTransaction(t, addr, helo)
			c.send(bdatChunks(tc.chunks...))
			var got []int
			for range tc.want {
				got = append(got, c.bdatReplyOf().Code)
			}
			require.Equal(t, tc.want, got)
			select {
			case ended := <-h.ended:
				require.Contains(t, ended, "exceeded storage allocation", "the reader fails with the 552")
			case <-time.After(5 * time.Second):
				require.Fail(t, "OnMessageStream never returned")
			}
			c.bdatInSync()
		})
	}
}
