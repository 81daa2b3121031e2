package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/milter"
)

// TestDefaults: no flags is 127.0.0.1:2525, ./mx-out, the system's resolver, the
// host name as authserv-id, DMARC enforced, no milter, tempfail, 30 s per command.
func TestDefaults(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"hosts", cfg.srv.Hosts, "127.0.0.1"},
		{"ports", cfg.srv.Ports, "2525"},
		{"out", cfg.out, "mx-out"},
		{"resolver", cfg.resolver, ""},
		{"authserv-id", cfg.authServID, hostname()},
		{"dmarc-enforce", cfg.dmarcEnforce, true},
		{"milters", len(cfg.milters), 0},
		{"milter-default-action", cfg.milterAction, milter.TempFail},
		{"milter-timeout", cfg.milterTimeout, 30 * time.Second},
		{"cert", cfg.srv.TLSCertPath, ""},
		{"proxy-trusted", cfg.srv.ProxyTrustedNetworks, ""},
		{"xclient-trusted", cfg.srv.XClientTrustedNetworks, ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestFlagsSet: every flag reaches its setting; -milter-timeout sets the command
// timeout of each milter and leaves connect and end of message at Postfix's.
func TestFlagsSet(t *testing.T) {
	cfg, err := parseFlags([]string{"-hosts", "127.0.0.1,::1", "-ports", "25,2525", "-out", "/tmp/x",
		"-cert", "c.pem", "-key", "k.pem", "-resolver", "127.0.0.1:5353", "-authserv-id", "mx.example.net",
		"-dmarc-enforce=false", "-milter", "inet:127.0.0.1:8891, unix:/run/m.sock",
		"-milter-default-action", "accept", "-milter-timeout", "7s",
		"-proxy-trusted", "10.0.0.0/8", "-xclient-trusted", "127.0.0.1,::1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s := &cfg.srv
	if s.Hosts != "127.0.0.1,::1" || s.Ports != "25,2525" || cfg.out != "/tmp/x" || s.TLSCertPath != "c.pem" ||
		s.TLSKeyPath != "k.pem" || cfg.resolver != "127.0.0.1:5353" || cfg.authServID != "mx.example.net" ||
		cfg.dmarcEnforce || cfg.milterAction != milter.Accept || s.ProxyTrustedNetworks != "10.0.0.0/8" ||
		s.XClientTrustedNetworks != "127.0.0.1,::1" {
		t.Errorf("settings: %+v", cfg)
	}
	want := []milter.Milter{{Addr: "inet:127.0.0.1:8891", CommandTimeout: 7 * time.Second},
		{Addr: "unix:/run/m.sock", CommandTimeout: 7 * time.Second}}
	if len(cfg.milters) != len(want) {
		t.Fatalf("milters: %+v", cfg.milters)
	}
	for i, m := range cfg.milters {
		if m != want[i] {
			t.Errorf("milter %d: %+v, want %+v (zero connect and EOM timeouts are 30s and 300s)", i, m, want[i])
		}
	}
}

// TestBadFlags: each bad value is refused before anything is bound, with its
// reason and the usage on stderr.
func TestBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-milter-default-action", "discard"}, "-milter-default-action"},
		{[]string{"-milter", "tcp:1.2.3.4"}, "-milter"},
		{[]string{"-milter-timeout", "0s"}, "-milter-timeout must be positive"},
		{[]string{"-milter-timeout", "soon"}, "invalid value"},
		{[]string{"-key", "k.pem"}, "-key needs -cert"},
		{[]string{"-resolver", "127.0.0.1"}, "-resolver"},
		{[]string{"-resolver", "127.0.0.1:dns"}, "-resolver"},
		{[]string{"-resolver", ":53"}, "-resolver: no host"},
		{[]string{"-authserv-id", "mx.test; spf=pass"}, "-authserv-id"},
		{[]string{"-authserv-id", ""}, "-authserv-id"},
		{[]string{"-proxy-trusted", "10.0.0.0/33"}, "-proxy-trusted"},
		{[]string{"-xclient-trusted", "localhost"}, "-xclient-trusted"},
		{[]string{"-out", ""}, "-out must name a folder"},
		{[]string{"-dmarc-enforce=maybe"}, "invalid boolean"},
		{[]string{"-max-errors", "3"}, "flag provided but not defined"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var stderr syncBuffer
			err := run(context.Background(), c.args, io.Discard, &stderr)
			if !errors.As(err, new(usageError)) {
				t.Fatalf("run: %v, want a usage error", err)
			}
			if !strings.Contains(stderr.String(), c.want) || !strings.Contains(stderr.String(), "Usage: mx") {
				t.Errorf("stderr lacks %q or the usage:\n%s", c.want, stderr.String())
			}
		})
	}
}

// TestStartErrors: what only binding finds (a port in use, a certificate that
// is not there) ends run with an error, nothing printed on stdout.
func TestStartErrors(t *testing.T) {
	busy := startMX(t)
	_, port, _ := strings.Cut(busy.Addr, ":")
	for _, args := range [][]string{
		{"-ports", port, "-out", t.TempDir(), "-resolver", "127.0.0.1:1"},
		{"-ports", "0", "-out", t.TempDir(), "-cert", "/nonexistent/cert.pem", "-resolver", "127.0.0.1:1"},
	} {
		var stdout syncBuffer
		err := run(context.Background(), args, &stdout, io.Discard)
		if err == nil || errors.As(err, new(usageError)) || stdout.String() != "" {
			t.Errorf("%v: err %v, stdout %q", args, err, stdout.String())
		}
	}
}

// TestHelp: -h documents every flag and the limits, and is not an error.
func TestHelp(t *testing.T) {
	var stderr syncBuffer
	err := run(context.Background(), []string{"-h"}, io.Discard, &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run -h: %v", err)
	}
	help := stderr.String()
	for _, want := range []string{"-hosts", "-ports", "-out", "-cert", "-key", "-resolver", "-authserv-id",
		"-dmarc-enforce", "-milter ", "-milter-default-action", "-milter-timeout", "-proxy-trusted",
		"-xclient-trusted", "listening on HOST:PORT", "SIGINT", "550 5.7.1", "quarantine", "auth_results",
		"smtpd_hard_error_limit", "message_size_limit", "10240000", "5m0s per line", "STARTTLS"} {
		if !strings.Contains(help, want) {
			t.Errorf("-h lacks %q", want)
		}
	}
}

// TestLimitsApplied: applyLimits turns on every limit with the documented value.
func TestLimitsApplied(t *testing.T) {
	var s smtpd.Server
	applyLimits(&s)
	if s.MaxProcessings != 100 || s.MaxConnections != 1000 || s.MaxConnectionsPerIP != 50 ||
		s.WaitTimeout != 30*time.Second || s.IOCmdTimeout != 5*time.Minute || s.MaxErrors != 20 ||
		s.MaxJunkCommands != 100 || s.MaxRecipients != 1000 || s.MaxMessageSize != 10240000 ||
		s.MinDataRate != 200 || s.TLSMode != smtpd.TLSOptional || !s.EnhancedStatusCodes ||
		s.AuthMode != smtpd.AuthForbidden {
		t.Errorf("limits: %+v", &s)
	}
}
