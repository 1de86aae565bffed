package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/peer"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// Options configure a Router.
type Options struct {
	Ordinal     int
	Token       string // the PushNode's API token, also the peer links'
	PeerAddr    string // where the peer server listens, e.g. ":9977"
	Incarnation uint64 // changes with every start of this process
	Core        *core.Core
	Logger      *slog.Logger
	// FrontLostGrace is how long a front's stream may stay away before
	// the phones it held over TCP count as gone (default 15 s: longer
	// than a reconnect takes).
	FrontLostGrace time.Duration
}

// Router is this pod's place in a sharded PushNode.
type Router struct {
	opt Options
	log *slog.Logger
	srv *peer.Server

	m     atomic.Pointer[slotmap.Map] // nil: no map, every uuid is local
	holdp atomic.Pointer[hold]        // the slots a move's handoff holds

	installMu sync.Mutex // one Install at a time
	mu        sync.Mutex // guards links' membership and closed
	links     atomic.Pointer[[]*peer.Link]
	closed    bool
	timers    map[*time.Timer]struct{} // pending frontLost checks

	udp atomic.Pointer[udpSender]

	// TCP connections here of phones homed elsewhere, by the id the
	// home knows them by, and back.
	connMu  sync.Mutex
	connIDs map[any]uint64
	conns   map[uint64]core.ConnSender
	nextID  uint64

	lookups atomic.Pointer[http.Handler]
	clocks  frontClocks

	bufs sync.Pool
}

type udpSender struct{ s core.UDPSender }

// New starts the peer server. The router routes nothing until SetMap.
func New(opt Options) (*Router, error) {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.FrontLostGrace <= 0 {
		opt.FrontLostGrace = 15 * time.Second
	}
	if opt.Ordinal < 0 || opt.Ordinal >= slotmap.MaxOrdinals {
		return nil, fmt.Errorf("ordinal %d: ordinals are 0-%d", opt.Ordinal, slotmap.MaxOrdinals-1)
	}
	r := &Router{
		opt:     opt,
		log:     opt.Logger.With("ordinal", opt.Ordinal),
		connIDs: map[any]uint64{},
		timers:  map[*time.Timer]struct{}{},
		conns:   map[uint64]core.ConnSender{},
	}
	r.bufs.New = func() any { b := make([]byte, 0, 256); return &b }
	empty := []*peer.Link{}
	r.links.Store(&empty)
	srv, err := peer.Listen(peer.ServerOptions{
		Addr: opt.PeerAddr, Token: opt.Token, Handler: r, Logger: opt.Logger,
		Self:         peer.Hello{Ordinal: uint16(opt.Ordinal), Incarnation: opt.Incarnation},
		OnSession:    r.frontStarted,
		OnSessionEnd: r.frontLost,
	})
	if err != nil {
		return nil, fmt.Errorf("listen for peers on %s: %w", opt.PeerAddr, err)
	}
	r.srv = srv
	return r, nil
}

// Ordinal is this pod's ordinal.
func (r *Router) Ordinal() int { return r.opt.Ordinal }

// PeerAddr is where the peer server listens.
func (r *Router) PeerAddr() string { return r.srv.Addr().String() }

// Server is the peer server (for stats).
func (r *Router) Server() *peer.Server { return r.srv }

// SetUDPSender sets the socket phones talk to over UDP at this pod.
func (r *Router) SetUDPSender(s core.UDPSender) { r.udp.Store(&udpSender{s}) }

// Map is the current slot map; the zero Map when there is none.
func (r *Router) Map() slotmap.Map {
	if m := r.m.Load(); m != nil {
		return *m
	}
	return slotmap.Map{}
}

// SetMap makes m the slot map: uuids are routed by it from now on, and a
// link is dialed to every other pod it names (links to pods it no longer
// names are closed). The caller checks epochs and stores the map.
func (r *Router) SetMap(m slotmap.Map) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("shard router closed")
	}
	old := *r.links.Load()
	next := make([]*peer.Link, slotmap.MaxOrdinals)
	var dial []int
	for _, o := range m.Ordinals() {
		if o == r.opt.Ordinal {
			continue
		}
		addr, _ := m.Peer(o)
		if o < len(old) && old[o] != nil && old[o].Addr() == addr {
			next[o] = old[o]
			continue
		}
		dial = append(dial, o)
	}
	for _, o := range dial {
		addr, _ := m.Peer(o)
		l, err := peer.Dial(peer.LinkOptions{
			Addr: addr, Token: r.opt.Token, PeerOrdinal: o, Handler: r, Logger: r.opt.Logger,
			Self: peer.Hello{Ordinal: uint16(r.opt.Ordinal), Epoch: m.Epoch(), Incarnation: r.opt.Incarnation},
		})
		if err != nil {
			for _, o := range dial {
				if next[o] != nil {
					_ = next[o].Close()
				}
			}
			return fmt.Errorf("link to pod %d at %s: %w", o, addr, err)
		}
		next[o] = l
	}
	mm := m
	r.m.Store(&mm)
	r.links.Store(&next)
	for o, l := range old {
		if l != nil && (o >= len(next) || next[o] != l) {
			_ = l.Close()
		}
	}
	r.log.Info("slot map in force", "epoch", m.Epoch(), "slots", m.SlotCount(r.opt.Ordinal), "ranges", m.Ranges(r.opt.Ordinal), "pods", len(m.Ordinals()))
	return nil
}

// Close closes every link and the peer server.
func (r *Router) Close() error {
	r.mu.Lock()
	r.closed = true
	for t := range r.timers {
		t.Stop()
	}
	clear(r.timers)
	links := *r.links.Load()
	empty := []*peer.Link{}
	r.links.Store(&empty)
	r.mu.Unlock()
	for _, l := range links {
		if l != nil {
			_ = l.Close()
		}
	}
	return r.srv.Close()
}

// Links returns the links this pod dialed, in ordinal order.
func (r *Router) Links() []*peer.Link {
	var out []*peer.Link
	for _, l := range *r.links.Load() {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}

// Home is the ordinal of u's home, and whether that is this pod. Before
// its first map a pod is home of nothing: it cannot know whose a uuid
// is, and what it took as its own could belong to another pod (-1).
func (r *Router) Home(u wire.UUID) (ordinal int, local bool) {
	m := r.m.Load()
	if m == nil {
		return -1, false
	}
	o := m.OwnerOf(u)
	return o, o == r.opt.Ordinal
}

func (r *Router) link(o int) *peer.Link {
	ls := *r.links.Load()
	if o < 0 || o >= len(ls) {
		return nil
	}
	return ls[o]
}

// Local implements core.Relay.
func (r *Router) Local(u wire.UUID) bool {
	m := r.m.Load()
	return m != nil && m.OwnerOf(u) == r.opt.Ordinal && r.heldBy(u) == nil
}

// Phone implements core.Relay: the packet goes to the home as it came.
// A packet that cannot be queued is dropped (the link counts it): the
// phone sends it again with its next heartbeat.
func (r *Router) Phone(now int64, u wire.UUID, raw []byte, tr state.Transport, from netip.AddrPort, conn any) {
	if r.holdPhone(now, u, raw, tr, from, conn) {
		return
	}
	home, _ := r.Home(u)
	l := r.link(home)
	if l == nil {
		if home < 0 {
			r.opt.Core.Stats().Drop(stats.DropNoSlotMap)
		} else {
			r.srv.CountDrop(home, peer.DropLinkDown)
		}
		return
	}
	p := peer.PhonePacket{Arrival: now, Raw: raw}
	if tr == state.TCP {
		p.Route = peer.Route{Transport: peer.TCP, ConnID: r.connID(conn)}
	} else {
		p.Route = peer.Route{Transport: peer.UDP, Addr: from}
	}
	_ = l.SendPhonePacket(&p)
}

// connID is the id the home knows a TCP connection here by.
func (r *Router) connID(conn any) uint64 {
	r.connMu.Lock()
	defer r.connMu.Unlock()
	if id, ok := r.connIDs[conn]; ok {
		return id
	}
	r.nextID++
	id := r.nextID
	r.connIDs[conn] = id
	if cs, ok := conn.(core.ConnSender); ok {
		r.conns[id] = cs
	}
	return id
}

// DetachPhone implements core.Relay.
func (r *Router) DetachPhone(u wire.UUID, conn any) {
	r.connMu.Lock()
	id, ok := r.connIDs[conn]
	if ok {
		delete(r.connIDs, conn)
		delete(r.conns, id)
	}
	r.connMu.Unlock()
	if !ok {
		return // never relayed: the home never saw it
	}
	home, _ := r.Home(u)
	if l := r.link(home); l != nil {
		_ = l.SendDetach(&peer.Detach{ConnID: id, UUIDs: []wire.UUID{u}})
	}
}

// ToPhone implements peer.FrontHandler: a home's message for a phone
// attached here.
func (r *Router) ToPhone(_ *peer.Link, p *peer.ToPhone) {
	if p.Transport == peer.UDP {
		if s := r.udp.Load(); s != nil {
			_ = s.s.SendUDP(p.Bytes, p.Addr)
		}
		return
	}
	r.connMu.Lock()
	cs := r.conns[p.ConnID]
	r.connMu.Unlock()
	if cs == nil {
		r.opt.Core.Stats().Drop(stats.DropRelayConnGone)
		return
	}
	cs.Send(p.Bytes)
}

// ToPhoneUDP implements core.Relay.
func (r *Router) ToPhoneUDP(front int, to netip.AddrPort, msg []byte) {
	_ = r.srv.SendToPhone(front, &peer.ToPhone{Route: peer.Route{Transport: peer.UDP, Addr: to}, Bytes: msg})
}

const (
	// relayWait is how long a front waits for a home's answer to a push.
	relayWait = 5 * time.Second
	// commitMargin is what is left of relayWait after the last moment a
	// home may start committing: enough for a commit (a few fsyncs) and
	// the answer's way back.
	commitMargin = 2 * time.Second
)

// UnreachableError is a push whose home did not answer.
type UnreachableError struct {
	Home int
	// Unknown: the push reached the link and no answer came, so it may
	// have been committed at the home.
	Unknown bool
	Err     error
}

func (e *UnreachableError) Error() string {
	if e.Home < 0 {
		return "this pod has no slot map yet, so it cannot tell which pod is the uuid's home: the push was not accepted"
	}
	if e.Unknown {
		return fmt.Sprintf("home pod %d did not answer, so whether the push was accepted is unknown (retry with the same idempotency key): %v", e.Home, e.Err)
	}
	return fmt.Sprintf("home pod %d is unreachable, the push was not accepted: %v", e.Home, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Push implements core.Relay: the push goes to its home, once any move
// holding its slot has let go of it.
func (r *Router) Push(ctx context.Context, p core.PushSpec) (core.PushResult, error) {
	return r.pushHome(ctx, p)
}

// relayPush relays a push to pod home and returns its answer.
func (r *Router) relayPush(ctx context.Context, home int, p core.PushSpec) (core.PushResult, error) {
	l := r.link(home)
	if l == nil {
		return core.PushResult{}, &UnreachableError{Home: home, Err: peer.ErrLinkDown}
	}
	// The home may start the commit only while this pod still waits:
	// an answer that comes after it gave up is "outcome unknown", which
	// 9999 and the bulk API cannot tell from "refused".
	wait := relayWait
	if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
		wait = time.Until(d)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	budget := wait - commitMargin
	if budget <= 0 {
		return core.PushResult{}, &UnreachableError{Home: home, Err: fmt.Errorf("%w: no time left to relay the push", peer.ErrNotSent)}
	}
	ans, err := l.Push(ctx, peer.PushReq{UUID: p.UUID, Kind: uint8(p.Kind), Bits: p.Bits, Key: p.Key, Payload: p.Payload, Budget: budget})
	if err != nil {
		return core.PushResult{}, &UnreachableError{Home: home, Unknown: errors.Is(err, peer.ErrOutcomeUnknown), Err: err}
	}
	switch ans.Status {
	case peer.PushAccepted:
		return core.PushResult{ID: ans.ID, UUID: p.UUID, Kind: p.Kind, Fate: state.Fate(ans.Fate),
			AcceptedAt: time.Unix(0, ans.AcceptedAt), Duplicate: ans.Duplicate, Relayed: true, Home: home}, nil
	case peer.PushInvalid:
		return core.PushResult{}, &core.InputError{Msg: ans.Reason}
	case peer.PushKeyReused:
		return core.PushResult{}, &core.KeyReusedError{Key: p.Key, ID: ans.ID, Why: ans.Reason}
	}
	return core.PushResult{}, fmt.Errorf("home pod %d refused the push: %s", home, ans.Reason)
}

// SetLookups sets what answers the lookups other pods relay here.
func (r *Router) SetLookups(h http.Handler) { r.lookups.Store(&h) }

// Stats are the counters of every link, dialed and accepted.
func (r *Router) Stats() []peer.LinkStats {
	var out []peer.LinkStats
	for _, l := range r.Links() {
		out = append(out, l.Stats())
	}
	return append(out, r.srv.Stats()...)
}

// frontStarted runs when a front's stream comes up. A front that started
// again (another incarnation) lost every TCP connection it held, and no
// Detach will come for them: its phones are offline here until they
// connect again, as on a single node when a connection closes.
func (r *Router) frontStarted(ordinal int, incarnation uint64) {
	go func() {
		n := r.opt.Core.DetachConns(func(conn any) bool {
			rc, ok := conn.(peer.RemoteConn)
			return ok && rc.Ordinal() == ordinal && rc.Incarnation() != incarnation
		})
		if n > 0 {
			r.log.Info("phones of a restarted pod's TCP connections are offline until they reconnect", "pod", ordinal, "phones", n)
		}
	}()
}

// frontLost runs when a front's stream ends. If no stream of the same
// front process is back within the grace, its TCP connections are
// forgotten: the front is gone (killed, or cut off), no Detach will come,
// and a phone shown online would have its pushes reported sent while
// nothing can reach it.
func (r *Router) frontLost(ordinal int, incarnation uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(r.opt.FrontLostGrace, func() {
		r.mu.Lock()
		delete(r.timers, t)
		closed := r.closed
		r.mu.Unlock()
		if closed {
			return
		}
		if s := r.srv.Session(ordinal); s != nil && s.Hello().Incarnation == incarnation {
			return
		}
		n := r.opt.Core.DetachConns(func(conn any) bool {
			rc, ok := conn.(peer.RemoteConn)
			return ok && rc.Ordinal() == ordinal && rc.Incarnation() == incarnation
		})
		if n > 0 {
			r.log.Info("phones of a pod that stayed away are offline until they reconnect", "pod", ordinal, "phones", n, "after", r.opt.FrontLostGrace)
		}
	})
	r.timers[t] = struct{}{}
}
