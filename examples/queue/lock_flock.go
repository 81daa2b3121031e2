//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes an exclusive lock on dir (a lock file in it), so that two
// processes never run an embedded server on the same JetStream store: nats-server
// does not guard against that, and two writers would corrupt it. The lock goes
// with the returned file (closed by queue.close) or the process.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "queue.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("-data %s is in use by another process (a receiver running?); use -nats to reach its server instead", dir)
		}
		return nil, fmt.Errorf("locking -data %s: %w", dir, err)
	}
	return f, nil
}
