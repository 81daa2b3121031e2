package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// startReceiver runs the examples/queue binary against the cluster at urls on a
// port of its choosing, with the stream's replicas 3 and the extra flags.
func startReceiver(t *testing.T, name, bin, urls string, extra ...string) (*proc, string) {
	t.Helper()
	args := append([]string{"-ports", "0", "-nats", urls, "-replicas", "3", "-log-level", "warn"}, extra...)
	p := startProc(t, name, bin, args...)
	addr := waitFor(t, name, p.stdout, listeningRe, 60*time.Second, p.dead)[1]
	return p, addr
}

// waitStreamReady waits until the stream has a leader and every replica is current.
func waitStreamReady(t *testing.T, js jetstream.JetStream, stream string, replicas int) *jetstream.StreamInfo {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := js.Stream(ctx, stream)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx)
		}
		cancel()
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
			current := 0
			for _, r := range info.Cluster.Replicas {
				if r.Current {
					current++
				}
			}
			if current == replicas-1 {
				return info
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s not ready: %+v %v", stream, info, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killMessage is message id of the kill test: a Message-ID that names it, and
// a body of about 1 KiB.
func killMessage(id int) []byte {
	b := fmt.Appendf(nil, "Message-ID: <kill-%d@queue.test>\r\nSubject: kill test %d\r\n\r\n", id, id)
	for i := range 12 {
		b = fmt.Appendf(b, "%d.%02d %s\r\n", id, i, "the quick brown fox jumps over the lazy dog, then again and again")
	}
	return b
}

var killIDRe = regexp.MustCompile(`^Message-ID: <kill-(\d+)@queue\.test>\r\n`)

// track is what the load client knows of one message.
type track struct {
	ip        string // the client address it was sent from
	ports     []int  // the client ports of the attempts that reached MAIL
	attempts  int
	acked     bool // a 250 arrived for its end of data
	ambiguous int  // attempts that sent the end of data but got no 250: those may be stored
	replies4  int  // 4xx replies (451 and the like)
	last      error
	permanent error // a 5xx: a bug
}

// load sends messages 0..n-1 through addr from workers goroutines, each holding a
// session open and sending from its own 127.0.0.x address; a message is retried
// (new connection, new transaction, as an MTA retries) until it gets 250 or the
// deadline passes. acked counts the 250s as they come.
func load(addr string, n, workers int, deadline time.Time, acked *atomic.Int64) []*track {
	tracks := make([]*track, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		ip := fmt.Sprintf("127.0.0.%d", 2+w%4)
		wg.Go(func() {
			var c *smtpConn
			defer func() {
				if c != nil {
					c.close()
				}
			}()
			for {
				id := int(next.Add(1)) - 1
				if id >= n {
					return
				}
				tr := &track{ip: ip}
				tracks[id] = tr
				data := killMessage(id)
				for !tr.acked && tr.permanent == nil && time.Now().Before(deadline) {
					if c == nil {
						var err error
						if c, err = dialSMTP(addr, ip); err == nil {
							if err = c.expect("EHLO load.queue.test", 250); err != nil {
								c.close()
								c = nil
							}
						}
						if err != nil {
							tr.last = err
							time.Sleep(50 * time.Millisecond)
							continue
						}
					}
					tr.attempts++
					tr.ports = append(tr.ports, c.localPort())
					o := c.transaction("load@queue.test", []string{fmt.Sprintf("rcpt-%d@queue.test", id)}, data)
					if o.code == 250 {
						tr.acked = true
						acked.Add(1)
						break
					}
					if o.dotSent {
						tr.ambiguous++
					}
					switch o.code / 100 {
					case 4:
						tr.replies4++
					case 5:
						tr.permanent = fmt.Errorf("%s: %w", o.stage, o.err)
					}
					tr.last = fmt.Errorf("%s: %w", o.stage, o.err)
					c.close() // and retry over a new connection, as an MTA would later
					c = nil
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	return tracks
}

// TestClusterKill is the scale-out set-up of the README: a three-node NATS
// cluster (nats-server processes on loopback, the stream with three replicas),
// two receivers (examples/queue processes) behind HAProxy with send-proxy-v2 and
// SMTP health checks. First Postfix's smtp-source sends messages through HAProxy:
// each stored exactly once. Then a Go client sends a few thousand messages from
// 16 sessions and, while they flow, one receiver and the NATS node leading the
// stream are killed with SIGKILL. Afterwards: every message that got 250 is in
// the stream (zero lost), every message got its 250 in the end, a message is
// stored more than once only as often as attempts of it ended without a 250
// (a receiver or leader died between storing and answering), each copy is
// byte-exact, and each carries the client address and port that HAProxy's PROXY
// header gave (X-Smtp-Remote-Ip/-Port, X-Smtp-Proxy-Ip).
//
// smtp-source cannot take part in the kill phase: it exits at the first lost
// connection and reports only totals, so the exact accounting needs a client
// that knows which message got which reply.
func TestClusterKill(t *testing.T) {
	t.Parallel()
	smtpSource := need(t, "smtp-source")
	need(t, "haproxy")
	t0 := time.Now()
	bins := buildBinaries(t)
	t.Logf("binaries ready after %s", time.Since(t0).Round(time.Millisecond))

	nodes := startCluster(t, bins.natsServer)
	urls := clusterURLs(nodes)
	t.Logf("NATS cluster up after %s", time.Since(t0).Round(time.Millisecond))
	r1, addr1 := startReceiver(t, "receiver r1", bins.queue, urls, "-proxy-trusted", "127.0.0.1/32")
	r2, addr2 := startReceiver(t, "receiver r2", bins.queue, urls, "-proxy-trusted", "127.0.0.1/32")
	hp := startHAProxy(t, []string{addr1, addr2})
	nc := natsConnect(t, urls)
	js, _ := jetstream.New(nc)
	waitStreamReady(t, js, "MAIL", 3)
	t.Logf("receivers, HAProxy and the R3 stream ready after %s", time.Since(t0).Round(time.Millisecond))

	// Phase 1: smtp-source through HAProxy, nothing killed.
	const sourceMsgs = 600
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, smtpSource, "-s", "8", "-m", strconv.Itoa(sourceMsgs), "-l", "1024", "-d",
		"-M", "source.queue.test", "-f", "source@queue.test", "-t", "sink@queue.test", hp.addr).CombinedOutput()
	if err != nil {
		t.Fatalf("smtp-source through HAProxy: %v\n%s", err, out)
	}

	// Phase 2: the Go client, with a receiver and the stream's leader killed.
	const n, workers = 3000, 16
	var acked atomic.Int64
	var killLog []string
	killed := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(killed)
		waitAcked := func(k int64) bool {
			for acked.Load() < k {
				if time.Since(start) > 60*time.Second {
					return false
				}
				time.Sleep(time.Millisecond)
			}
			return true
		}
		if !waitAcked(n / 3) {
			return
		}
		r1.kill()
		killLog = append(killLog, fmt.Sprintf("receiver r1 killed (SIGKILL) after %d 250s, %s", acked.Load(), time.Since(start).Round(time.Millisecond)))
		if !waitAcked(n / 2) {
			return
		}
		ictx, icancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer icancel()
		st, err := js.Stream(ictx, "MAIL")
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ictx)
		}
		if err != nil || info.Cluster == nil {
			killLog = append(killLog, fmt.Sprintf("stream info: %v", err))
			return
		}
		for _, node := range nodes {
			if node.name == info.Cluster.Leader {
				node.kill()
				killLog = append(killLog, fmt.Sprintf("NATS node %s, the stream's leader, killed (SIGKILL) after %d 250s, %s", node.name, acked.Load(), time.Since(start).Round(time.Millisecond)))
			}
		}
	}()
	tracks := load(hp.addr, n, workers, time.Now().Add(90*time.Second), &acked)
	elapsed := time.Since(start)
	<-killed
	for _, l := range killLog {
		t.Log(l)
	}
	if len(killLog) != 2 {
		t.Fatalf("the kills did not happen as planned: %q", killLog)
	}
	if st, err := hp.stat(); err != nil || st["r1"]["status"] == "UP" {
		t.Errorf("HAProxy still has r1 UP after its kill: %v %v", st["r1"]["status"], err)
	}

	// Read the stream back from the surviving nodes.
	all := readStream(t, nc, "MAIL")
	copies := make([][]stored, n)
	sourceCount, unknown := 0, 0
	for _, s := range all {
		if s.header.Get(HeaderFrom) == "source@queue.test" {
			sourceCount++
			if s.header.Get(HeaderProxyIP) != "127.0.0.1" || s.header.Get(HeaderRemoteIP) != "127.0.0.1" {
				t.Errorf("smtp-source message seq %d: remote %s proxy %s", s.seq, s.header.Get(HeaderRemoteIP), s.header.Get(HeaderProxyIP))
			}
			continue
		}
		m := killIDRe.FindSubmatch(s.data)
		id := -1
		if m != nil {
			id, _ = strconv.Atoi(string(m[1]))
		}
		if id < 0 || id >= n {
			unknown++
			continue
		}
		copies[id] = append(copies[id], s)
	}
	if sourceCount != sourceMsgs {
		t.Errorf("smtp-source sent %d messages without an error; the stream holds %d of them", sourceMsgs, sourceCount)
	}
	if unknown != 0 {
		t.Errorf("%d stored messages are not the test's", unknown)
	}

	var sent, ackedN, lost, notAcked, dupMsgs, dupCopies, ambiguous, replies4, attempts int
	for id, tr := range tracks {
		if tr == nil {
			continue
		}
		sent++
		attempts += tr.attempts
		ambiguous += tr.ambiguous
		replies4 += tr.replies4
		cs := copies[id]
		if tr.permanent != nil {
			t.Errorf("message %d: permanent error %v", id, tr.permanent)
		}
		if tr.acked {
			ackedN++
			if len(cs) == 0 {
				lost++
				t.Errorf("message %d got 250 but is not in the stream (attempts %d, ports %v)", id, tr.attempts, tr.ports)
			}
		} else {
			notAcked++
			t.Errorf("message %d never got 250 (attempts %d, last: %v)", id, tr.attempts, tr.last)
		}
		if len(cs) > 1 {
			dupMsgs++
			dupCopies += len(cs) - 1
		}
		if len(cs) > 1+tr.ambiguous {
			t.Errorf("message %d is stored %d times, but only %d of its attempts ended without a 250 reaching the client", id, len(cs), tr.ambiguous)
		}
		want := killMessage(id)
		for _, s := range cs {
			h := s.header
			port, _ := strconv.Atoi(h.Get(HeaderRemotePort))
			switch {
			case string(s.data) != string(want):
				t.Errorf("message %d seq %d: not byte-exact", id, s.seq)
			case h.Get(HeaderRemoteIP) != tr.ip || !slices.Contains(tr.ports, port):
				t.Errorf("message %d seq %d: client %s:%d, sent from %s ports %v", id, s.seq, h.Get(HeaderRemoteIP), port, tr.ip, tr.ports)
			case h.Get(HeaderProxyIP) != "127.0.0.1":
				t.Errorf("message %d seq %d: proxy %q, want HAProxy's 127.0.0.1", id, s.seq, h.Get(HeaderProxyIP))
			case h.Get(HeaderFrom) != "load@queue.test" || !slices.Equal(h.Values(HeaderTo), []string{fmt.Sprintf("rcpt-%d@queue.test", id)}):
				t.Errorf("message %d seq %d: envelope %q %q", id, s.seq, h.Get(HeaderFrom), h.Values(HeaderTo))
			}
		}
	}
	if sent != n {
		t.Errorf("the client sent %d of %d messages", sent, n)
	}
	t.Logf("smtp-source: %d messages through HAProxy into R3, %d stored", sourceMsgs, sourceCount)
	t.Logf("kill test: %d messages, %d got 250, %d never did; %d in the stream; lost (250 but not stored): %d; "+
		"duplicates: %d messages with %d extra copies, out of %d attempts that ended without a 250 after the data was sent; "+
		"%d attempts in all, %d 4xx replies; %s, %.0f msgs/s",
		n, ackedN, notAcked, len(all)-sourceCount, lost, dupMsgs, dupCopies, ambiguous, attempts, replies4,
		elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
	t.Logf("receiver r2 (survived) logged: %s", summarizeLog(r2.stderr.String()))
	if t.Failed() {
		t.Logf("haproxy config:\n%s", hp.cfg)
	}
}

var logMsgRe = regexp.MustCompile(`(?m)level=(\w+) msg=("(?:[^"\\]|\\.)*"|\S+)`)

// summarizeLog counts a receiver's log lines by level and message.
func summarizeLog(log string) string {
	counts := map[string]int{}
	var keys []string
	for _, m := range logMsgRe.FindAllStringSubmatch(log, -1) {
		k := m[1] + " " + m[2]
		if counts[k] == 0 {
			keys = append(keys, k)
		}
		counts[k]++
	}
	if len(keys) == 0 {
		return "nothing"
	}
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%dx %s", counts[k], k))
	}
	return strings.Join(parts, "; ")
}
