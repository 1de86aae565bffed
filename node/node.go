// Package node wires a push node together: the engine (core) with its
// store, the UDP and TCP client listeners, the push listener and the HTTP
// API. Everything else under node/ is one responsibility each; this is
// the one place that knows them all.
package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ddpush/ddpush-operator/node/clients"
	"github.com/ddpush/ddpush-operator/node/console"
	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/httpapi"
	"github.com/ddpush/ddpush-operator/node/peer"
	"github.com/ddpush/ddpush-operator/node/pushlistener"
	"github.com/ddpush/ddpush-operator/node/ratelimit"
	"github.com/ddpush/ddpush-operator/node/reshard"
	"github.com/ddpush/ddpush-operator/node/shard"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/tcpaccept"
	"github.com/ddpush/ddpush-operator/node/tcpserver"
	"github.com/ddpush/ddpush-operator/node/udpserver"
)

// Version is set at build time.
var Version = "dev"

// Node is a running push node.
type Node struct {
	cfg   Config
	log   *slog.Logger
	core  *core.Core
	udp   *udpserver.Server
	tcp   *tcpserver.Server
	push  *pushlistener.PushListener
	http  *http.Server
	httpL *tcpaccept.Listener
	api   *httpapi.API
	shard *shard.Router  // nil for a whole node
	moves *reshard.Mover // nil for a whole node
	// handlers counts HTTP handlers running: after a forced close of
	// their connections, Stop still waits (briefly) for them.
	handlers inflight

	cancelCore context.CancelFunc
	coreErr    chan error
	wg         sync.WaitGroup
	stopOnce   sync.Once
	stopErr    error
}

// Extra lets callers mount more HTTP handlers (the web console).
var Extra = map[string]http.Handler{}

// Start loads the store, binds every listener and serves. It returns once
// the node is ready.
func Start(cfg Config, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	policy, _ := state.ParsePolicy(cfg.HeartbeatPolicy)
	token, err := cfg.apiToken(log)
	if err != nil {
		return nil, err
	}
	var ticket string
	if cfg.CompatTicketFile != "" {
		if ticket, err = readSecret(cfg.CompatTicketFile, "compat ticket file"); err != nil {
			return nil, err
		}
	}
	ordinal, idBase := 0, uint64(0)
	if cfg.PeerAddr != "" {
		if ordinal, err = cfg.ResolveOrdinal(os.Getenv); err != nil {
			return nil, err
		}
		idBase = slotmap.IDBase(ordinal)
	}
	st := stats.New()
	c, err := core.Open(cfg.DataDir, core.Options{
		IDBase: idBase,
		Table: clients.Config{
			MaxRecords:        cfg.MaxRecords,
			CreateByHeartbeat: cfg.CreateByHeartbeat,
			Policy:            policy,
			OnlineWindow:      int64(cfg.OnlineWindow),
			SeenStep:          int64(seenStep(cfg)),
		},
		MaxContentLen:  cfg.MaxContentLen,
		ExpiryAge:      cfg.ExpiryAge,
		ExpiryInterval: cfg.ExpiryInterval,
		FlushInterval:  cfg.FlushInterval,
		EventRetention: cfg.EventRetention,
		PushRetention:  cfg.PushRetention,
		Logger:         log,
		Stats:          st,
	})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, core: c, coreErr: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancelCore = cancel
	go func() { n.coreErr <- c.Run(ctx) }()

	fail := func(err error) (*Node, error) {
		n.Stop(context.Background())
		return nil, err
	}
	limit := ratelimit.New(cfg.RateLimit)
	if err := n.listenClients(cfg, limit); err != nil {
		return fail(err)
	}
	if n.push, err = pushlistener.Listen(cfg.PushAddr, c, pushlistener.Options{
		IdleTimeout: cfg.PushIdleTimeout, FrameTimeout: cfg.TCPFrameTimeout,
		MaxConns: cfg.MaxPushConns, MaxConnsPerSource: cfg.MaxPushConnsPerSource,
	}, log); err != nil {
		return fail(fmt.Errorf("listen push %s: %w", cfg.PushAddr, err))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := st.Register(reg, stats.Gauges{
		Records:    func() float64 { return float64(c.Records()) },
		Online:     func() float64 { return float64(c.Online()) },
		StoreBytes: func() float64 { return float64(c.Store().Size()) },
		EventSeq:   func() float64 { return float64(c.DurableSeq()) },
		WriteBack:  func() float64 { return float64(c.WriteBackPending()) },
	}); err != nil {
		return fail(err)
	}
	tcpClients := func() int64 { return 0 }
	if n.tcp != nil {
		tcpClients = n.tcp.Conns
	}
	if cfg.PeerAddr != "" {
		if err := n.startShard(cfg, token, ordinal, reg); err != nil {
			return fail(err)
		}
	}
	extra := map[string]http.Handler{"GET /console/": console.Handler(), "GET /console": console.Redirect()}
	maps.Copy(extra, Extra)
	n.api = httpapi.New(c, httpapi.Options{
		Token: token, CompatTicket: ticket, Version: Version, Registry: reg, Logger: log,
		Extra: extra, TCPClients: tcpClients, Policy: policy, ExpiryAge: cfg.ExpiryAge, Pprof: cfg.Pprof,
		ReadTimeout: cfg.HTTPReadTimeout, WriteTimeout: cfg.HTTPWriteTimeout, Shards: n.shard, Moves: n.moves,
	})
	if n.shard != nil {
		n.shard.SetLookups(n.api.Lookups())
		reg.MustRegister(peer.NewCollector(n.shard.Stats, n.shard.Server().Refused))
	}
	if err := n.listenHTTP(cfg, st); err != nil {
		return fail(err)
	}

	serve := func(name string, f func() error) {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				log.Error("listener stopped", "listener", name, "err", err)
			}
		}()
	}
	if n.udp != nil {
		serve("udp", func() error { n.udp.Serve(); return nil })
	}
	if n.tcp != nil {
		serve("tcp", n.tcp.Serve)
	}
	serve("push", n.push.Serve)
	var httpLn net.Listener = n.httpL
	if ticket != "" {
		// The bridge's clients send request lines net/http refuses.
		httpLn = httpapi.CompatListener(httpLn)
	}
	serve("http", func() error { return n.http.Serve(httpLn) })
	if lim := openFileLimit(); lim > 0 {
		if w := fdLimitWarning(cfg, lim); w != "" {
			log.Warn(w)
		}
	}
	n.api.SetReady(true)
	log.Info("push node ready", "version", Version, "client", n.ClientAddr().String(), "udp", cfg.UDP, "tcp", cfg.TCP,
		"push", n.PushAddr().String(), "http", n.HTTPAddr().String(), "records", c.Records(), "heartbeat_policy", policy.String(),
		"peer", n.peerAddr(), "ordinal", ordinal)
	return n, nil
}

// listenClients binds the client port over UDP and TCP. With port 0 the
// two transports must still share one port, so the port UDP picks is
// tried for TCP, and the pair picked again if TCP finds it taken.
func (n *Node) listenClients(cfg Config, limit *ratelimit.PerSource) error {
	tcpOpt := tcpserver.Options{IdleTimeout: cfg.TCPIdleTimeout, FrameTimeout: cfg.TCPFrameTimeout,
		MaxConns: cfg.MaxTCPClients, MaxConnsPerSource: cfg.MaxTCPClientsPerSource}
	_, port, _ := net.SplitHostPort(cfg.ClientAddr)
	tries := 1
	if cfg.UDP && cfg.TCP && port == "0" {
		tries = 20
	}
	var err error
	for range tries {
		if cfg.UDP {
			if n.udp, err = udpserver.Listen(cfg.ClientAddr, n.core, limit, n.log); err != nil {
				return fmt.Errorf("listen udp %s: %w", cfg.ClientAddr, err)
			}
		}
		if !cfg.TCP {
			break
		}
		addr := cfg.ClientAddr
		if n.udp != nil {
			addr = netip.AddrPortFrom(mustAddr(cfg.ClientAddr), n.udp.Addr().Port()).String()
		}
		if n.tcp, err = tcpserver.Listen(addr, n.core, limit, tcpOpt, n.log); err == nil {
			break
		}
		err = fmt.Errorf("listen tcp %s: %w", addr, err)
		if n.udp != nil {
			_ = n.udp.Close()
			n.udp = nil
		}
	}
	if err != nil {
		return err
	}
	if n.udp != nil {
		n.core.SetUDPSender(n.udp)
	}
	return nil
}

func mustAddr(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil || host == "" {
		return netip.IPv6Unspecified()
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a
	}
	if ips, err := net.LookupIP(host); err == nil && len(ips) > 0 {
		if a, ok := netip.AddrFromSlice(ips[0]); ok {
			return a.Unmap()
		}
	}
	return netip.IPv6Unspecified()
}

// Core is the node's engine.
func (n *Node) Core() *core.Core { return n.core }

// ClientAddr is the bound client address (UDP and TCP share the port).
func (n *Node) ClientAddr() netip.AddrPort {
	if n.udp != nil {
		return n.udp.Addr()
	}
	if n.tcp != nil {
		return n.tcp.Addr()
	}
	return netip.AddrPort{}
}

// PushAddr is the bound push address.
func (n *Node) PushAddr() netip.AddrPort { return n.push.Addr() }

// HTTPAddr is the bound HTTP address.
func (n *Node) HTTPAddr() netip.AddrPort { return n.httpL.AddrPort() }

// Stop shuts down gracefully: not ready, stop taking traffic, make
// everything durable, close the store. ctx bounds the wait for the
// listeners: every listener stops accepting at once and ends its
// connections, a request being answered (a push being committed) still
// gets its answer, and what is left at ctx's end is closed by force.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() {
		if n.api != nil {
			// Also ends long polls and event streams.
			n.api.SetReady(false)
		}
		// The listeners stop side by side, so that one slow peer does not
		// use up the deadline of the others.
		var errs []error
		var mu sync.Mutex
		var stopping sync.WaitGroup
		stop := func(f func() error) {
			stopping.Go(func() {
				if err := f(); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		if n.http != nil {
			stop(func() error { return n.stopHTTP(ctx) })
		} else if n.httpL != nil {
			stop(n.httpL.Close)
		}
		if n.tcp != nil {
			stop(func() error { return n.tcp.Shutdown(ctx) })
		}
		if n.push != nil {
			stop(func() error { return n.push.Shutdown(ctx) })
		}
		stopping.Wait()
		// Peers after the listeners, whose last pushes may be relayed, and
		// before UDP, which sends what homes relay back to phones here.
		// The relay stays set: a closed router drops or refuses what is
		// not homed here, where dropping the relay would apply it here.
		if n.moves != nil {
			n.moves.Close()
		}
		if n.shard != nil {
			_ = n.shard.Close()
		}
		// UDP last: heartbeats are still applied, and pushes answered
		// during the drain still reach UDP clients.
		if n.udp != nil {
			_ = n.udp.Close()
		}
		n.wg.Wait()
		for _, err := range errs {
			n.log.Warn("shutdown", "err", err)
		}
		n.cancelCore()
		// The last commit is short; it gets a few seconds even when the
		// listeners used up the caller's deadline.
		wait := 5 * time.Second
		if d, ok := ctx.Deadline(); ok && time.Until(d) > wait {
			wait = time.Until(d)
		}
		select {
		case n.stopErr = <-n.coreErr:
		case <-time.After(wait):
			n.stopErr = errors.New("store not closed before the shutdown deadline")
		}
		if n.stopErr == nil {
			n.log.Info("push node stopped; everything is on disk")
		}
	})
	return n.stopErr
}

// startShard makes the node one pod of a sharded PushNode: it listens for
// the other pods and takes up the slot map it stored before a restart.
func (n *Node) startShard(cfg Config, token string, ordinal int, reg prometheus.Registerer) error {
	// A move's source calls the target's HTTP API, which takes the API
	// token (every pod of a PushNode has it); the peer secret is for the
	// peer port.
	apiToken := token
	if cfg.PeerTokenFile != "" {
		var err error
		if token, err = readSecret(cfg.PeerTokenFile, "peer token file"); err != nil {
			return err
		}
	}
	var inc [8]byte
	_, _ = rand.Read(inc[:])
	r, err := shard.New(shard.Options{
		Ordinal: ordinal, Token: token, PeerAddr: cfg.PeerAddr, Core: n.core, Logger: n.log, FrontLostGrace: cfg.PeerLostGrace,
		Incarnation: binary.BigEndian.Uint64(inc[:]),
	})
	if err != nil {
		return err
	}
	n.shard = r
	stored, err := n.core.Store().SlotMap()
	if err != nil {
		return fmt.Errorf("read the stored slot map: %w", err)
	}
	if err := r.LoadStored(stored); err != nil {
		return err
	}
	if n.udp != nil {
		r.SetUDPSender(n.udp)
	}
	n.core.SetRelay(r)
	// Before anything is served: a move cut short in its handoff holds
	// its slots until it is settled.
	mopt := reshard.Options{Core: n.core, Router: r, Token: apiToken, Logger: n.log, Metrics: reshard.NewMetrics(reg)}
	if v := os.Getenv(MovePauseEnv); v != "" {
		step, d, _ := strings.Cut(v, ":")
		mopt.PauseAt = step
		mopt.PauseFor, _ = time.ParseDuration(d)
	}
	mv, err := reshard.New(mopt)
	if err != nil {
		return fmt.Errorf("read the stored slot moves: %w", err)
	}
	n.moves = mv
	return nil
}

// seenStep is how far a record's stored last-seen time may trail the
// live one: a quarter of the online window (or of the expiry age, if
// shorter). A phone that heartbeated within the window minus that before
// a crash is still taken as online after it, and a record expires at most
// that much early; phones heartbeating faster than it cost one write back
// per step instead of one per heartbeat.
func seenStep(cfg Config) time.Duration {
	d := cfg.OnlineWindow
	if cfg.ExpiryAge > 0 && cfg.ExpiryAge < d {
		d = cfg.ExpiryAge
	}
	return d / 4
}

// MovePauseEnv names a fault-injection setting for tests: "step:duration"
// makes a slot move's source wait before that step (stream, handoff,
// commit, cleanup), or its target wait in its commit before installing
// the map (install), so that a test can kill a pod or race a call there.
const MovePauseEnv = "PUSHNODE_TEST_MOVE_PAUSE"

// Shard is the node's place in a sharded PushNode; nil for a whole node.
func (n *Node) Shard() *shard.Router { return n.shard }

func (n *Node) peerAddr() string {
	if n.shard == nil {
		return ""
	}
	return n.shard.PeerAddr()
}
