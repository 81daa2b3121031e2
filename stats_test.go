package smtpd

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Stats may be read before the server starts (a metrics exporter set up first):
// every figure is zero, nobody is waiting.
func TestStatsBeforeStart(t *testing.T) {
	var srv Server
	require.Equal(t, Stats{}, srv.Stats())
}
