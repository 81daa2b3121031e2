package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/midismtp/smtpd/smtptest"
)

// This file runs mx as another module's test would (the Postfix differential in
// milter/ is one): go build into a temporary folder, start the program with
// -ports 0, -out, -authserv-id and -resolver, read the "listening on" line.

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := suite.Close(); err != nil { // the real milters' daemons
		fmt.Println(err)
		code = 1
	}
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildMX builds the mx program once per test binary and returns its path.
func buildMX(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "mx-build-"); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, "mx"), ".")
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.New(err.Error() + ": " + string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return filepath.Join(buildDir, "mx")
}

// mxProcess is the mx program running.
type mxProcess struct {
	cmd    *exec.Cmd
	Addr   string
	Out    string
	stderr *syncBuffer
	exited chan error
}

var listenLineRe = regexp.MustCompile(`^listening on (\S+)$`)

// startProcess starts the mx program with -ports 0, a temporary -out, -authserv-id
// mx.test and a resolver where nothing answers, then args; it is killed at
// cleanup if still running.
func startProcess(t testing.TB, args ...string) *mxProcess {
	t.Helper()
	p := &mxProcess{Out: t.TempDir(), stderr: &syncBuffer{}, exited: make(chan error, 1)}
	args = append([]string{"-ports", "0", "-out", p.Out, "-authserv-id", "mx.test", "-resolver", deadDNS(t)}, args...)
	p.cmd = exec.Command(buildMX(t), args...)
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Kill() // by its PID; a no-op once it exited
		<-p.exited
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listenLineRe.FindStringSubmatch(sc.Text()); m != nil {
				lines <- m[1]
			}
		}
		p.exited <- p.cmd.Wait()
	}()
	select {
	case p.Addr = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatalf("no listening line within 30s; stderr:\n%s", p.stderr)
	}
	return p
}

// wait waits up to d for the program to exit and returns its error.
func (p *mxProcess) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err // for the cleanup
		return err
	case <-time.After(d):
		t.Fatalf("mx still running after %s; stderr:\n%s", d, p.stderr)
		return nil
	}
}

// TestGracefulStop: on SIGTERM and on SIGINT, mx closes its listener, answers
// idle sessions 421, lets a message in the middle of DATA finish with 250 and
// stores it, and exits 0.
func TestGracefulStop(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			p := startProcess(t)
			srv := &smtptest.Server{Addr: p.Addr}
			idle := srv.DialGreeted(t)
			idle.Cmd("EHLO client.test", 250)
			busy := srv.DialGreeted(t)
			busy.Cmd("EHLO client.test", 250)
			busy.Cmd("MAIL FROM:<alice@example.test>", 250)
			busy.Cmd("RCPT TO:<bob@dest.test>", 250)
			busy.Cmd("DATA", 354)
			half := len(plainMessage) / 2
			busy.Send(plainMessage[:half])

			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			idle.Expect(421)
			idle.ExpectClosed()
			waitFor(t, "the listener to close", func() bool {
				c, err := net.DialTimeout("tcp", p.Addr, time.Second)
				if err == nil {
					c.Close()
				}
				return err != nil
			})
			busy.Send(plainMessage[half:] + ".\r\n")
			busy.Expect(250)
			busy.Expect(421)
			if err := p.wait(t, 20*time.Second); err != nil {
				t.Errorf("exit: %v; stderr:\n%s", err, p.stderr)
			}
			if _, rest := ourField(t, only(t, p.Out).EML); string(rest) != plainMessage {
				t.Errorf("stored %q", rest)
			}
			if !strings.Contains(p.stderr.String(), "shutting down") {
				t.Errorf("stderr:\n%s", p.stderr)
			}
		})
	}
}

// TestProcessFlagsSuffice: what another module's test needs: -ports 0 prints
// the port it got, -authserv-id names our field, -out is where the message is.
func TestProcessFlagsSuffice(t *testing.T) {
	p := startProcess(t, "-authserv-id", "receiver.test")
	c := (&smtptest.Server{Addr: p.Addr}).DialGreeted(t)
	c.Cmd("EHLO client.test", 250)
	if code, text := send(t, c, "alice@example.test", []string{"bob@dest.test"}, plainMessage); code != 250 {
		t.Fatalf("%d %s", code, text)
	}
	if m := only(t, p.Out); !strings.HasPrefix(string(m.EML), "Authentication-Results: receiver.test;") {
		t.Errorf(".eml begins %q", m.EML[:40])
	}
}
