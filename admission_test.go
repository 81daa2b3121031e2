//go:build unix

package smtpd

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The tests of the watched, fair wait for a processing slot and of stress mode
// (DESIGN.md, "Internet-facing"), over real loopback TCP. 127.0.0.0/8 is loopback on
// Linux, so clients "from other addresses" dial from 127.0.0.2, 127.1.x.y, ...

// admDial connects to addr from the local address ip (dialFrom) and returns the raw
// connection.
func admDial(t *testing.T, addr, ip string) net.Conn {
	t.Helper()
	return dialFrom(t, addr, ip).conn
}

// admFDs makes sure this process may open n files, raising the soft limit if needed.
func admFDs(t *testing.T, n uint64) {
	t.Helper()
	var rl syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl))
	if rl.Cur >= n {
		return
	}
	rl.Cur = min(n, rl.Max)
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl))
	if rl.Cur < n {
		clientsMissing(t, fmt.Sprintf("open file limit %d is below the %d this test needs", rl.Cur, n))
	}
}

// admCrowd opens n silent connections from each of ips to addr and waits until the
// server has wantWaiting connections waiting for a slot. They close when the test ends.
func admCrowd(t *testing.T, srv *Server, addr string, ips []string, n int, wantWaiting int64) []net.Conn {
	t.Helper()
	admFDs(t, uint64(2*n*len(ips)+512))
	conns := make([]net.Conn, 0, n*len(ips))
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for _, ip := range ips {
		for range n {
			conns = append(conns, admDial(t, addr, ip))
		}
	}
	admStat(t, "connections waiting", wantWaiting, admWaiting(srv))
	return conns
}

// admStat waits (20 s at most) until get returns want.
func admStat(t *testing.T, what string, want int64, get func() int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v := get()
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			require.Failf(t, "server state", "%s: want %d, have %d", what, want, v)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// admWaiting reads the number of connections waiting for a slot.
func admWaiting(srv *Server) func() int64 {
	return func() int64 { return srv.Stats().ConnectionsWaiting }
}

// admReply reads one reply within d without failing the test (for goroutines): its
// code and its last line's text.
func admReply(conn net.Conn, r *bufio.Reader, d time.Duration) (int, string, error) {
	conn.SetReadDeadline(time.Now().Add(d))
	for {
		line, err := r.ReadString('\n')
		if line = strings.TrimRight(line, "\r\n"); err == nil && len(line) < 4 {
			err = errors.New("short reply line " + strconv.Quote(line))
		}
		if err != nil {
			return 0, line, err
		}
		if code, err := strconv.Atoi(line[:3]); err != nil || line[3] == ' ' {
			return code, line[4:], err
		}
	}
}

// admEnd is how a drip client's session ended: the first reply other than 250
// (or the read error), and whether the server then closed the connection.
type admEnd struct {
	code   int
	text   string
	err    error
	closed bool
}

// admDripper is a slow client that holds a processing slot: it sends one line every
// interval (NOOP, RSET, or inside DATA a line of text), never faster, never silent
// long enough for IOCmdTimeout.
type admDripper struct {
	kind         string
	c            *client
	rounds       atomic.Int32 // 250 replies since the dripping began
	end          chan admEnd
	stop, halted chan struct{}
	once         sync.Once
}

func admStartDripper(t *testing.T, addr, kind string, every time.Duration) *admDripper {
	t.Helper()
	c := dialGreeted(t, addr)
	c.cmd("EHLO drip.example", 250)
	line := kind + "\r\n"
	switch kind {
	case "NOOP", "RSET":
		c.cmd(kind, 250) // one junk command already, before any stress
	case "DATA":
		c.cmd("MAIL FROM:<drip@example.com>", 250)
		c.cmd("RCPT TO:<rcpt@example.com>", 250)
		c.cmd("DATA", 354)
		c.send("Subject: drip\r\n")
		line = "one more line of a very slow message\r\n"
	}
	d := &admDripper{kind: kind, c: c, end: make(chan admEnd, 1), stop: make(chan struct{}), halted: make(chan struct{})}
	go func() { // the replies
		for {
			code, text, err := admReply(c.conn, c.r, 30*time.Second)
			if err == nil && code == 250 {
				d.rounds.Add(1)
				continue
			}
			e := admEnd{code: code, text: text, err: err}
			if err == nil {
				c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, rerr := c.r.ReadByte()
				var ne net.Error
				e.closed = rerr != nil && !(errors.As(rerr, &ne) && ne.Timeout())
			}
			d.end <- e
			return
		}
	}()
	go func() { // the drips
		defer close(d.halted)
		for {
			select {
			case <-d.stop:
				return
			case <-time.After(every):
			}
			c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c.conn, line); err != nil {
				return
			}
		}
	}()
	t.Cleanup(d.halt)
	return d
}

// halt stops the drips and waits until none is being written.
func (d *admDripper) halt() {
	d.once.Do(func() { close(d.stop) })
	<-d.halted
}

const admDripEvery = 2 * time.Second

// admDrippers starts the four slow clients: NOOP every 2 s, RSET every 2 s,
// a line of DATA every 2 s, and one more NOOP.
func admDrippers(t *testing.T, addr string) []*admDripper {
	var drips []*admDripper
	for _, kind := range []string{"NOOP", "RSET", "DATA", "NOOP"} {
		drips = append(drips, admStartDripper(t, addr, kind, admDripEvery))
	}
	return drips
}

// The lockout of MidiSmtpServer's defaults is gone. With MaxProcessings 4, four
// drip clients hold every slot; newcomers wait, which turns stress mode on, and each
// drip client loses its slot at its next drip (junk limit 1, 500 bytes/s in DATA):
// 421 and closed, and each newcomer gets its banner. Stress mode lasts while anyone
// waits, so four newcomers keep it on until every drip client has met it; with one
// newcomer, one drip client gives its slot up and the newcomer is served.
func TestAdmissionStressEvictsDripClients(t *testing.T) {
	for _, newcomers := range []int{4, 1} {
		t.Run(strconv.Itoa(newcomers)+" newcomers", func(t *testing.T) {
			t.Parallel()
			srv := &Server{MaxProcessings: 4, IOCmdTimeout: 4 * time.Second}
			addr := serve(t, srv)
			drips := admDrippers(t, addr)
			require.EqualValues(t, 4, srv.Stats().SessionsActive)
			var cs []*client
			for i := range newcomers {
				cs = append(cs, dialFrom(t, addr, "127.0.0.1"))
				admStat(t, "connections waiting", int64(i+1), admWaiting(srv))
			}
			start := time.Now()
			for _, c := range cs {
				// Without stress mode they would wait for WaitTimeout (30 s), past
				// this read's 10 s deadline: the drips never let IOCmdTimeout pass.
				c.expect(220)
				c.cmd("EHLO newcomer.example", 250)
			}
			t.Logf("%d newcomer(s) greeted after %v", newcomers, time.Since(start))
			st := srv.Stats()
			if newcomers == 1 {
				require.GreaterOrEqual(t, st.Limits.MaxJunkCommands+st.Limits.MinDataRate, int64(1))
				return
			}
			for _, d := range drips {
				var e admEnd
				select {
				case e = <-d.end:
				case <-time.After(15 * time.Second):
					require.Failf(t, "drip client kept its slot", "%s client", d.kind)
				}
				want := admEnd{code: 421, text: errTooManyJunk.Message, closed: true}
				if d.kind == "DATA" {
					want.text = errSlowData.Message
				}
				require.Equal(t, want, e, "%s client: 421 and closed", d.kind)
			}
			st = srv.Stats()
			require.EqualValues(t, 3, st.Limits.MaxJunkCommands)
			require.EqualValues(t, 1, st.Limits.MinDataRate)
			require.Zero(t, st.Limits.WaitTimeout)
			require.Zero(t, st.Limits.CommandTimeout)
			require.Zero(t, st.MessagesAccepted)
			require.Zero(t, st.ConnectionsWaiting)
		})
	}
}

// With the defaults (MaxProcessings 100) four drip clients do not matter: a newcomer
// gets its banner at once (within one drip interval), nobody waits, and the drip
// clients go on undisturbed (their slow message is delivered).
func TestAdmissionDefaultsDripClientsHarmless(t *testing.T) {
	t.Parallel()
	srv := &Server{}
	addr := serve(t, srv)
	drips := admDrippers(t, addr)
	start := time.Now()
	c := dial(t, addr)
	c.expect(220)
	require.Less(t, time.Since(start), admDripEvery, "the banner waited for a drip client")
	require.Zero(t, srv.Stats().ConnectionsWaiting)
	c.cmd("EHLO newcomer.example", 250)
	var r0 []int32
	for _, d := range drips {
		r0 = append(r0, d.rounds.Load())
		if d.kind == "DATA" { // end the slow message: its 250 is the round
			d.halt()
			d.c.send(".\r\n")
		}
	}
	for i, d := range drips {
		require.Eventually(t, func() bool { return d.rounds.Load() > r0[i] }, 10*time.Second, 10*time.Millisecond,
			"%s client got no 250 after the newcomer", d.kind)
		select {
		case e := <-d.end:
			require.Failf(t, "drip client lost its session", "%s client: %+v", d.kind, e)
		default:
		}
	}
	st := srv.Stats()
	require.EqualValues(t, 1, st.MessagesAccepted)
	require.Zero(t, st.Limits.MaxJunkCommands)
	require.Zero(t, st.Limits.MinDataRate)
	require.Zero(t, st.Limits.MaxErrors)
	c.cmd("QUIT", 221)
}

// admWriteSignal is a connection that reports its first write (a TLS client's
// ClientHello).
type admWriteSignal struct {
	net.Conn
	once  sync.Once
	wrote chan struct{}
}

func (c *admWriteSignal) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.once.Do(func() { close(c.wrote) })
	return n, err
}

// admFairness: two clients hold the two slots, 2000 idle connections from 127.0.0.1
// wait, and a newcomer from 127.0.0.2 (on the implicit-TLS port: its ClientHello
// sent while it waits) comes. Freed slots go round-robin by address: when the crowd
// is already being served (servedFirst: a turnover admitted one of it before the
// newcomer came), the newcomer gets the next turnover; when it comes before any
// turnover, the crowd's address is first in the round and the newcomer gets the
// second. Either way it is ahead of the 1999 still queued.
func admFairness(t *testing.T, implicitTLS, servedFirst bool) {
	ports := freePorts(t, 2)
	srv := &Server{Hosts: "127.0.0.1", Ports: ports[0] + ":" + ports[1], MaxProcessings: 2}
	if implicitTLS {
		srv.TLSMode, srv.ImplicitTLSPorts = TLSOptional, ports[1]
	}
	tlsStartServer(t, srv)
	plain := net.JoinHostPort("127.0.0.1", ports[0])
	holders := []*client{dialGreeted(t, plain), dialGreeted(t, plain)}
	const crowd = 2000
	admCrowd(t, srv, plain, []string{"127.0.0.1"}, crowd, crowd)
	waiting := admWaiting(srv)
	if servedFirst {
		holders[0].cmd("QUIT", 221) // turnover: one of the crowd is admitted
		admStat(t, "connections waiting", crowd-1, waiting)
		admStat(t, "sessions active", 2, func() int64 { return srv.Stats().SessionsActive })
	}

	newcomerAddr := plain
	if implicitTLS {
		newcomerAddr = net.JoinHostPort("127.0.0.1", ports[1])
	}
	nc := dialFrom(t, newcomerAddr, "127.0.0.2")
	var handshake chan error
	if implicitTLS {
		sig := &admWriteSignal{Conn: nc.conn, wrote: make(chan struct{})}
		tc := tls.Client(sig, tlsClientConfig(tlsPoolOf(t, srv.ActiveTLSConfig())))
		tc.SetDeadline(time.Now().Add(20 * time.Second))
		handshake = make(chan error, 1)
		go func() { handshake <- tc.Handshake() }()
		<-sig.wrote // the ClientHello is on its way while the client waits
		nc = &client{t: t, conn: tc, r: bufio.NewReader(tc)}
	}
	if servedFirst {
		admStat(t, "connections waiting", crowd, waiting)
	} else {
		admStat(t, "connections waiting", crowd+1, waiting)
		holders[0].cmd("QUIT", 221) // this turnover goes to the crowd, first in the round
		admStat(t, "connections waiting", crowd, waiting)
	}
	holders[1].cmd("QUIT", 221) // the next one goes to the newcomer's address
	if implicitTLS {
		require.NoError(t, <-handshake, "TLS handshake after admission")
	}
	require.Equal(t, "127.0.0.1 says welcome!", nc.expect(220))
	require.EqualValues(t, crowd-1, waiting(), "the newcomer was not ahead of the crowd")
	nc.cmd("EHLO newcomer.example", 250)
	nc.cmd("QUIT", 221)
	require.Zero(t, srv.Stats().Limits.WaitTimeout)
}

func TestAdmissionFairNewcomerAheadOfCrowd(t *testing.T) {
	t.Run("plain port", func(t *testing.T) { admFairness(t, false, true) })
	t.Run("implicit TLS port", func(t *testing.T) { admFairness(t, true, true) })
	t.Run("before any turnover", func(t *testing.T) { admFairness(t, false, false) })
}

// Behind idle connections from 300 addresses (2 each), a newcomer is never left in
// silence: the slots never free here, so it gets 421 once WaitTimeout (2 s) has
// passed, and so does every waiting connection of the crowd.
func TestAdmissionManyAddressesNeverSilent(t *testing.T) {
	const wait = 2 * time.Second
	srv := &Server{MaxProcessings: 2, WaitTimeout: wait}
	addr := serve(t, srv)
	h1, h2 := dialGreeted(t, addr), dialGreeted(t, addr)
	var ips []string
	for i := range 300 {
		ips = append(ips, "127.1."+strconv.Itoa(i/250)+"."+strconv.Itoa(1+i%250))
	}
	crowd := admCrowd(t, srv, addr, ips, 2, 600)
	start := time.Now()
	nc := dialFrom(t, addr, "127.0.0.2")
	require.Equal(t, errWaitTimeout.Message, nc.expect(421)) // within 10 s: never silence
	require.GreaterOrEqual(t, time.Since(start), wait, "421 before WaitTimeout")
	nc.expectClosed()
	for i, c := range crowd {
		code, text, err := admReply(c, bufio.NewReader(c), 10*time.Second)
		require.NoError(t, err, "crowd connection %d got no reply", i)
		require.Equal(t, 421, code, "crowd connection %d: %q", i, text)
	}
	require.EqualValues(t, 601, srv.Stats().Limits.WaitTimeout)
	require.Zero(t, srv.Stats().ConnectionsWaiting)
	h1.cmd("NOOP", 250)
	h2.cmd("NOOP", 250)
}

// Waiting clients that leave free their places at once: they stop counting against
// MaxConnections (new clients wait instead of getting 421) and are counted as
// WaitGone. WaitTimeout is for ever here, so nothing else could free them.
func TestAdmissionDepartedWaitersFreePlaces(t *testing.T) {
	srv := &Server{MaxProcessings: 2, MaxConnections: 6, WaitTimeout: -1}
	addr := serve(t, srv)
	h1 := dialGreeted(t, addr)
	h2 := dialGreeted(t, addr)
	var waiters []*client
	for i := range 4 {
		waiters = append(waiters, dial(t, addr))
		admStat(t, "connections waiting", int64(i+1), admWaiting(srv))
	}
	require.Equal(t, 6, srv.Connections())
	over := dial(t, addr) // the limit is full
	require.Equal(t, errBusy.Message, over.expect(421))
	over.expectClosed()
	require.EqualValues(t, 1, srv.Stats().Limits.MaxConnections)

	for _, w := range waiters {
		w.conn.Close()
	}
	admStat(t, "open connections", 2, func() int64 { return int64(srv.Connections()) })
	admStat(t, "connections waiting", 0, admWaiting(srv))
	require.EqualValues(t, 4, srv.Stats().Limits.WaitGone)

	var next []*client
	for i := range 4 {
		next = append(next, dial(t, addr))
		admStat(t, "connections waiting", int64(i+1), admWaiting(srv))
	}
	require.EqualValues(t, 1, srv.Stats().Limits.MaxConnections, "a new client was refused")
	h1.cmd("QUIT", 221)
	next[0].expect(220) // the oldest of them
	next[0].cmd("NOOP", 250)
	h2.cmd("NOOP", 250)
}

// A waiting client that talks before its banner is a pregreet: 554 and closed, its
// place freed, the sessions being served untouched.
func TestAdmissionPregreet(t *testing.T) {
	srv := &Server{MaxProcessings: 1, WaitTimeout: -1}
	addr := serve(t, srv)
	holder := dialGreeted(t, addr)
	w := dial(t, addr)
	admStat(t, "connections waiting", 1, admWaiting(srv))
	w.send("EHLO impatient.example\r\n")
	require.Equal(t, errPregreet.Message, w.expect(554))
	w.expectClosed()
	st := srv.Stats()
	require.EqualValues(t, 1, st.Limits.Pregreet)
	require.Zero(t, st.ConnectionsWaiting)
	require.Zero(t, st.Limits.WaitGone)
	holder.cmd("NOOP", 250)
	holder.cmd("QUIT", 221)
	dialGreeted(t, addr).cmd("QUIT", 221) // the slot went back to the pool
}

// A connection that waits past WaitTimeout gets 421 and is closed, no sooner.
func TestAdmissionWaitTimeout(t *testing.T) {
	const wait = 300 * time.Millisecond
	srv := &Server{MaxProcessings: 1, WaitTimeout: wait}
	addr := serve(t, srv)
	holder := dialGreeted(t, addr)
	start := time.Now()
	w := dial(t, addr)
	require.Equal(t, errWaitTimeout.Message, w.expect(421))
	require.GreaterOrEqual(t, time.Since(start), wait)
	w.expectClosed()
	require.EqualValues(t, 1, srv.Stats().Limits.WaitTimeout)
	holder.cmd("NOOP", 250)
}
