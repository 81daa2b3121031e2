package realmilter

import (
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Suite holds daemons that the tests of one binary share: each is started once,
// by the first test that asks for it, and all are stopped by Close, which
// TestMain calls after m.Run. Its zero value is ready to use.
//
//	var suite realmilter.Suite
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		if err := suite.Close(); err != nil {
//			fmt.Println(err)
//			code = 1
//		}
//		os.Exit(code)
//	}
type Suite struct {
	mu       sync.Mutex
	errs     []string // failures found after the starting test ended
	cleanups []func()
	started  map[string]*shared
	closed   bool
}

// shared is one daemon (or set of daemons) of a Suite.
type shared struct {
	once  sync.Once
	value any
	err   string // why it did not start: every test asking for it fails with it
	skip  string // why it was skipped: every test asking for it is skipped
}

// Shared returns what start returned the first time any test asked for key.
// start runs once, with t for its failures (t.Fatalf fails the test that started
// it, and every later test that asks for key) and the suite for its cleanups.
func Shared[V any](s *Suite, t T, key string, start func(T) V) V {
	t.Helper()
	s.mu.Lock()
	if s.started == nil {
		s.started = map[string]*shared{}
	}
	sh := s.started[key]
	if sh == nil {
		sh = &shared{}
		s.started[key] = sh
	}
	closed := s.closed
	s.mu.Unlock()
	if closed {
		t.Fatalf("realmilter: suite closed, cannot start %s", key)
	}
	sh.once.Do(func() {
		st := &suiteT{T: t, s: s, sh: sh}
		defer func() {
			// t.Fatalf and t.Skipf end start by runtime.Goexit: the test that
			// started it ends as it would have; the later ones learn why.
			if sh.value == nil && sh.err == "" && sh.skip == "" {
				sh.err = key + " did not start (see the test that started it)"
			}
		}()
		sh.value = start(st)
	})
	if sh.skip != "" {
		t.Skipf("%s", sh.skip)
	}
	if sh.err != "" {
		t.Fatalf("realmilter: %s", sh.err)
	}
	return sh.value.(V)
}

// Close stops every daemon of the suite, the last started first. It returns
// what went wrong with them meanwhile (a daemon that reached beyond loopback):
// TestMain should then exit with a failure.
func (s *Suite) Close() error {
	s.mu.Lock()
	s.closed = true
	cs := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) > 0 {
		return errors.New(strings.Join(s.errs, "\n"))
	}
	return nil
}

// suiteT is the T a shared daemon is started with: the test's, but with the
// suite's lifetime. Its Failed is the starting test's, so a daemon's output is
// shown when the test that started it failed.
type suiteT struct {
	T
	s  *Suite
	sh *shared
}

// Fatalf records why the start failed, for the later tests, and fails this one.
func (st *suiteT) Fatalf(format string, args ...any) {
	st.sh.err = fmt.Sprintf(format, args...)
	st.T.Fatalf(format, args...)
}

// Skipf records why the start was skipped, for the later tests, and skips this one.
func (st *suiteT) Skipf(format string, args ...any) {
	st.sh.skip = fmt.Sprintf(format, args...)
	st.T.Skipf(format, args...)
}

// Cleanup leaves f to the suite's Close.
func (st *suiteT) Cleanup(f func()) {
	st.s.mu.Lock()
	defer st.s.mu.Unlock()
	st.s.cleanups = append(st.s.cleanups, f)
}

// Failed is false once the starting test is over: the daemon's output matters to
// the tests that fail, and they log it themselves.
func (st *suiteT) Failed() bool { return false }

// Errorf of a suite daemon runs at Close, after its test ended: Close reports it.
func (st *suiteT) Errorf(format string, args ...any) {
	st.s.mu.Lock()
	defer st.s.mu.Unlock()
	st.s.errs = append(st.s.errs, fmt.Sprintf(format, args...))
}

// Logf of a suite daemon may run after its test ended (at Close): it prints.
func (st *suiteT) Logf(format string, args ...any) {
	fmt.Printf("realmilter: "+format+"\n", args...)
}
