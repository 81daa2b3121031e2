//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package main

import "os"

// lockDir does nothing here: on this system, make sure yourself that only one
// process uses a -data folder at a time.
func lockDir(dir string) (*os.File, error) {
	return nil, os.MkdirAll(dir, 0o750)
}
