package smtpd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/midismtp/smtpd/internal/hostport"
)

// boundListener is one listening socket and whether it speaks implicit TLS.
type boundListener struct {
	net.Listener
	implicitTLS bool
}

// Start checks the options, binds every address of Hosts and Ports and serves them
// in the background; it returns at once. It binds all addresses or none: on any
// error (a bad option, an unresolvable host, an address in use, an unreadable
// certificate) nothing stays bound. Use Wait to block until the server stops.
func (srv *Server) Start() error {
	if err := srv.init(); err != nil {
		return err
	}
	srv.mu.Lock()
	if srv.started || srv.isClosing.Load() {
		srv.mu.Unlock()
		return errors.New("smtpd: Server already started or closed")
	}
	srv.started = true
	srv.mu.Unlock()
	if err := srv.bindAndServe(); err != nil {
		srv.mu.Lock()
		srv.started = false
		srv.mu.Unlock()
		return err
	}
	return nil
}

// bindAndServe is Start's work after the option checks.
func (srv *Server) bindAndServe() error {

	addrs, err := hostport.Resolver{}.Parse(srv.cfg.hosts, srv.cfg.ports)
	if err != nil {
		return fmt.Errorf("smtpd: %w", err)
	}
	implicit, err := srv.implicitPorts(addrs)
	if err != nil {
		return err
	}
	bound, err := bindAll(addrs, implicit)
	if err != nil {
		return err
	}
	if err := srv.setupTLS(addrs, bound); err != nil {
		for _, l := range bound {
			l.Close()
		}
		return err
	}
	for i, l := range bound {
		if err := srv.track(l.Listener); err != nil {
			for _, rest := range bound[i+1:] {
				rest.Close()
			}
			return err
		}
		go func(l boundListener) {
			defer srv.loops.Done()
			if err := srv.acceptLoop(l); err != nil && err != ErrServerClosed {
				srv.cfg.logger.Error("listener stopped", "addr", l.Addr().String(), "err", err)
			}
		}(l)
		srv.cfg.logger.Info("listening", "addr", l.Addr().String(), "implicit_tls", l.implicitTLS)
	}
	return nil
}

// Serve accepts connections on l and serves each in its own goroutine until the
// server is shut down or closed; it then returns ErrServerClosed. It needs no Start;
// Hosts, Ports and ImplicitTLSPorts are ignored (STARTTLS works as configured). A
// TLS listener (tls.NewListener) serves implicit TLS with its own configuration:
// each connection's handshake comes first, within IOCmdTimeout, and Close never
// waits on one.
func (srv *Server) Serve(l net.Listener) error {
	if err := srv.init(); err != nil {
		return err
	}
	if err := srv.setupTLS(nil, []boundListener{{Listener: l}}); err != nil {
		return err
	}
	if err := srv.track(l); err != nil {
		return err
	}
	defer srv.loops.Done()
	return srv.acceptLoop(boundListener{Listener: l})
}

// track registers l so that Shutdown and Close close it, and counts its accept
// loop in srv.loops (the caller runs it and calls loops.Done).
func (srv *Server) track(l net.Listener) error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.isClosing.Load() {
		l.Close()
		return ErrServerClosed
	}
	srv.listeners = append(srv.listeners, l)
	srv.addrs = append(srv.addrs, l.Addr())
	srv.loops.Add(1) // under mu, after the closing check: Wait never races this Add
	return nil
}

// implicitPorts turns ImplicitTLSPorts into a set of ports, each of which must be bound.
func (srv *Server) implicitPorts(addrs []hostport.Addr) (map[string]bool, error) {
	if srv.cfg.implicitPorts == "" {
		return nil, nil
	}
	set, err := hostport.PortSet(srv.cfg.implicitPorts)
	if err != nil {
		return nil, fmt.Errorf("smtpd: ImplicitTLSPorts: %w", err)
	}
	for port := range set {
		found := false
		for _, a := range addrs {
			found = found || a.Port == port
		}
		if !found {
			return nil, fmt.Errorf("smtpd: ImplicitTLSPorts: port %s is not among the bound Ports", port)
		}
	}
	return set, nil
}

// listenConfig turns TCP keep-alive off on accepted connections: every session
// has its own deadlines (IOCmdTimeout, WaitTimeout), and keep-alive would cost four
// system calls per connection.
var listenConfig = net.ListenConfig{KeepAlive: -1}

// bindAll listens on every address or, on the first failure, closes what it bound.
func bindAll(addrs []hostport.Addr, implicit map[string]bool) ([]boundListener, error) {
	bound := make([]boundListener, 0, len(addrs))
	for _, a := range addrs {
		l, err := listenConfig.Listen(context.Background(), "tcp", a.String())
		if err != nil {
			for _, b := range bound {
				b.Close()
			}
			return nil, fmt.Errorf("smtpd: listen on %s: %w", a, err)
		}
		bound = append(bound, boundListener{Listener: l, implicitTLS: implicit[a.Port]})
	}
	return bound, nil
}

// acceptLoop accepts connections until the listener is closed. Errors other than a
// closed listener (out of file descriptors, ...) are logged and retried with backoff.
func (srv *Server) acceptLoop(l boundListener) error {
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if srv.isClosing.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			srv.cfg.logger.Warn("accept failed; retrying", "addr", l.Addr().String(), "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-srv.closing:
				return ErrServerClosed
			}
			continue
		}
		delay = 0
		srv.startSession(c, l.implicitTLS)
	}
}

// startSession registers the connection and serves it on a goroutine of its own.
func (srv *Server) startSession(c net.Conn, implicitTLS bool) {
	srv.mu.Lock()
	if srv.isClosing.Load() {
		srv.mu.Unlock()
		c.Close()
		return
	}
	cn := newConn(srv, c, implicitTLS)
	// Decided here, in accept order, so that a burst refuses the newest ones.
	cn.overLimit = srv.cfg.maxConnections > 0 && srv.connections.Load() >= srv.cfg.maxConnections
	srv.conns[cn] = struct{}{}
	srv.served.Add(1)
	srv.connections.Add(1)
	srv.stats.ConnectionsTotal.Add(1)
	srv.mu.Unlock()
	go cn.serve() // conn.end unregisters it (forget)
}

// forget unregisters a connection that has ended.
func (srv *Server) forget(c *conn) {
	srv.mu.Lock()
	delete(srv.conns, c)
	srv.mu.Unlock()
	srv.connections.Add(-1)
	srv.served.Done()
}
