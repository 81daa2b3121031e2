package smtpd

import "sync/atomic"

// Stats are a server's counters since it was made: dependency-free numbers for a
// metrics exporter (see examples/metrics for Prometheus). Counters only grow; the
// "now" values (open, waiting, active) are gauges.
type Stats struct {
	ConnectionsTotal   int64 // connections accepted
	ConnectionsOpen    int64 // connections open now, waiting ones included
	ConnectionsWaiting int64 // connections waiting for a processing slot now (stress mode while > 0)
	SessionsActive     int64 // sessions holding a processing slot now
	MessagesAccepted   int64 // messages answered 250 after OnMessage
	MessagesRefused    int64 // message transfers answered with an error (hook, size, budget, CRLF)
	BytesAccepted      int64 // bytes of accepted messages (Message.Bytesize)
	Replies2xx         int64 // replies sent, by class
	Replies3xx         int64
	Replies4xx         int64
	Replies5xx         int64
	AuthSuccesses      int64 // AUTH answered 235
	AuthFailures       int64 // AUTH answered 535
	TLSHandshakes      int64 // TLS handshakes completed (STARTTLS and implicit)
	TLSFailures        int64 // TLS handshakes failed
	Limits             LimitStats
}

// LimitStats count how often each limit ended a command, a message or a connection.
type LimitStats struct {
	MaxConnections      int64 // 421 over MaxConnections
	MaxConnectionsPerIP int64 // 421 over MaxConnectionsPerIP
	WaitTimeout         int64 // 421 after WaitTimeout without a slot
	WaitGone            int64 // clients that left while waiting for a slot
	Pregreet            int64 // 554 for talking before the banner
	NonSMTP             int64 // HTTP clients closed
	MaxErrors           int64 // 421 after MaxErrors
	MaxJunkCommands     int64 // 421 after MaxJunkCommands
	CommandTimeout      int64 // 421 after the command timeout
	CommandTooLong      int64 // 500 for a command line over 2048 bytes
	AuthTooLong         int64 // 500 for an AUTH response over 12288 bytes
	LineTooLong         int64 // 421 for a line over IOBufferMaxSize
	MinDataRate         int64 // 421 for a transfer under the minimum data rate
	MaxMessageSize      int64 // 552 over MaxMessageSize (at MAIL or during data)
	MaxBufferedData     int64 // 452 over MaxBufferedData
	MaxRecipients       int64 // 452 over MaxRecipients
	MaxAuthFailures     int64 // 421 after MaxAuthFailures
	ProxyRefused        int64 // connections from a trusted proxy closed for a bad PROXY header
	XClientRefused      int64 // XCLIENT from an untrusted client (550)
}

// serverStats is Stats as atomic counters.
type serverStats struct {
	ConnectionsTotal, SessionsActive                 atomic.Int64
	MessagesAccepted, MessagesRefused, BytesAccepted atomic.Int64
	AuthSuccesses, AuthFailures                      atomic.Int64
	TLSHandshakes, TLSFailures                       atomic.Int64
	replies                                          [6]atomic.Int64

	MaxConnections, MaxConnectionsPerIP, WaitTimeout, WaitGone, Pregreet, NonSMTP atomic.Int64
	MaxErrors, MaxJunkCommands, CommandTimeout, CommandTooLong, AuthTooLong       atomic.Int64
	LineTooLong, MinDataRate, MaxMessageSize, MaxBufferedData, MaxRecipients      atomic.Int64
	MaxAuthFailures, ProxyRefused, XClientRefused                                 atomic.Int64
}

// limit counts one hit of a limit.
func (st *serverStats) limit(c *atomic.Int64) { c.Add(1) }

// reply counts one reply by its class.
func (st *serverStats) reply(code int) {
	if c := code / 100; c >= 0 && c < len(st.replies) {
		st.replies[c].Add(1)
	}
}

// Stats returns a snapshot of the server's counters.
func (srv *Server) Stats() Stats {
	st := &srv.stats
	return Stats{
		ConnectionsTotal:   st.ConnectionsTotal.Load(),
		ConnectionsOpen:    srv.connections.Load(),
		ConnectionsWaiting: srv.adm.waitingNow(),
		SessionsActive:     st.SessionsActive.Load(),
		MessagesAccepted:   st.MessagesAccepted.Load(),
		MessagesRefused:    st.MessagesRefused.Load(),
		BytesAccepted:      st.BytesAccepted.Load(),
		Replies2xx:         st.replies[2].Load(),
		Replies3xx:         st.replies[3].Load(),
		Replies4xx:         st.replies[4].Load(),
		Replies5xx:         st.replies[5].Load(),
		AuthSuccesses:      st.AuthSuccesses.Load(),
		AuthFailures:       st.AuthFailures.Load(),
		TLSHandshakes:      st.TLSHandshakes.Load(),
		TLSFailures:        st.TLSFailures.Load(),
		Limits: LimitStats{
			MaxConnections:      st.MaxConnections.Load(),
			MaxConnectionsPerIP: st.MaxConnectionsPerIP.Load(),
			WaitTimeout:         st.WaitTimeout.Load(),
			WaitGone:            st.WaitGone.Load(),
			Pregreet:            st.Pregreet.Load(),
			NonSMTP:             st.NonSMTP.Load(),
			MaxErrors:           st.MaxErrors.Load(),
			MaxJunkCommands:     st.MaxJunkCommands.Load(),
			CommandTimeout:      st.CommandTimeout.Load(),
			CommandTooLong:      st.CommandTooLong.Load(),
			AuthTooLong:         st.AuthTooLong.Load(),
			LineTooLong:         st.LineTooLong.Load(),
			MinDataRate:         st.MinDataRate.Load(),
			MaxMessageSize:      st.MaxMessageSize.Load(),
			MaxBufferedData:     st.MaxBufferedData.Load(),
			MaxRecipients:       st.MaxRecipients.Load(),
			MaxAuthFailures:     st.MaxAuthFailures.Load(),
			ProxyRefused:        st.ProxyRefused.Load(),
			XClientRefused:      st.XClientRefused.Load(),
		},
	}
}

// budget is a server-wide byte budget (MaxBufferedData).
type budget struct{ used atomic.Int64 }

// reserve takes n bytes if used+n stays within max (max <= 0: no limit).
func (b *budget) reserve(n, max int64) bool {
	for {
		used := b.used.Load()
		if max > 0 && used+n > max {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

func (b *budget) release(n int64) { b.used.Add(-n) }
