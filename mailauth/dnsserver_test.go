package mailauth

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// zoneServer is a small authoritative DNS server on 127.0.0.1 (UDP and TCP, one
// port) answering from records a test gives it. It exists for what nsd cannot be
// told to do per name: never answer (timeout), answer SERVFAIL, truncate every UDP
// answer, or answer with a wrong ID first. The SPF test suite's zones are served
// by it; the other tests use nsd (internal/testenv).
type zoneServer struct {
	Addr string

	mu       sync.Mutex
	rrs      map[string][]dnsmessage.Resource // by lowercase rooted name
	timeout  map[string]bool                  // names never answered
	servfail map[string]bool
	delay    map[string]time.Duration // names answered late
	truncate bool                     // every UDP answer with records comes truncated: TCP needed
	spoof    bool                     // each UDP answer is preceded by one with another ID
	queries  int
}

func startZoneServer(t testing.TB) *zoneServer {
	t.Helper()
	z := &zoneServer{rrs: map[string][]dnsmessage.Resource{}, timeout: map[string]bool{}, servfail: map[string]bool{},
		delay: map[string]time.Duration{}}
	pc, ln := listenUDPTCP(t)
	z.Addr = pc.LocalAddr().String()
	var wg sync.WaitGroup
	wg.Go(func() { z.serveUDP(pc) })
	wg.Go(func() { z.serveTCP(ln) })
	t.Cleanup(func() {
		pc.Close()
		ln.Close()
		wg.Wait()
	})
	return z
}

// listenUDPTCP listens on one free port for UDP and TCP on 127.0.0.1 (a few tries:
// the UDP port's TCP twin may be taken).
func listenUDPTCP(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
	}
	t.Fatal("no free port for UDP and TCP")
	return nil, nil
}

func zkey(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) + "." }

func mustName(s string) dnsmessage.Name {
	n, err := dnsmessage.NewName(zkey(s))
	if err != nil {
		panic(err)
	}
	return n
}

// add serves a record of type t for name.
func (z *zoneServer) add(name string, t dnsmessage.Type, body dnsmessage.ResourceBody) {
	z.mu.Lock()
	defer z.mu.Unlock()
	h := dnsmessage.ResourceHeader{Name: mustName(name), Type: t, Class: dnsmessage.ClassINET, TTL: 60}
	z.rrs[zkey(name)] = append(z.rrs[zkey(name)], dnsmessage.Resource{Header: h, Body: body})
}

func (z *zoneServer) txt(name, text string) {
	z.add(name, dnsmessage.TypeTXT, &dnsmessage.TXTResource{TXT: splitTXT(text)})
}

func (z *zoneServer) ip(name, addr string) {
	ip := net.ParseIP(addr)
	if v4 := ip.To4(); v4 != nil {
		z.add(name, dnsmessage.TypeA, &dnsmessage.AResource{A: [4]byte(v4)})
		return
	}
	z.add(name, dnsmessage.TypeAAAA, &dnsmessage.AAAAResource{AAAA: [16]byte(ip.To16())})
}

func (z *zoneServer) mx(name string, pref uint16, host string) {
	z.add(name, dnsmessage.TypeMX, &dnsmessage.MXResource{Pref: pref, MX: mustName(host)})
}

func (z *zoneServer) ptr(name, host string) {
	z.add(name, dnsmessage.TypePTR, &dnsmessage.PTRResource{PTR: mustName(host)})
}

func (z *zoneServer) cname(name, target string) {
	z.add(name, dnsmessage.TypeCNAME, &dnsmessage.CNAMEResource{CNAME: mustName(target)})
}

// splitTXT cuts a text into the 255-octet strings of one TXT record.
func splitTXT(s string) []string {
	var out []string
	for len(s) > 255 {
		out, s = append(out, s[:255]), s[255:]
	}
	return append(out, s)
}

func (z *zoneServer) setTimeout(name string) {
	z.mu.Lock()
	z.timeout[zkey(name)] = true
	z.mu.Unlock()
}
func (z *zoneServer) setDelay(name string, d time.Duration) {
	z.mu.Lock()
	z.delay[zkey(name)] = d
	z.mu.Unlock()
}

// delayOf is how late the answer to query b comes.
func (z *zoneServer) delayOf(b []byte) time.Duration {
	var p dnsmessage.Parser
	if _, err := p.Start(b); err != nil {
		return 0
	}
	q, err := p.Question()
	if err != nil {
		return 0
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.delay[strings.ToLower(q.Name.String())]
}

func (z *zoneServer) setServfail(name string) {
	z.mu.Lock()
	z.servfail[zkey(name)] = true
	z.mu.Unlock()
}

func (z *zoneServer) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		z.mu.Lock()
		spoof := z.spoof
		z.mu.Unlock()
		resp, ok := z.answer(buf[:n], true)
		if !ok {
			continue
		}
		if d := z.delayOf(buf[:n]); d > 0 {
			time.AfterFunc(d, func() { pc.WriteTo(resp, addr) })
			continue
		}
		if spoof {
			bad := append([]byte(nil), resp...)
			bad[0] ^= 0xff
			pc.WriteTo(bad, addr)
		}
		pc.WriteTo(resp, addr)
	}
}

func (z *zoneServer) serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var l [2]byte
			if _, err := io.ReadFull(c, l[:]); err != nil {
				return
			}
			q := make([]byte, binary.BigEndian.Uint16(l[:]))
			if _, err := io.ReadFull(c, q); err != nil {
				return
			}
			resp, ok := z.answer(q, false)
			if !ok {
				return
			}
			c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(resp))))
			c.Write(resp)
		}()
	}
}

// answer builds the answer to one query; false: no answer at all.
func (z *zoneServer) answer(b []byte, udp bool) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	z.queries++
	name := strings.ToLower(q.Name.String())
	if z.timeout[name] {
		return nil, false
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	var answers []dnsmessage.Resource
	switch {
	case z.servfail[name]:
		rh.RCode = dnsmessage.RCodeServerFailure
	default:
		answers, rh.RCode = z.resolve(name, q.Type)
	}
	if udp && z.truncate && len(answers) > 0 {
		rh.Truncated, answers = true, nil
	}
	msg := dnsmessage.Message{Header: rh, Questions: []dnsmessage.Question{q}, Answers: answers}
	out, err := msg.Pack()
	if err != nil {
		return nil, false
	}
	return out, true
}

// resolve collects the records of type t at name, with the CNAME chain leading
// to them (a loop stops when a name comes again).
func (z *zoneServer) resolve(name string, t dnsmessage.Type) ([]dnsmessage.Resource, dnsmessage.RCode) {
	var out []dnsmessage.Resource
	seen := map[string]bool{}
	for !seen[name] {
		seen[name] = true
		rrs, ok := z.rrs[name]
		if !ok {
			if len(out) > 0 {
				return out, dnsmessage.RCodeSuccess
			}
			return nil, dnsmessage.RCodeNameError
		}
		var next string
		for _, rr := range rrs {
			switch {
			case rr.Header.Type == t:
				out = append(out, rr)
			case rr.Header.Type == dnsmessage.TypeCNAME && t != dnsmessage.TypeCNAME:
				out = append(out, rr)
				next = strings.ToLower(rr.Body.(*dnsmessage.CNAMEResource).CNAME.String())
			}
		}
		if next == "" {
			break
		}
		name = next
	}
	return out, dnsmessage.RCodeSuccess
}
