package mailauth

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// This file is DNSClient's wire exchange: one question, UDP attempts, TCP when the
// answer is truncated.

// maxUDPAnswer is the read buffer of a UDP answer: more than the EDNS size offered,
// so that a server that ignores it is still read whole (and then truncated).
const maxUDPAnswer = 4096

// exchange asks the server one question and returns its answer, with an error
// for an RCODE other than NOERROR and NXDOMAIN.
func (c *DNSClient) exchange(ctx context.Context, name dnsmessage.Name, t dnsmessage.Type) (*dnsmessage.Message, *net.DNSError) {
	q := dnsmessage.Question{Name: name, Type: t, Class: dnsmessage.ClassINET}
	attempts := c.Attempts
	if attempts <= 0 {
		attempts = defaultDNSAttempts
	}
	var (
		msg *dnsmessage.Message
		err error
	)
	for range attempts {
		msg, err = c.exchangeUDP(ctx, q)
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err == nil && msg.Truncated {
		msg, err = c.exchangeTCP(ctx, q)
	}
	if err != nil {
		return nil, c.dnsError(ctx, err)
	}
	switch msg.RCode {
	case dnsmessage.RCodeSuccess, dnsmessage.RCodeNameError:
		return msg, nil
	default:
		return nil, &net.DNSError{Err: "server answered " + rcodeName(msg.RCode), Server: c.Server, IsTemporary: true}
	}
}

// rcodeName is the RFC 1035/6895 mnemonic of an RCODE.
func rcodeName(r dnsmessage.RCode) string {
	switch r {
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return "RCODE " + strconv.Itoa(int(r))
}

// dnsError turns a failed exchange into a *net.DNSError: timeouts and cancelled
// contexts are IsTimeout, every other failure (refused port, reset) IsTemporary.
func (c *DNSClient) dnsError(ctx context.Context, err error) *net.DNSError {
	var ne net.Error
	if ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() {
		return &net.DNSError{Err: "i/o timeout", Server: c.Server, IsTimeout: true, IsTemporary: true}
	}
	return &net.DNSError{Err: err.Error(), Server: c.Server, IsTemporary: true}
}

// deadline is when one attempt ends: Timeout from now, or the context's deadline
// when that comes first.
func (c *DNSClient) deadline(ctx context.Context) time.Time {
	d := c.Timeout
	if d <= 0 {
		d = defaultDNSTimeout
	}
	t := time.Now().Add(d)
	if cd, ok := ctx.Deadline(); ok && cd.Before(t) {
		return cd
	}
	return t
}

// query packs a query for q with a fresh random ID (recursion desired, EDNS(0)).
func query(q dnsmessage.Question) (uint16, []byte, error) {
	id := uint16(rand.Uint32())
	b := dnsmessage.NewBuilder(make([]byte, 2, 512), dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return 0, nil, err
	}
	if err := b.Question(q); err != nil {
		return 0, nil, err
	}
	if err := b.StartAdditionals(); err != nil {
		return 0, nil, err
	}
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(ednsPayload, dnsmessage.RCodeSuccess, false); err != nil {
		return 0, nil, err
	}
	if err := b.OPTResource(opt, dnsmessage.OPTResource{}); err != nil {
		return 0, nil, err
	}
	msg, err := b.Finish()
	return id, msg, err
}

// dial connects to the server with the attempt's deadline; the connection is also
// closed when ctx is cancelled.
func (c *DNSClient) dial(ctx context.Context, network string) (net.Conn, func() bool, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, c.Server)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(c.deadline(ctx))
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return conn, stop, nil
}

// exchangeUDP sends q once over UDP and waits for the matching answer; packets
// that do not match (another ID, another question) are ignored.
func (c *DNSClient) exchangeUDP(ctx context.Context, q dnsmessage.Question) (*dnsmessage.Message, error) {
	id, msg, err := query(q)
	if err != nil {
		return nil, err
	}
	conn, stop, err := c.dial(ctx, "udp")
	if err != nil {
		return nil, err
	}
	defer stop()
	defer conn.Close()
	if _, err := conn.Write(msg[2:]); err != nil {
		return nil, err
	}
	buf := make([]byte, maxUDPAnswer)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		if m, ok := answerTo(buf[:n], id, q); ok {
			return m, nil
		}
	}
}

// exchangeTCP sends q over TCP (two-octet length prefix, RFC 1035 4.2.2).
func (c *DNSClient) exchangeTCP(ctx context.Context, q dnsmessage.Question) (*dnsmessage.Message, error) {
	id, msg, err := query(q)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
	conn, stop, err := c.dial(ctx, "tcp")
	if err != nil {
		return nil, err
	}
	defer stop()
	defer conn.Close()
	if _, err := conn.Write(msg); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(conn, l[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return nil, err
	}
	m, ok := answerTo(buf, id, q)
	if !ok {
		return nil, errors.New("answer does not match the query")
	}
	return m, nil
}

// answerTo parses b and reports whether it is the answer to query id for q.
func answerTo(b []byte, id uint16, q dnsmessage.Question) (*dnsmessage.Message, bool) {
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		// A truncated answer may fail to parse past its header: keep the header.
		var p dnsmessage.Parser
		h, herr := p.Start(b)
		if herr != nil || !h.Truncated {
			return nil, false
		}
		qs, qerr := p.AllQuestions()
		if qerr != nil {
			return nil, false
		}
		m = dnsmessage.Message{Header: h, Questions: qs}
	}
	if !m.Response || m.ID != id || len(m.Questions) != 1 {
		return nil, false
	}
	got := m.Questions[0]
	if got.Type != q.Type || got.Class != q.Class || !strings.EqualFold(got.Name.String(), q.Name.String()) {
		return nil, false
	}
	return &m, true
}
