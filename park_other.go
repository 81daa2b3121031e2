//go:build !linux

package smtpd

import "time"

// parkPolled is Linux's epoll poller; elsewhere parked sessions wait in a goroutine.
func parkPolled(*Session) bool { return false }

// unpark has nothing to do where parked sessions wait in a goroutine: Shutdown's
// and Close's deadline and close reach its read.
func unpark(*Session, error) {}

// tightenParked: parked goroutines keep their read deadline where there is no poller.
func tightenParked(*Server, time.Duration) {}
