package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RR is one resource record of a Zone.
type RR struct {
	Name string // relative to the zone's origin ("@" for the apex) or rooted ("a.example.test.")
	Type string // "TXT", "A", "AAAA", "MX", "PTR", "CNAME", ...
	Data string // zone-file syntax; for TXT the raw text, which the zone writer quotes and splits
}

// Zone is one zone that nsd serves: its origin (rooted, "example.test.") and its records.
// The SOA and NS records are written for it.
type Zone struct {
	Origin string
	RRs    []RR
}

// Add appends a record; for TXT, data is the raw text.
func (z *Zone) Add(name, typ, data string) *Zone {
	z.RRs = append(z.RRs, RR{Name: name, Type: typ, Data: data})
	return z
}

// TXT appends a TXT record holding text.
func (z *Zone) TXT(name, text string) *Zone { return z.Add(name, "TXT", text) }

// file renders the zone in RFC 1035 master-file syntax.
func (z *Zone) file() string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL 60\n", z.Origin)
	fmt.Fprintf(&b, "@ IN SOA ns.%s hostmaster.%s 1 3600 600 86400 60\n", z.Origin, z.Origin)
	fmt.Fprintf(&b, "@ IN NS ns.%s\n", z.Origin)
	for _, rr := range z.RRs {
		data := rr.Data
		if strings.EqualFold(rr.Type, "TXT") {
			data = quoteTXT(data)
		}
		fmt.Fprintf(&b, "%s IN %s %s\n", rr.Name, rr.Type, data)
	}
	return b.String()
}

// NSD is a private nsd instance serving the zones it was started with.
type NSD struct {
	Addr string // "127.0.0.1:port", UDP and TCP
	Dir  string // its configuration, zone files, log and state

	cmd  *exec.Cmd
	done chan error
}

// StartNSD writes the zones and a private nsd.conf (no chroot, no user change, no
// remote control, every file in a temporary directory) and starts Debian's nsd in the
// foreground on 127.0.0.1 and a free high port. It returns once nsd answers; nsd is
// stopped by its PID when the test ends. Names outside every zone get REFUSED, which
// resolvers take as a temporary error: give each name a test asks about a zone.
func StartNSD(t testing.TB, zones ...Zone) *NSD {
	t.Helper()
	bin := Need(t, "nsd")
	dir := t.TempDir()
	seen := map[string]bool{}
	for i, z := range zones {
		origin := strings.ToLower(z.Origin)
		if !strings.HasSuffix(origin, ".") || seen[origin] {
			t.Fatalf("zone %q: origins must be rooted and distinct", z.Origin)
		}
		seen[origin] = true
		if err := os.WriteFile(filepath.Join(dir, zoneFile(i)), []byte(z.file()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var lastErr error
	for range 5 {
		n, err := startNSD(t, bin, dir, zones)
		if err == nil {
			return n
		}
		lastErr = err
	}
	t.Fatalf("nsd did not start: %v", lastErr)
	return nil
}

func zoneFile(i int) string { return "z" + strconv.Itoa(i) + ".zone" }

// startNSD makes one attempt on a port that was free a moment ago.
func startNSD(t testing.TB, bin, dir string, zones []Zone) (*NSD, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conf := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(conf, []byte(nsdConf(dir, addr, zones)), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-d", "-c", conf)
	cmd.Dir = dir
	logf, err := os.Create(filepath.Join(dir, "nsd.stderr"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n := &NSD{Addr: addr, Dir: dir, cmd: cmd, done: make(chan error, 1)}
	go func() { n.done <- cmd.Wait() }()
	if err := n.waitReady(zones); err != nil {
		n.stop()
		log, _ := os.ReadFile(filepath.Join(dir, "nsd.log"))
		return nil, fmt.Errorf("%v; nsd.log: %s", err, tail(string(log), 2000))
	}
	t.Cleanup(n.stop)
	return n, nil
}

// nsdConf is the configuration of a private instance: every path in dir.
func nsdConf(dir, addr string, zones []Zone) string {
	var b strings.Builder
	fmt.Fprintf(&b, `server:
	ip-address: %s
	do-ip6: no
	username: ""
	chroot: ""
	zonesdir: %q
	database: ""
	zonelistfile: %q
	xfrdfile: %q
	xfrdir: %q
	pidfile: %q
	logfile: %q
	server-count: 1
	tcp-count: 64
	verbosity: 1
	hide-version: yes
	zonefiles-check: no
remote-control:
	control-enable: no
`, strings.Replace(addr, ":", "@", 1), dir, filepath.Join(dir, "zone.list"),
		filepath.Join(dir, "xfrd.state"), dir, filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "nsd.log"))
	for i, z := range zones {
		fmt.Fprintf(&b, "zone:\n\tname: %q\n\tzonefile: %q\n", z.Origin, zoneFile(i))
	}
	return b.String()
}

// freePort returns a port that is free on 127.0.0.1 for both UDP and TCP.
func freePort() (int, error) {
	for range 20 {
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		u.Close()
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, errors.New("no port free for both UDP and TCP")
}

// waitReady asks for the first zone's SOA until nsd answers, it exits, or 10 s pass.
func (n *NSD) waitReady(zones []Zone) error {
	name := "ready.test."
	if len(zones) > 0 {
		name = zones[0].Origin
	}
	r := n.Resolver()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-n.done:
			n.done <- err
			return fmt.Errorf("nsd exited: %v", err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := r.LookupTXT(ctx, name)
		cancel()
		var dnsErr *net.DNSError
		if err == nil || errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("nsd did not answer within 10 s")
}

// Resolver returns a Go resolver that asks only this server (for the harness's own checks;
// the package under test brings its own).
func (n *NSD) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, n.Addr)
	}}
}

// stop ends nsd by its PID: SIGTERM, then SIGKILL after 5 s.
func (n *NSD) stop() {
	select {
	case err := <-n.done:
		n.done <- err
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		n.done <- err
	case <-time.After(5 * time.Second):
		_ = n.cmd.Process.Kill()
		n.done <- <-n.done
	}
}
