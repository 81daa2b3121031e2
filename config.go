package smtpd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// config is the Server's options with defaults applied: the one snapshot every part
// of the server reads, taken at the first Start, Serve, Shutdown or Close.
type config struct {
	handler         Handler
	logger          *slog.Logger
	hosts, ports    string
	implicitPorts   string
	maxProcessings  int
	maxConnections  int64
	crlfMode        CRLFMode
	timeout         time.Duration
	bufferMax       int
	maxMessage      int
	maxRecipients   int
	maxAuthFailures int
	pipelining      bool
	i18n            bool
	enhancedCodes   bool
	chunking        bool
	dsn             bool
	lmtp            bool
	authMode        AuthMode
	authMechs       []string
	clientAuth      tls.ClientAuthType
	clientCAs       *x509.CertPool
	requireTLS      bool
	tlsMode         TLSMode
	tlsConfig       *tls.Config
	certPath        string
	keyPath         string
	certCN, certSAN string
	cipherSuites    []uint16
	reverseLookup   bool

	waitTimeout      time.Duration // < 0: for ever
	maxBuffered      int
	maxErrors        int // < 0: none
	maxJunk          int // < 0: none
	maxPerIP         int
	greetDelay       time.Duration
	minDataRate      int
	authFailureDelay time.Duration
	proxyNets        []netip.Prefix
	xclientNets      []netip.Prefix
}

// init validates the options once and prepares the shared state.
func (srv *Server) init() error {
	srv.initOnce.Do(func() {
		srv.initErr = srv.configure()
		srv.conns = make(map[*conn]struct{})
		srv.perIP = make(map[string]int)
		srv.closing = make(chan struct{})
		srv.baseCtx, srv.cancelBase = context.WithCancel(context.Background())
		srv.idPrefix = randomPrefix()
		srv.adm = newAdmission(srv.cfg.maxProcessings)
		if srv.initErr == nil {
			warnHooks(srv.cfg)
		}
	})
	return srv.initErr
}

func (srv *Server) configure() error {
	c := config{
		handler:          srv.Handler,
		logger:           srv.Logger,
		hosts:            orString(srv.Hosts, DefaultHosts),
		ports:            orString(srv.Ports, DefaultPorts),
		implicitPorts:    srv.ImplicitTLSPorts,
		maxProcessings:   orDefault(srv.MaxProcessings, DefaultMaxProcessings),
		maxConnections:   int64(srv.MaxConnections),
		crlfMode:         srv.CRLFMode,
		timeout:          orDefault(srv.IOCmdTimeout, DefaultIOCmdTimeout),
		bufferMax:        orDefault(srv.IOBufferMaxSize, DefaultIOBufferMaxSize),
		maxMessage:       orDefault(srv.MaxMessageSize, DefaultMaxMessageSize),
		maxRecipients:    orDefault(srv.MaxRecipients, DefaultMaxRecipients),
		maxAuthFailures:  orDefault(srv.MaxAuthFailures, DefaultMaxAuthFailures),
		pipelining:       srv.Pipelining,
		i18n:             srv.Internationalization,
		enhancedCodes:    srv.EnhancedStatusCodes,
		chunking:         srv.Chunking,
		dsn:              srv.DSN,
		lmtp:             srv.LMTP,
		authMode:         srv.AuthMode,
		clientAuth:       srv.TLSClientAuth,
		clientCAs:        srv.TLSClientCAs,
		requireTLS:       srv.RequireTLS,
		tlsMode:          srv.TLSMode,
		tlsConfig:        srv.TLSConfig,
		certPath:         srv.TLSCertPath,
		keyPath:          srv.TLSKeyPath,
		certCN:           srv.TLSCertCN,
		certSAN:          srv.TLSCertSAN,
		cipherSuites:     slices.Clone(srv.TLSCipherSuites),
		reverseLookup:    srv.DNSReverseLookup,
		waitTimeout:      orDefault(srv.WaitTimeout, DefaultWaitTimeout),
		maxBuffered:      orDefault(srv.MaxBufferedData, DefaultMaxBufferedData),
		maxErrors:        orNone(srv.MaxErrors, DefaultMaxErrors),
		maxJunk:          orNone(srv.MaxJunkCommands, DefaultMaxJunkCommands),
		maxPerIP:         srv.MaxConnectionsPerIP,
		greetDelay:       srv.GreetDelay,
		minDataRate:      srv.MinDataRate,
		authFailureDelay: srv.AuthFailureDelay,
	}
	if srv.WaitTimeout < 0 {
		c.waitTimeout = -1
	}
	if c.handler == nil {
		c.handler = BaseHandler{}
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	var err error
	if err := srv.check(&c); err != nil {
		return err
	}
	if c.authMechs, err = authMechanisms(srv.AuthMechanisms, &c); err != nil {
		return err
	}
	if c.proxyNets, err = parseNetworks(srv.ProxyTrustedNetworks); err != nil {
		return fmt.Errorf("smtpd: ProxyTrustedNetworks: %w", err)
	}
	if c.xclientNets, err = parseNetworks(srv.XClientTrustedNetworks); err != nil {
		return fmt.Errorf("smtpd: XClientTrustedNetworks: %w", err)
	}
	srv.cfg = c
	return nil
}

// check refuses option values that cannot work.
func (srv *Server) check(c *config) error {
	switch {
	case srv.MaxProcessings < 0:
		return fmt.Errorf("smtpd: MaxProcessings %d is negative", srv.MaxProcessings)
	case srv.MaxConnections < 0:
		return fmt.Errorf("smtpd: MaxConnections %d is negative (0 is unlimited)", srv.MaxConnections)
	case srv.MaxConnections > 0 && srv.MaxConnections < c.maxProcessings:
		return fmt.Errorf("smtpd: MaxConnections %d is less than MaxProcessings %d", srv.MaxConnections, c.maxProcessings)
	case srv.MaxConnectionsPerIP < 0:
		return fmt.Errorf("smtpd: MaxConnectionsPerIP %d is negative (0 is unlimited)", srv.MaxConnectionsPerIP)
	case srv.GreetDelay < 0 || srv.MinDataRate < 0 || srv.AuthFailureDelay < 0:
		return errors.New("smtpd: GreetDelay, MinDataRate and AuthFailureDelay must not be negative (0 is off)")
	case c.crlfMode < CRLFEnsure || c.crlfMode > CRLFStrict:
		return fmt.Errorf("smtpd: unknown CRLFMode %d", c.crlfMode)
	case c.authMode < AuthForbidden || c.authMode > AuthRequired:
		return fmt.Errorf("smtpd: unknown AuthMode %d", c.authMode)
	case c.tlsMode < TLSForbidden || c.tlsMode > TLSRequired:
		return fmt.Errorf("smtpd: unknown TLSMode %d", c.tlsMode)
	case srv.IOBufferMaxSize < 0:
		return fmt.Errorf("smtpd: IOBufferMaxSize %d is negative", srv.IOBufferMaxSize)
	case c.bufferMax < 512:
		return fmt.Errorf("smtpd: IOBufferMaxSize %d is below 512, RFC 5321's longest command line", c.bufferMax)
	case c.keyPath != "" && c.certPath == "":
		return errors.New("smtpd: TLSKeyPath is set but TLSCertPath is not")
	case c.tlsMode == TLSForbidden && c.implicitPorts != "":
		return errors.New("smtpd: ImplicitTLSPorts needs a TLSMode other than TLSForbidden")
	}
	return nil
}

// parseNetworks parses a comma-separated list of CIDR prefixes and IP addresses;
// empty is nil (the feature off).
func parseNetworks(list string) ([]netip.Prefix, error) {
	var nets []netip.Prefix
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			nets = append(nets, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an IP address nor a CIDR prefix", item)
		}
		a = a.Unmap()
		nets = append(nets, netip.PrefixFrom(a, a.BitLen()))
	}
	if strings.TrimSpace(list) != "" && len(nets) == 0 {
		return nil, fmt.Errorf("%q lists no network", list)
	}
	return nets, nil
}

// inNetworks reports whether ip (a textual address) is in one of nets.
func inNetworks(nets []netip.Prefix, ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// orDefault returns v, or def when v is zero, or 0 (meaning none) when v is negative.
func orDefault[T int | time.Duration](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// orNone returns v, or def when v is zero; a negative v stays -1 (none).
func orNone(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return -1
	}
	return v
}

func orString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// authMechanisms checks AuthMechanisms: known names, each once, each with its
// hook; nil is the default, LOGIN and PLAIN.
func authMechanisms(names []string, c *config) ([]string, error) {
	if names == nil {
		return defaultMechanisms, nil
	}
	if len(names) == 0 && c.authMode != AuthForbidden {
		return nil, errors.New("smtpd: AuthMechanisms is empty: AUTH would offer nothing")
	}
	out := make([]string, 0, len(names))
	for _, name := range names {
		m := upperASCII(name)
		if slices.Contains(out, m) {
			return nil, fmt.Errorf("smtpd: AuthMechanisms lists %s twice", m)
		}
		if err := mechanismAllowed(m, c); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// mechanismAllowed reports why mechanism m cannot be offered with c, or nil.
func mechanismAllowed(m string, c *config) error {
	switch m {
	case MechanismPlain, MechanismLogin:
		return nil
	case MechanismOAuthBearer, MechanismXOAuth2:
		if _, ok := c.handler.(TokenAuthHandler); !ok && c.authMode != AuthForbidden {
			return fmt.Errorf("smtpd: AuthMechanisms offers %s but the Handler has no OnAuthToken (TokenAuthHandler)", m)
		}
		return nil
	case MechanismExternal:
		if _, ok := c.handler.(ExternalAuthHandler); !ok && c.authMode != AuthForbidden {
			return fmt.Errorf("smtpd: AuthMechanisms offers %s but the Handler has no OnAuthExternal (ExternalAuthHandler)", m)
		}
		if c.authMode != AuthForbidden && (c.tlsMode == TLSForbidden || c.clientAuth == tls.NoClientCert && (c.tlsConfig == nil || c.tlsConfig.ClientAuth == tls.NoClientCert)) {
			return errors.New("smtpd: AuthMechanisms offers EXTERNAL, which needs TLS and TLSClientAuth asking for client certificates")
		}
		return nil
	}
	return fmt.Errorf("smtpd: AuthMechanisms: unknown mechanism %q (known: PLAIN, LOGIN, OAUTHBEARER, XOAUTH2, EXTERNAL)", m)
}

// warnHooks logs at Warn each method of the handler that looks like a hook but is
// never called (CheckHandler).
func warnHooks(c config) {
	err := CheckHandler(c.handler)
	if err == nil {
		return
	}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		c.logger.Warn("handler method is never called", "problem", e.Error())
	}
}
