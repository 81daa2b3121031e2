package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"net/textproto"
	"reflect"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// syncBuffer is an io.Writer that run may write to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	smtpAddrRe    = regexp.MustCompile(`(?m)^listening on (\S+)$`)
	metricsAddrRe = regexp.MustCompile(`(?m)^metrics on (http://\S+/metrics)$`)
)

// startMetrics runs the program in-process on free ports until the test ends and
// returns its SMTP address and its /metrics URL.
func startMetrics(t *testing.T) (smtpAddr, metricsURL string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-ports", "0", "-metrics-addr", "127.0.0.1:0"}, stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v\nstderr:\n%s", err, stderr)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("run did not return within 15s of cancel")
		}
	})
	deadline := time.After(10 * time.Second)
	for {
		out := stdout.String()
		if m, u := smtpAddrRe.FindStringSubmatch(out), metricsAddrRe.FindStringSubmatch(out); m != nil && u != nil {
			return m[1], u[1]
		}
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("run returned before listening: %v\nstderr:\n%s", err, stderr)
		case <-deadline:
			t.Fatalf("not listening within 10s; stdout:\n%s\nstderr:\n%s", stdout, stderr)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// scrape returns the text of one GET of url.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v\n%s", url, resp.Status, err, body)
	}
	return string(body)
}

// sample returns the value of the sample line "name value" in text (name includes
// its labels), and whether there is one.
func sample(text, name string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

func TestMetricsAfterOneMessageAndOneBadCommand(t *testing.T) {
	smtpAddr, metricsURL := startMetrics(t)

	msg := "Subject: metrics\r\n\r\nbody\r\n"
	if err := smtp.SendMail(smtpAddr, nil, "a@example.com", []string{"b@example.com"}, []byte(msg)); err != nil {
		t.Fatalf("SendMail: %v", err)
	}

	c, err := textproto.Dial("tcp", smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatalf("banner: %v", err)
	}
	if _, err := c.Cmd("BOGUS command"); err != nil {
		t.Fatal(err)
	}
	if code, _, err := c.ReadResponse(500); err != nil {
		t.Fatalf("BOGUS: want 500, got %d %v", code, err)
	}
	if _, err := c.Cmd("QUIT"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadResponse(221); err != nil {
		t.Fatalf("QUIT: %v", err)
	}

	// Counters may be bumped just after a reply was written: poll briefly.
	var text string
	want := map[string]func(float64) bool{
		"smtpd_messages_accepted_total":                   func(v float64) bool { return v == 1 },
		"smtpd_messages_accepted_bytes_total":             func(v float64) bool { return v == float64(len(msg)) },
		"smtpd_messages_refused_total":                    func(v float64) bool { return v == 0 },
		`smtpd_replies_total{class="2xx"}`:                func(v float64) bool { return v >= 6 }, // 220 250 250 250 250 221
		`smtpd_replies_total{class="3xx"}`:                func(v float64) bool { return v == 1 }, // 354
		`smtpd_replies_total{class="5xx"}`:                func(v float64) bool { return v == 1 }, // BOGUS
		"smtpd_connections_total":                         func(v float64) bool { return v >= 1 },
		"smtpd_connections_open":                          func(v float64) bool { return v >= 0 },
		`smtpd_limit_hits_total{limit="max_errors"}`:      func(v float64) bool { return v == 0 },
		`smtpd_limit_hits_total{limit="xclient_refused"}`: func(v float64) bool { return v == 0 },
		`smtpd_auth_total{result="failure"}`:              func(v float64) bool { return v == 0 },
	}
	var failed []string
	for deadline := time.Now().Add(5 * time.Second); ; {
		text = scrape(t, metricsURL)
		failed = failed[:0]
		for name, ok := range want {
			if v, found := sample(text, name); !found || !ok(v) {
				failed = append(failed, name)
			}
		}
		if len(failed) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(failed) > 0 {
		t.Fatalf("unexpected or missing %q in /metrics:\n%s", failed, text)
	}
	for _, typ := range []string{"# TYPE smtpd_connections_total counter", "# TYPE smtpd_connections_open gauge",
		"# TYPE smtpd_sessions_active gauge", "# TYPE smtpd_replies_total counter", "# TYPE go_goroutines gauge"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(typ) + `$`).MatchString(text) {
			t.Errorf("/metrics lacks %q", typ)
		}
	}
}

func TestCollectorLintsAndCountsEveryLimit(t *testing.T) {
	c := newStatsCollector(&smtpd.Server{})
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	limits := reflect.TypeFor[smtpd.LimitStats]().NumField()
	// 7 single metrics, 4 reply classes, 2 AUTH results, 2 TLS results, one per limit.
	if n, want := testutil.CollectAndCount(c), 7+4+2+2+limits; n != want {
		t.Errorf("collected %d metrics, want %d", n, want)
	}
	if n := testutil.CollectAndCount(c, "smtpd_limit_hits_total"); n != limits {
		t.Errorf("smtpd_limit_hits_total has %d label values, want %d (one per LimitStats field)", n, limits)
	}
}

func TestLimitLabels(t *testing.T) {
	for field, want := range map[string]string{
		"MaxErrors":           "max_errors",
		"MaxJunkCommands":     "max_junk_commands",
		"MaxConnectionsPerIP": "max_connections_per_ip",
		"NonSMTP":             "non_smtp",
		"XClientRefused":      "xclient_refused",
		"Pregreet":            "pregreet",
	} {
		if got := limitLabel(field); got != want {
			t.Errorf("limitLabel(%q) = %q, want %q", field, got, want)
		}
	}
	seen := map[string]string{}
	valid := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	typ := reflect.TypeFor[smtpd.LimitStats]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		l := limitLabel(f.Name)
		if !valid.MatchString(l) {
			t.Errorf("LimitStats.%s: label %q is not snake_case", f.Name, l)
		}
		if other, dup := seen[l]; dup {
			t.Errorf("LimitStats.%s and .%s share the label %q", f.Name, other, l)
		}
		seen[l] = f.Name
		if f.Type.Kind() != reflect.Int64 {
			t.Errorf("LimitStats.%s is %s, not int64: it would not be exported", f.Name, f.Type)
		}
	}
}

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{{"-nope"}, {"extra"}} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if !errors.As(err, new(usageError)) {
			t.Errorf("run %q: %v, want a usage error", args, err)
		}
	}
	if err := run(context.Background(), []string{"-h"}, io.Discard, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = run(context.Background(), []string{"-ports", "0", "-metrics-addr", l.Addr().String()}, io.Discard, io.Discard)
	if err == nil || !regexp.MustCompile(`-metrics-addr`).MatchString(err.Error()) {
		t.Errorf("busy -metrics-addr: %v", err)
	}
}
