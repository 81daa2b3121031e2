package main

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
)

// This file is the tests' own milter: go-milter's server side (a protocol
// implementation we did not write) on loopback. It records the header fields,
// body and client address of each message it gets, and answers the end of the
// message as the test says. The real milters (OpenDKIM, spamass-milter) are in
// the e2e tests.

// testMilter is a running test milter.
type testMilter struct {
	Addr string // "inet:127.0.0.1:PORT"

	mu      sync.Mutex
	headers [][2]string // name, value of each field of the last message, in order
	body    []byte
	client  string // the address the connect event named
	eom     func(m gomilter.Modifier) (*gomilter.Response, error)
}

// startTestMilter starts a milter for the test. protocol may turn off stages
// (gomilter.OptNoBody ...); eom answers the end of each message (nil: continue).
func startTestMilter(t testing.TB, protocol gomilter.OptProtocol, eom func(m gomilter.Modifier) (*gomilter.Response, error)) *testMilter {
	t.Helper()
	tm := &testMilter{eom: eom}
	srv := gomilter.NewServer(
		gomilter.WithMilter(func() gomilter.Milter { return &testMilterBackend{tm: tm} }),
		gomilter.WithActions(gomilter.AllClientSupportedActionMasks&^gomilter.OptSetMacros),
		gomilter.WithProtocols(protocol),
	)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
	})
	tm.Addr = "inet:" + l.Addr().String()
	return tm
}

// Headers returns the fields of the last message the milter got.
func (tm *testMilter) Headers() [][2]string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return slices.Clone(tm.headers)
}

// Client returns the client address of the last connect event.
func (tm *testMilter) Client() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.client
}

// testMilterBackend is one milter connection.
type testMilterBackend struct {
	gomilter.NoOpMilter
	tm *testMilter
}

func (b *testMilterBackend) Connect(_, _ string, _ uint16, addr string, _ gomilter.Modifier) (*gomilter.Response, error) {
	b.tm.mu.Lock()
	b.tm.client = addr
	b.tm.mu.Unlock()
	return gomilter.RespContinue, nil
}

func (b *testMilterBackend) MailFrom(string, string, gomilter.Modifier) (*gomilter.Response, error) {
	b.tm.mu.Lock()
	b.tm.headers, b.tm.body = nil, nil
	b.tm.mu.Unlock()
	return gomilter.RespContinue, nil
}

func (b *testMilterBackend) Header(name, value string, _ gomilter.Modifier) (*gomilter.Response, error) {
	b.tm.mu.Lock()
	b.tm.headers = append(b.tm.headers, [2]string{name, value})
	b.tm.mu.Unlock()
	return gomilter.RespContinue, nil
}

func (b *testMilterBackend) BodyChunk(chunk []byte, _ gomilter.Modifier) (*gomilter.Response, error) {
	b.tm.mu.Lock()
	b.tm.body = append(b.tm.body, chunk...)
	b.tm.mu.Unlock()
	return gomilter.RespContinue, nil
}

func (b *testMilterBackend) EndOfMessage(m gomilter.Modifier) (*gomilter.Response, error) {
	if b.tm.eom == nil {
		return gomilter.RespContinue, nil
	}
	return b.tm.eom(m)
}
