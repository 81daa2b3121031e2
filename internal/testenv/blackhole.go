package testenv

import (
	"net"
	"sync"
	"testing"
)

// StartBlackhole starts a DNS server that never answers, on 127.0.0.1 and one port for
// UDP and TCP: it reads every UDP query and drops it, and accepts TCP connections and holds
// them open without a reply. It returns "127.0.0.1:port"; everything is closed when the test
// ends. A resolver pointed at it can only time out: the temperror cases.
func StartBlackhole(t testing.TB) string {
	t.Helper()
	for range 20 {
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp4", u.LocalAddr().String())
		if err != nil {
			u.Close()
			continue
		}
		b := &blackhole{udp: u, tcp: l}
		b.wg.Add(2)
		go b.drop()
		go b.hold()
		t.Cleanup(b.close)
		return u.LocalAddr().String()
	}
	t.Fatal("no port free for both UDP and TCP")
	return ""
}

type blackhole struct {
	udp   net.PacketConn
	tcp   net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

// drop reads UDP queries until the socket is closed.
func (b *blackhole) drop() {
	defer b.wg.Done()
	buf := make([]byte, 1500)
	for {
		if _, _, err := b.udp.ReadFrom(buf); err != nil {
			return
		}
	}
}

// hold accepts TCP connections and keeps them, silent, until close.
func (b *blackhole) hold() {
	defer b.wg.Done()
	for {
		c, err := b.tcp.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns = append(b.conns, c)
		b.mu.Unlock()
	}
}

func (b *blackhole) close() {
	b.udp.Close()
	b.tcp.Close()
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}
