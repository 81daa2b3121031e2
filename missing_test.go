package smtpd

import (
	"os"
	"testing"
)

// clientsMissing skips the test for why, or fails it when the environment variable
// CI is set: what a test needs from its machine (a loopback address such as
// 127.0.0.2, enough open files) must be there in CI. The tests that drive programs
// we did not write live in the interop module (interop/), with their own copy.
func clientsMissing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set and this machine lacks what the test needs: %s", why)
	}
	t.Skip(why)
}
