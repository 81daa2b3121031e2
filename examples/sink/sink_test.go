package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/stretchr/testify/require"
)

// TestMain keeps the tests independent of the caller's environment: a SINK_PASS
// set there would satisfy -auth without -pass.
func TestMain(m *testing.M) {
	os.Unsetenv("SINK_PASS")
	os.Exit(m.Run())
}

func TestSinkSeveralListeners(t *testing.T) {
	ports := sinkFreePorts(t, 2)
	p1, p2 := ports[0], ports[1]
	r := startSink(t, 2, "-ports", p1+":"+p2, "-quiet")
	require.Equal(t, []string{"127.0.0.1:" + p1, "127.0.0.1:" + p2}, r.addrs)
	for _, a := range r.addrs {
		require.NoError(t, smtp.SendMail(a, nil, "a@example.com", []string{"b@example.com"}, []byte("Subject: x\r\n\r\nbody\r\n")))
	}
}

func TestSinkImplicitTLS(t *testing.T) {
	dir := t.TempDir()
	ports := sinkFreePorts(t, 2)
	p1, p2 := ports[0], ports[1]
	r := startSink(t, 2, "-ports", p1+":"+p2, "-tls", "optional", "-implicit-tls", p2, "-out", dir)

	conn, err := tls.Dial("tcp", "127.0.0.1:"+p2, &tls.Config{InsecureSkipVerify: true})
	require.NoError(t, err)
	c, err := smtp.NewClient(conn, "127.0.0.1")
	require.NoError(t, err)
	defer c.Close()
	sinkTransaction(t, c, "a@example.com", "b@example.com", "Subject: implicit\r\n\r\nbody\r\n")

	id := sinkOnlyMessage(t, dir)
	rec := sinkRecord(t, dir, id)
	require.Equal(t, true, rec["encrypted"])
	require.Contains(t, r.stdout.String(), "listening on 127.0.0.1:"+p1+"\n")
}

func TestSinkAuth(t *testing.T) {
	const user, pass = "alice", "s3cret+/=ü"
	authArgs := []string{"-auth", "required", "-user", user, "-pass", pass}
	tests := []struct {
		name      string
		tls       string // -tls mode
		starttls  bool
		auth      smtp.Auth // nil: no AUTH
		wantAuth  int       // reply code of AUTH when it fails
		wantMail  int       // reply code of MAIL when it fails
		encrypted bool
	}{
		{name: "plaintext PLAIN, TLS forbidden", tls: "forbidden", auth: smtp.PlainAuth("", user, pass, "127.0.0.1")},
		{name: "plaintext LOGIN, TLS forbidden", tls: "forbidden", auth: sinkLoginAuth{user, pass}},
		{name: "STARTTLS PLAIN", tls: "optional", starttls: true, auth: smtp.PlainAuth("", user, pass, "127.0.0.1"), encrypted: true},
		{name: "STARTTLS PLAIN, authorization id is the user", tls: "required", starttls: true, auth: smtp.PlainAuth(user, user, pass, "127.0.0.1"), encrypted: true},
		{name: "STARTTLS LOGIN", tls: "required", starttls: true, auth: sinkLoginAuth{user, pass}, encrypted: true},
		{name: "wrong password", tls: "forbidden", auth: smtp.PlainAuth("", user, "wrong", "127.0.0.1"), wantAuth: 535},
		{name: "wrong user", tls: "optional", starttls: true, auth: smtp.PlainAuth("", "bob", pass, "127.0.0.1"), wantAuth: 535},
		{name: "password prefix", tls: "optional", starttls: true, auth: sinkLoginAuth{user, pass[:3]}, wantAuth: 535},
		{name: "other authorization id", tls: "optional", starttls: true, auth: smtp.PlainAuth("root", user, pass, "127.0.0.1"), wantAuth: 535},
		{name: "AUTH on plaintext when TLS is available", tls: "optional", auth: smtp.PlainAuth("", user, pass, "127.0.0.1"), wantAuth: 538},
		{name: "no AUTH", tls: "forbidden", wantMail: 530},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			r := startSink(t, 1, append([]string{"-ports", "0", "-out", dir, "-tls", tc.tls}, authArgs...)...)
			c, err := smtp.Dial(r.addrs[0])
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.Hello("client.example"))
			if tc.starttls {
				require.NoError(t, c.StartTLS(&tls.Config{InsecureSkipVerify: true}))
			}
			if tc.auth != nil {
				err := c.Auth(tc.auth)
				if tc.wantAuth != 0 {
					require.Equal(t, tc.wantAuth, sinkCode(err), "AUTH: %v", err)
					require.Empty(t, sinkFiles(t, dir))
					return
				}
				require.NoError(t, err)
			}
			if tc.wantMail != 0 {
				err := c.Mail("a@example.com")
				require.Equal(t, tc.wantMail, sinkCode(err), "MAIL: %v", err)
				return
			}
			sinkTransaction(t, c, "a@example.com", "b@example.com", "Subject: auth\r\n\r\nbody\r\n")

			rec := sinkRecord(t, dir, sinkOnlyMessage(t, dir))
			require.Equal(t, user, rec["authentication_id"])
			require.Equal(t, user, rec["authorization_id"])
			require.Equal(t, tc.encrypted, rec["encrypted"])
			require.Equal(t, "client.example", rec["helo"])
			require.NotContains(t, r.stderr.String(), pass, "the password never reaches the log")
		})
	}
}

func TestSinkFlagErrors(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		usage bool   // a command-line error, printed with the usage
		want  string // in the error
	}{
		{name: "bad -crlf", args: []string{"-crlf", "bogus"}, usage: true, want: `invalid value "bogus" for flag -crlf`},
		{name: "bad -auth", args: []string{"-auth", "maybe"}, usage: true, want: "-auth"},
		{name: "bad -tls", args: []string{"-tls", "yes"}, usage: true, want: "-tls"},
		{name: "bad -ciphers", args: []string{"-tls", "optional", "-ciphers", "best"}, usage: true, want: "-ciphers"},
		{name: "bad -log-level", args: []string{"-log-level", "loud"}, usage: true, want: "-log-level"},
		{name: "bad -timeout", args: []string{"-timeout", "5"}, usage: true, want: "-timeout"},
		{name: "unknown flag", args: []string{"-nope"}, usage: true, want: "-nope"},
		{name: "argument", args: []string{"extra"}, usage: true, want: `unexpected argument "extra"`},
		{name: "auth without credential", args: []string{"-auth", "required"}, usage: true, want: "needs -user and -pass"},
		{name: "auth without password", args: []string{"-auth", "optional", "-user", "u"}, usage: true, want: "needs -user and -pass"},
		{name: "credential without auth", args: []string{"-user", "u", "-pass", "p"}, usage: true, want: "need -auth"},
		{name: "cert without tls", args: []string{"-cert", "x.pem"}, usage: true, want: "need -tls"},
		{name: "key without cert", args: []string{"-tls", "optional", "-key", "x.key"}, usage: true, want: "-key needs -cert"},
		{name: "negative grace", args: []string{"-grace", "-1s"}, usage: true, want: "-grace"},
		{name: "max-connections below max-processings", args: []string{"-max-connections", "10"}, want: "MaxConnections"},
		{name: "implicit TLS without TLS", args: []string{"-implicit-tls", "0"}, want: "ImplicitTLSPorts"},
		{name: "unreadable certificate", args: []string{"-tls", "optional", "-cert", "/nonexistent/cert.pem"}, want: "/nonexistent/cert.pem"},
		{name: "bad host", args: []string{"-hosts", "127.0.0.1,,::1"}, want: "smtpd"},
		{name: "out is a file", args: []string{"-out", "/dev/null"}, want: "-out"},
		{name: "bad -wait-timeout", args: []string{"-wait-timeout", "5"}, usage: true, want: "-wait-timeout"},
		{name: "bad -max-errors", args: []string{"-max-errors", "many"}, usage: true, want: "-max-errors"},
		{name: "negative -max-per-ip", args: []string{"-max-per-ip", "-1"}, want: "MaxConnectionsPerIP"},
		{name: "negative -greet-delay", args: []string{"-greet-delay", "-1s"}, want: "GreetDelay"},
		{name: "bad -proxy-trusted", args: []string{"-proxy-trusted", "10.0.0.0/33"}, want: "ProxyTrustedNetworks"},
		{name: "bad -xclient-trusted", args: []string{"-xclient-trusted", "example.com"}, want: "XClientTrustedNetworks"},
		{name: "bad -client-auth", args: []string{"-tls", "optional", "-client-auth", "always"}, usage: true, want: "-client-auth"},
		{name: "client-auth without tls", args: []string{"-client-auth", "request"}, usage: true, want: "need -tls"},
		{name: "require-tls without tls", args: []string{"-require-tls"}, usage: true, want: "need -tls"},
		{name: "unreadable -client-ca", args: []string{"-tls", "optional", "-client-ca", "/nonexistent/ca.pem"}, usage: true, want: "/nonexistent/ca.pem"},
		{name: "mechanisms without auth", args: []string{"-auth-mechanisms", "PLAIN"}, usage: true, want: "need -auth"},
		{name: "token mechanism without token", args: []string{"-auth", "optional", "-user", "u", "-pass", "p", "-auth-mechanisms", "XOAUTH2"}, usage: true, want: "needs -token"},
		{name: "unknown mechanism", args: []string{"-auth", "optional", "-user", "u", "-pass", "p", "-auth-mechanisms", "CRAM-MD5"}, want: "unknown mechanism"},
		{name: "EXTERNAL without client certificates", args: []string{"-tls", "optional", "-auth", "optional", "-user", "u", "-pass", "p", "-auth-mechanisms", "EXTERNAL"}, want: "TLSClientAuth"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stderr, err := runSinkError(t, append([]string{"-ports", "0"}, tc.args...)...)
			require.Error(t, err)
			require.ErrorContains(t, err, tc.want)
			var ue usageError
			require.Equal(t, tc.usage, errors.As(err, &ue), "usage error? %v", err)
			if tc.usage {
				require.Contains(t, stderr, "Usage: sink [flags]")
			}
		})
	}
}

func TestSinkHelp(t *testing.T) {
	stderr, err := runSinkError(t, "-h")
	require.ErrorIs(t, err, flag.ErrHelp)
	require.Contains(t, stderr, "load-test")
	require.Contains(t, stderr, "SINK_PASS")
	require.Regexp(t, `-max-processings int\n\s+.*\(0: 100\)`, stderr)
	require.NotContains(t, stderr, "(default 64)")
	for _, name := range []string{"hosts", "ports", "max-processings", "max-connections", "crlf", "timeout",
		"buffer-max", "max-message", "pipelining", "i18n", "auth", "user", "pass", "tls", "cert", "key", "cn",
		"san", "implicit-tls", "out", "quiet", "log-level",
		"max-errors", "max-junk", "max-per-ip", "wait-timeout", "greet-delay", "min-data-rate",
		"auth-failure-delay", "max-buffered", "proxy-trusted", "xclient-trusted", "enhanced-status-codes",
		"auth-mechanisms", "token", "client-auth", "client-ca", "require-tls"} {
		require.Regexp(t, `(?m)^  -`+name+`\b`, stderr)
	}
}

func TestSinkFlagsReachServer(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	s := &cfg.srv
	require.Zero(t, s.MaxProcessings, "the library's default (100)")
	require.Zero(t, s.MaxErrors)
	require.Zero(t, s.MaxJunkCommands)
	require.Zero(t, s.MaxConnectionsPerIP)
	require.Zero(t, s.WaitTimeout)
	require.Zero(t, s.GreetDelay)
	require.Zero(t, s.MinDataRate)
	require.Zero(t, s.AuthFailureDelay)
	require.Zero(t, s.MaxBufferedData)
	require.Empty(t, s.ProxyTrustedNetworks)
	require.Empty(t, s.XClientTrustedNetworks)
	require.False(t, s.EnhancedStatusCodes)

	cfg, err = parseFlags([]string{
		"-max-processings", "7", "-max-errors", "3", "-max-junk", "-1", "-max-per-ip", "5",
		"-wait-timeout", "1m30s", "-greet-delay", "2s", "-min-data-rate", "800",
		"-auth", "optional", "-user", "u", "-pass", "p", "-auth-failure-delay", "1500ms",
		"-max-buffered", "1048576", "-proxy-trusted", "10.0.0.0/8, 192.0.2.1",
		"-xclient-trusted", "127.0.0.1", "-enhanced-status-codes",
		"-auth-mechanisms", "PLAIN,XOAUTH2", "-token", "tok", "-tls", "optional", "-client-auth", "verify-if-given",
		"-require-tls",
	}, io.Discard)
	require.NoError(t, err)
	s = &cfg.srv
	require.Equal(t, 7, s.MaxProcessings)
	require.Equal(t, 3, s.MaxErrors)
	require.Equal(t, -1, s.MaxJunkCommands)
	require.Equal(t, 5, s.MaxConnectionsPerIP)
	require.Equal(t, 90*time.Second, s.WaitTimeout)
	require.Equal(t, 2*time.Second, s.GreetDelay)
	require.Equal(t, 800, s.MinDataRate)
	require.Equal(t, 1500*time.Millisecond, s.AuthFailureDelay)
	require.Equal(t, 1<<20, s.MaxBufferedData)
	require.Equal(t, "10.0.0.0/8, 192.0.2.1", s.ProxyTrustedNetworks)
	require.Equal(t, "127.0.0.1", s.XClientTrustedNetworks)
	require.True(t, s.EnhancedStatusCodes)
	require.Equal(t, smtpd.AuthOptional, s.AuthMode)
	require.Equal(t, "p", cfg.pass)
	require.Equal(t, []string{"PLAIN", "XOAUTH2"}, s.AuthMechanisms)
	require.Equal(t, "tok", cfg.token)
	require.Equal(t, tls.VerifyClientCertIfGiven, s.TLSClientAuth)
	require.True(t, s.RequireTLS)
}

func TestSinkEnhancedStatusCodesLive(t *testing.T) {
	r := startSink(t, 1, "-ports", "0", "-enhanced-status-codes", "-quiet")
	c, err := smtp.Dial(r.addrs[0])
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Hello("client.example"))
	ok, _ := c.Extension("ENHANCEDSTATUSCODES")
	require.True(t, ok, "EHLO lists ENHANCEDSTATUSCODES")
	id, err := c.Text.Cmd("NOOP")
	require.NoError(t, err)
	c.Text.StartResponse(id)
	_, msg, err := c.Text.ReadResponse(250)
	c.Text.EndResponse(id)
	require.NoError(t, err)
	require.Regexp(t, `^2\.0\.0\b`, msg)
}

// TestSinkPassFromEnvironment is not parallel: it sets SINK_PASS.
func TestSinkPassFromEnvironment(t *testing.T) {
	const user, envPass = "alice", "from-the-env"
	t.Setenv("SINK_PASS", envPass)

	cfg, err := parseFlags([]string{"-auth", "optional", "-user", user}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, envPass, cfg.pass, "empty -pass: SINK_PASS")
	cfg, err = parseFlags([]string{"-auth", "optional", "-user", user, "-pass", "cli"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "cli", cfg.pass, "-pass wins over SINK_PASS")
	cfg, err = parseFlags(nil, io.Discard)
	require.NoError(t, err, "with -auth forbidden a SINK_PASS in the environment is ignored")
	require.Empty(t, cfg.pass)

	dir := t.TempDir()
	r := startSink(t, 1, "-ports", "0", "-out", dir, "-auth", "required", "-user", user)
	auth := func(pass string) error {
		c, err := smtp.Dial(r.addrs[0])
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.Hello("client.example"))
		if err := c.Auth(smtp.PlainAuth("", user, pass, "127.0.0.1")); err != nil {
			return err
		}
		sinkTransaction(t, c, "a@example.com", "b@example.com", "Subject: env\r\n\r\nbody\r\n")
		return nil
	}
	require.Equal(t, 535, sinkCode(auth("wrong")))
	require.NoError(t, auth(envPass))
	rec := sinkRecord(t, dir, sinkOnlyMessage(t, dir))
	require.Equal(t, user, rec["authentication_id"])
	require.NotContains(t, r.stderr.String(), envPass, "the password never reaches the log")
}

func TestSinkGracefulStopFinishesMessage(t *testing.T) {
	dir := t.TempDir()
	r := startSink(t, 1, "-ports", "0", "-out", dir)
	conn, err := net.DialTimeout("tcp", r.addrs[0], 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	c := textproto.NewConn(conn)
	cmd := func(line string, code int) {
		t.Helper()
		if line != "" {
			require.NoError(t, c.PrintfLine("%s", line))
		}
		_, _, err := c.ReadResponse(code)
		require.NoError(t, err, "after %q", line)
	}
	cmd("", 220)
	cmd("EHLO client.example", 250)
	cmd("MAIL FROM:<a@example.com>", 250)
	cmd("RCPT TO:<b@example.com>", 250)
	cmd("DATA", 354)
	_, err = conn.Write([]byte("Subject: graceful\r\n\r\nfirst half\r\n"))
	require.NoError(t, err)

	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	// The listener closes when the shutdown begins.
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", r.addrs[0], time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 10*time.Second, 10*time.Millisecond, "the listener stays open after the stop")

	_, err = conn.Write([]byte("second half\r\n.\r\n"))
	require.NoError(t, err)
	cmd("", 250)
	cmd("", 421)
	require.NoError(t, <-stopped)

	eml, err := os.ReadFile(filepath.Join(dir, sinkOnlyMessage(t, dir)+".eml"))
	require.NoError(t, err)
	require.Equal(t, "Subject: graceful\r\n\r\nfirst half\r\nsecond half\r\n", string(eml))
}
