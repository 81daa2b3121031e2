package smtpd

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// This file is Postfix's XCLIENT extension: a trusted proxy (a content filter, a
// front end) tells the server who the real client is.
// https://www.postfix.org/XCLIENT_README.html

// xclientAttrs are the attributes this server takes, as EHLO lists them.
const xclientAttrs = "ADDR PORT NAME HELO PROTO LOGIN"

// XCLIENT's special values: the proxy does not know the attribute.
const (
	xclientUnavailable = "[UNAVAILABLE]"
	xclientTempUnavail = "[TEMPUNAVAIL]"
)

// xclientUpdate is what one XCLIENT command sets; nil fields are not given.
type xclientUpdate struct {
	addr, name, helo, login *string
	port                    *int
}

// cmdXClient replaces the session's client attributes and restarts the session
// with a new banner, as Postfix does: the client must send EHLO again; AUTH state
// is cleared unless LOGIN= sets it; TLS stays.
func (c *conn) cmdXClient(args string) error {
	switch {
	case !c.xclientOK:
		c.srv.stats.limit(&c.srv.stats.XClientRefused)
		return errXClientDenied
	case c.phase > phaseReady:
		return SMTPError503
	}
	u, err := parseXClient(args)
	if err != nil {
		return err
	}
	c.applyXClient(u)
	if !c.srv.moveIP(c) {
		c.refusePerIP()
		return nil
	}
	c.log().Info("XCLIENT", "remote_ip", c.s.RemoteIP, "remote_port", c.s.RemotePort, "name", excerpt(c.s.RemoteHost),
		"helo", excerpt(c.s.Helo), "login", excerpt(c.s.AuthenticationID))
	c.sendText(220, oneLine(c.s.LocalResponse))
	return nil
}

// parseXClient parses "NAME=value ..." (values in xtext, RFC 3461 4); a malformed
// or unknown attribute is 501.
func parseXClient(args string) (xclientUpdate, error) {
	var u xclientUpdate
	if args == "" {
		return u, SMTPError501
	}
	for field := range strings.FieldsSeq(args) {
		name, raw, ok := strings.Cut(field, "=")
		value, err := decodeXtext(raw)
		if !ok || err != nil {
			return u, SMTPError501
		}
		switch upperASCII(name) {
		case "ADDR":
			addr, ok := xclientAddr(value)
			if !ok {
				return u, SMTPError501
			}
			u.addr = &addr
		case "PORT":
			port, ok := xclientPort(value)
			if !ok {
				return u, SMTPError501
			}
			u.port = &port
		case "NAME":
			u.name = &value
		case "HELO":
			if !validHelo(value) {
				return u, SMTPError501
			}
			u.helo = &value
		case "LOGIN":
			u.login = &value
		case "PROTO":
			if p := upperASCII(value); p != "SMTP" && p != "ESMTP" && !isUnavailable(value) {
				return u, SMTPError501
			}
		default:
			return u, SMTPError501
		}
	}
	return u, nil
}

// applyXClient sets the session's attributes from u and restarts its state.
func (c *conn) applyXClient(u xclientUpdate) {
	if u.addr != nil {
		c.s.RemoteIP = *u.addr
		c.s.RemoteHost = c.s.RemoteIP
	}
	if u.port != nil {
		c.s.RemotePort = *u.port
	}
	if u.name != nil {
		c.s.RemoteHost = *u.name
	}
	c.resetTransaction()
	c.phase = phaseGreet
	c.s.Helo, c.xclientHelo = "", false
	if u.helo != nil && !isUnavailable(*u.helo) {
		c.s.Helo, c.xclientHelo = *u.helo, true
	}
	c.s.AuthorizationID, c.s.AuthenticationID, c.s.AuthenticatedAt, c.s.AuthMechanism = "", "", time.Time{}, ""
	if u.login != nil && !isUnavailable(*u.login) {
		c.s.AuthorizationID, c.s.AuthenticationID, c.s.AuthenticatedAt = *u.login, *u.login, time.Now().UTC()
	}
	if u.addr != nil || u.port != nil {
		c.setLogger()
	}
}

// xclientAddr parses ADDR: an IPv4 address, "IPV6:" and an IPv6 address, or a
// special value (kept as given).
func xclientAddr(v string) (string, bool) {
	if isUnavailable(v) {
		return v, true
	}
	if rest, ok := cutPrefixFold(v, "IPV6:"); ok {
		a, err := netip.ParseAddr(rest)
		return a.String(), err == nil && a.Is6() && a.Zone() == ""
	}
	a, err := netip.ParseAddr(v)
	return a.String(), err == nil && a.Is4()
}

// xclientPort parses PORT: 0..65535, or a special value (0).
func xclientPort(v string) (int, bool) {
	if isUnavailable(v) {
		return 0, true
	}
	p, err := strconv.Atoi(v)
	return p, err == nil && p >= 0 && p <= 65535 && v[0] != '+' && v[0] != '-'
}

func isUnavailable(v string) bool {
	return keywordASCII(v, xclientUnavailable, xclientTempUnavail) != ""
}

// moveIP moves s's per-address count to its new RemoteIP; false when that address
// has its maximum of connections already.
func (srv *Server) moveIP(c *conn) bool {
	if c.ipCounted == c.s.RemoteIP || c.ipCounted == "" && srv.cfg.maxPerIP <= 0 {
		return true
	}
	srv.uncountIP(c)
	return srv.countIP(c)
}
