package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestThroughput measures, in one run and with the same client, messages per
// second through one receiver: examples/sink (accepts and discards: the SMTP
// ceiling), examples/queue into the embedded JetStream (R1, default fsync every
// 2 minutes, and with -sync-always), and examples/queue into a three-node cluster
// (R3). The client is Postfix's smtp-source: QUEUE_BENCH_SESSIONS (20) sessions
// kept open, QUEUE_BENCH_MSGS (3000) messages of 1 KiB, QUEUE_BENCH_ROUNDS (1)
// rounds over all of them (the median is printed). It prints the figures
// (go test -run TestThroughput -v) and asserts only that each run completed and,
// for the queues, that the stream holds every message. All processes are
// non-race builds; the figures are those of whatever machine runs the test, all
// of it on loopback, client and servers sharing its CPUs.
func TestThroughput(t *testing.T) {
	smtpSource := need(t, "smtp-source")
	bins := buildBinaries(t)
	msgs := envInt(t, "QUEUE_BENCH_MSGS", 3000)
	sessions := envInt(t, "QUEUE_BENCH_SESSIONS", 20)
	rounds := envInt(t, "QUEUE_BENCH_ROUNDS", 1)

	type target struct {
		name  string
		addr  string
		nats  string // the stream's NATS URL(s); "" for the sink
		rates []float64
	}
	var targets []*target
	{
		p := startProc(t, "sink", bins.sink, "-quiet", "-ports", "0")
		addr := waitFor(t, "sink", p.stdout, listeningRe, 20*time.Second, p.dead)[1]
		targets = append(targets, &target{name: "examples/sink (discards)", addr: addr})
	}
	for _, sync := range []bool{false, true} {
		name := "queue, embedded JetStream R1"
		args := []string{"-ports", "0", "-data", filepath.Join(t.TempDir(), "data"),
			"-nats-listen", "127.0.0.1:0", "-log-level", "warn"}
		if sync {
			name += " -sync-always"
			args = append(args, "-sync-always")
		}
		p := startProc(t, name, bins.queue, args...)
		url := waitFor(t, name, p.stdout, natsOnRe, 20*time.Second, p.dead)[1]
		addr := waitFor(t, name, p.stdout, listeningRe, 20*time.Second, p.dead)[1]
		targets = append(targets, &target{name: name, addr: addr, nats: url})
	}
	{
		nodes := startCluster(t, bins.natsServer)
		urls := clusterURLs(nodes)
		_, addr := startReceiver(t, "queue R3", bins.queue, urls)
		nc := natsConnect(t, urls)
		js, _ := jetstream.New(nc)
		waitStreamReady(t, js, "MAIL", 3)
		targets = append(targets, &target{name: "queue, 3-node cluster R3", addr: addr, nats: urls})
	}

	for range rounds {
		for _, tg := range targets {
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			start := time.Now()
			out, err := exec.CommandContext(ctx, smtpSource, "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(msgs),
				"-l", "1024", "-d", "-M", "bench.queue.test", "-f", "bench@queue.test", "-t", "sink@queue.test", tg.addr).CombinedOutput()
			secs := time.Since(start).Seconds()
			cancel()
			if err != nil {
				t.Fatalf("%s: smtp-source: %v\n%s", tg.name, err, out)
			}
			tg.rates = append(tg.rates, float64(msgs)/secs)
		}
	}

	for _, tg := range targets[1:] {
		nc := natsConnect(t, tg.nats)
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := js.Stream(ctx, "MAIL")
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx)
		}
		cancel()
		if err != nil || info.State.Msgs != uint64(msgs*rounds) {
			t.Errorf("%s: the stream holds %+v (%v), want %d messages", tg.name, info, err, msgs*rounds)
		}
		nc.Close()
	}

	var b strings.Builder
	fmt.Fprintf(&b, "smtp-source -s %d -m %d -l 1024 -d, one receiver, %d round(s), %d CPUs, median msgs/s:\n",
		sessions, msgs, rounds, runtime.NumCPU())
	sink := median(targets[0].rates)
	for _, tg := range targets {
		m := median(tg.rates)
		fmt.Fprintf(&b, "  %-40s %7.0f msgs/s  %3.0f%% of sink\n", tg.name, m, 100*m/sink)
	}
	t.Log("\n" + b.String())
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}
