package smtpd

import (
	"strconv"
	"time"

	"github.com/midismtp/smtpd/internal/proxyproto"
)

// This file reads the PROXY protocol header (HAProxy's v1 and v2) of a connection
// from a trusted load balancer, before anything else happens to it.

// readProxyHeader reads the PROXY header when the connection comes from
// ProxyTrustedNetworks, within IOCmdTimeout: its source becomes RemoteIP and
// RemotePort, the balancer's address ProxyIP. A missing, malformed or oversized
// header closes the connection without a banner (false). LOCAL and UNKNOWN headers
// (health checks) keep the real peer. Connections from elsewhere are served as
// they are: a PROXY header from them is an unknown command like any other text.
func (c *conn) readProxyHeader() bool {
	if c.cfg.proxyNets == nil || !inNetworks(c.cfg.proxyNets, c.s.RemoteIP) {
		return true
	}
	if c.cfg.timeout > 0 {
		c.raw.SetReadDeadline(time.Now().Add(c.cfg.timeout))
	}
	h, err := proxyproto.Read(c.raw)
	c.raw.SetReadDeadline(time.Time{})
	if err != nil {
		c.srv.stats.limit(&c.srv.stats.ProxyRefused)
		c.log().Warn("no valid PROXY header from a trusted proxy; closing", "err", err)
		return false
	}
	if h.Local {
		c.log().Debug("PROXY header without addresses (LOCAL/UNKNOWN): the proxy itself", "version", h.Version)
		return true
	}
	c.s.ProxyIP = c.s.RemoteIP
	c.s.RemoteIP, c.s.RemotePort = h.Source.Addr().String(), int(h.Source.Port())
	c.setLogger()
	c.log().Debug("PROXY header", "version", h.Version, "proxy", c.s.ProxyIP,
		"dest", h.Dest.Addr().String()+":"+strconv.Itoa(int(h.Dest.Port())))
	return true
}
