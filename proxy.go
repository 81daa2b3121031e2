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
func (s *Session) readProxyHeader() bool {
	if s.cfg.proxyNets == nil || !inNetworks(s.cfg.proxyNets, s.RemoteIP) {
		return true
	}
	if s.cfg.timeout > 0 {
		s.raw.SetReadDeadline(time.Now().Add(s.cfg.timeout))
	}
	h, err := proxyproto.Read(s.raw)
	s.raw.SetReadDeadline(time.Time{})
	if err != nil {
		s.srv.stats.limit(&s.srv.stats.ProxyRefused)
		s.log().Warn("no valid PROXY header from a trusted proxy; closing", "err", err)
		return false
	}
	if h.Local {
		s.log().Debug("PROXY header without addresses (LOCAL/UNKNOWN): the proxy itself", "version", h.Version)
		return true
	}
	s.ProxyIP = s.RemoteIP
	s.RemoteIP, s.RemotePort = h.Source.Addr().String(), int(h.Source.Port())
	s.setLogger()
	s.log().Debug("PROXY header", "version", h.Version, "proxy", s.ProxyIP,
		"dest", h.Dest.Addr().String()+":"+strconv.Itoa(int(h.Dest.Port())))
	return true
}
