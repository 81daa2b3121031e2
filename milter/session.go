package milter

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
)

// This file is one SMTP session's milters: one connection to each, opened at
// connect and closed (QUIT) at disconnect, as Postfix does; and the states and
// replies of Postfix's milter8.c, which decide which milter gets which event and
// what its answer does.

// mstate is where one milter is in the session (Postfix's MILTER8_STAT_*).
type mstate uint8

const (
	mOpen      mstate = iota // gets events
	mAcceptMsg               // accepted the message: no more events until the transaction ends
	mAcceptCon               // accepted the connection: no more events
	mRejectCon               // refused the connection at connect or HELO: its reply answers MAIL, AUTH, ...
	mFailed                  // down, timed out or misbehaved: DefaultAction's reply (none for Accept)
)

// mconn is one milter of one SMTP session.
type mconn struct {
	m     *Milter
	cs    *gomilter.ClientSession
	gc    *guardConn
	state mstate
	reply *smtpd.SMTPError // the reply that persists in mRejectCon and mFailed
	inTxn bool             // MAIL went to it: ABORT is owed when the transaction ends
}

// leadSpace reports whether the milter wants header values with their leading
// space (SMFIP_HDR_LEADSPC): then none is removed from what it gets, and none is
// added to the headers it sends.
func (c *mconn) leadSpace() bool {
	return c.cs != nil && c.cs.ProtocolOption(gomilter.OptHeaderLeadingSpace)
}

// canEditContent reports whether the milter may change headers or the body.
func (c *mconn) canEditContent() bool {
	return c.cs != nil && c.cs.ActionOption(gomilter.OptAddHeader|gomilter.OptChangeHeader|gomilter.OptChangeBody)
}

// stage names an event, for the log and for what an action means at it.
type stage string

const (
	stConnect stage = "connect"
	stHelo    stage = "helo"
	stMail    stage = "mail"
	stRcpt    stage = "rcpt"
	stData    stage = "data"
	stHeader  stage = "header"
	stEOH     stage = "eoh"
	stBody    stage = "body"
	stEOM     stage = "eom"
	stUnknown stage = "unknown"
	stAbort   stage = "abort"
)

// connLevel reports whether an action at the stage concerns the connection
// (connect, HELO) rather than the message.
func (st stage) connLevel() bool { return st == stConnect || st == stHelo }

// content reports whether the stage is part of the message content, with the
// content timeout.
func (st stage) content() bool {
	return st == stHeader || st == stEOH || st == stBody || st == stEOM
}

// outcome is what an event's milters decided for the SMTP command.
type outcome struct {
	reply   *smtpd.SMTPError // refuse with this reply
	discard bool             // accept, then drop the message
}

// msession is the milters of one SMTP session. Its lock is held while a milter is
// called: the stream hook calls them on its own goroutine, and OnReset may run
// while it waits for data.
type msession struct {
	w      *wrapper
	log    *slog.Logger
	mu     sync.Mutex
	conns  []*mconn
	mac    macros
	client string // the client the connect event named: XCLIENT changes it
	txn    txn
	unkill func() bool // stops the kill at the server's close

	// discarded is set when the last message was discarded: LMTP's per-recipient
	// hook is not called for it.
	discarded bool
}

// txn is the milter side of one transaction.
type txn struct {
	active    bool             // MAIL went to the milters
	discard   bool             // a milter discarded the message
	dataReply *smtpd.SMTPError // DATA refused by a milter: a repeated DATA gets it too
	content   *feeder          // the message being received
}

// clientKey identifies the client the milters were told about.
func clientKey(s *smtpd.Session) string {
	return fmt.Sprintf("%s|%d|%s", s.RemoteIP, s.RemotePort, s.RemoteHost)
}

// open connects to every milter and reports the connect event to each. It returns
// the outcome of the event.
func (ss *msession) open(s *smtpd.Session) outcome {
	ss.client = clientKey(s)
	ss.mac.connect(s, &ss.w.cfg)
	ss.conns = make([]*mconn, len(ss.w.cfg.Milters))
	var wg sync.WaitGroup // the milters are dialled at once; the events go in order
	for i := range ss.w.cfg.Milters {
		wg.Go(func() { ss.conns[i] = ss.dial(s, &ss.w.cfg.Milters[i]) })
	}
	wg.Wait()
	host, family, port, addr := connectArgs(s)
	return ss.each(stConnect, func(c *mconn) (*gomilter.Action, error) {
		return c.cs.Conn(host, family, port, addr)
	})
}

// dial opens the connection to one milter and negotiates; a failure leaves the
// milter in mFailed.
func (ss *msession) dial(s *smtpd.Session, m *Milter) *mconn {
	c := &mconn{m: m}
	d := &dialer{ctx: s.Context(), timeout: m.ConnectTimeout}
	network, address, err := ParseAddr(m.Addr)
	if err != nil {
		ss.fail(c, stConnect, err)
		return c
	}
	client := gomilter.NewClient(network, address, ss.w.clientOptions(d)...)
	cs, err := client.Session(&ss.mac)
	if d.conn != nil {
		c.gc = d.conn
	}
	if err != nil {
		ss.fail(c, stConnect, err)
		return c
	}
	c.cs = cs
	return c
}

// connectArgs are the SMFIC_CONNECT arguments: Postfix's host name ("[addr]"
// when the client has none), the address family, port and address.
func connectArgs(s *smtpd.Session) (string, gomilter.ProtoFamily, uint16, string) {
	host := "[" + s.RemoteIP + "]"
	if name, ok := clientName(s); ok {
		host = name
	}
	a, err := netip.ParseAddr(s.RemoteIP)
	switch {
	case err != nil:
		return host, gomilter.FamilyUnknown, 0, ""
	case a.Is4() || a.Is4In6():
		return host, gomilter.FamilyInet, uint16(s.RemotePort), a.Unmap().String()
	}
	return host, gomilter.FamilyInet6, uint16(s.RemotePort), a.String()
}

// timeout is the milter's time limit for an event at the stage.
func (c *mconn) timeout(st stage) time.Duration {
	switch {
	case st == stConnect:
		return c.m.ConnectTimeout
	case st.content():
		return c.m.EOMTimeout
	}
	return c.m.CommandTimeout
}

// call runs one go-milter call on c within the stage's limits. A failure (an
// error, a timeout, garbage, a panic in go-milter) puts c in mFailed and returns
// a nil action.
func (ss *msession) call(c *mconn, st stage, fn func() (*gomilter.Action, error)) (act *gomilter.Action) {
	c.gc.stage(c.timeout(st), ss.w.budget(st))
	defer func() {
		if v := recover(); v != nil {
			ss.fail(c, st, fmt.Errorf("go-milter panicked: %v", v))
			act = nil
		}
	}()
	a, err := fn()
	if err == nil && a == nil {
		err = fmt.Errorf("no action")
	}
	if err != nil {
		ss.fail(c, st, err)
		return nil
	}
	return a
}

// fail records a milter's failure: it gets no more events in this session, and
// DefaultAction's reply (none for Accept) answers for it from now on. Logged once.
func (ss *msession) fail(c *mconn, st stage, err error) {
	c.state, c.reply, c.inTxn = mFailed, failReply(ss.w.cfg.DefaultAction), false
	if c.gc != nil {
		c.gc.Conn.Close() // nothing more is owed to it
	}
	ss.log.Warn("milter failed", "milter", c.m.Addr, "stage", string(st), "action", ss.w.cfg.DefaultAction.String(),
		"err", shortErr(err))
}

// shortErr keeps a log line short whatever a milter sent.
func shortErr(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// takes reports whether c gets an event at the stage, and the reply that answers
// for it when it does not (mRejectCon, mFailed).
func (c *mconn) takes(st stage) (bool, *smtpd.SMTPError) {
	switch c.state {
	case mOpen:
		return true, nil
	case mAcceptMsg:
		return st == stHelo || st == stUnknown, nil
	case mRejectCon, mFailed:
		return false, c.reply
	}
	return false, nil
}

// each reports an event to the milters in order, as Postfix's milter.c does: the
// first that refuses (or discards) ends it, and a milter whose refusal persists
// answers in its place.
func (ss *msession) each(st stage, fn func(c *mconn) (*gomilter.Action, error)) outcome {
	for _, c := range ss.conns {
		ok, reply := c.takes(st)
		if reply != nil {
			return outcome{reply: reply}
		}
		if !ok {
			continue
		}
		if st == stMail {
			c.inTxn = true
		}
		act := ss.call(c, st, func() (*gomilter.Action, error) { return fn(c) })
		if act == nil { // failed: DefaultAction
			if c.reply != nil {
				return outcome{reply: c.reply}
			}
			continue
		}
		if o, stop := ss.apply(c, st, act); stop {
			return o
		}
	}
	return outcome{}
}

// apply carries out one milter's action at the stage (Postfix's milter8_event):
// it reports whether the event ends with an outcome.
func (ss *msession) apply(c *mconn, st stage, act *gomilter.Action) (outcome, bool) {
	switch act.Type {
	case gomilter.ActionAccept:
		if st.connLevel() {
			c.state = mAcceptCon
		} else {
			c.state = mAcceptMsg
		}
	case gomilter.ActionDiscard:
		if !st.connLevel() { // at connect or HELO it means nothing (go-milter says continue)
			c.state = mAcceptMsg
			return outcome{discard: true}, true
		}
	case gomilter.ActionReject, gomilter.ActionTempFail, gomilter.ActionRejectWithCode:
		r := actionReply(act)
		if st.connLevel() {
			c.state, c.reply = mRejectCon, r
		}
		return outcome{reply: r}, true
	}
	return outcome{}, false
}

// endTxn ends the milters' side of a transaction: ABORT to each milter that got
// MAIL (Postfix sends it at every reset, a delivered message included), and the
// message-level states cleared.
func (ss *msession) endTxn() {
	if ss.txn.content != nil {
		ss.txn.content.close()
	}
	for _, c := range ss.conns {
		if c.state == mAcceptMsg {
			c.state = mOpen
		}
		if !c.inTxn || c.cs == nil || (c.state != mOpen) {
			c.inTxn = false
			continue
		}
		c.inTxn = false
		ss.call(c, stAbort, func() (*gomilter.Action, error) {
			if err := c.cs.Abort(nil); err != nil {
				return nil, err
			}
			return &gomilter.Action{Type: gomilter.ActionContinue}, c.gc.Flush()
		})
	}
	ss.mac.endMail()
	ss.txn = txn{}
}

// close ends the session's milters: QUIT to each, connections closed.
func (ss *msession) close() {
	for _, c := range ss.conns {
		if c.cs != nil && c.state != mFailed {
			c.gc.stage(c.m.CommandTimeout, maxPacket)
			c.cs.Close()
		}
		if c.gc != nil {
			c.gc.Close()
		}
	}
	ss.conns = nil
}
