package controllers

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/node/api"
)

// Fate is the latest known fate of one push, as the event stream told it.
type Fate struct {
	PushID     uint64
	UUID       string
	Fate       string
	SentAt     time.Time
	FinishedAt time.Time
	// Incarnation is the node store the events came from: PushID names
	// this push only in that store.
	Incarnation string
}

// Followers follows the delivery events of every available PushNode: one
// long-poll loop per node feeds PushMessage reconciles, so no message is
// ever polled on its own. It is a manager Runnable: loops stop with it.
type Followers struct {
	Client  client.Client
	Locator NodeLocator
	Log     logr.Logger
	// Wait is the long-poll wait; the loop is otherwise idle.
	Wait time.Duration

	events chan event.TypedGenericEvent[*ddpushv1.PushMessage]

	mu    sync.Mutex
	ctx   context.Context
	loops map[types.NamespacedName]*follower
}

// NewFollowers returns followers that publish on a buffered channel.
func NewFollowers(c client.Client, l NodeLocator, log logr.Logger) *Followers {
	return &Followers{Client: c, Locator: l, Log: log, Wait: 25 * time.Second,
		events: make(chan event.TypedGenericEvent[*ddpushv1.PushMessage], 1024),
		loops:  map[types.NamespacedName]*follower{}}
}

// Events is the channel source of PushMessage reconciles.
func (f *Followers) Events() <-chan event.TypedGenericEvent[*ddpushv1.PushMessage] { return f.events }

// Start implements manager.Runnable.
func (f *Followers) Start(ctx context.Context) error {
	f.mu.Lock()
	f.ctx = ctx
	f.mu.Unlock()
	<-ctx.Done()
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, l := range f.loops {
		l.cancel()
		delete(f.loops, k)
	}
	return nil
}

// NeedLeaderElection: only the leader follows and submits.
func (f *Followers) NeedLeaderElection() bool { return true }

type follower struct {
	key    types.NamespacedName
	cancel context.CancelFunc
	// pos is where the follower is in the node's event log; only its
	// run loop uses it.
	pos    cursor
	mu     sync.Mutex
	epoch  int
	fates  map[string]Fate // by idempotency key (the PushMessage UID)
	synced map[string]int  // key -> epoch in which it was resynced
	order  []string        // fates in insertion order, to bound memory
}

const maxFates = 100_000

// Ensure starts following a PushNode if nobody does yet.
func (f *Followers) Ensure(key types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx == nil || f.loops[key] != nil {
		return
	}
	ctx, cancel := context.WithCancel(f.ctx)
	l := &follower{key: key, cancel: cancel, fates: map[string]Fate{}, synced: map[string]int{}}
	f.loops[key] = l
	go f.run(ctx, l)
}

// Stop stops following a PushNode.
func (f *Followers) Stop(key types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.loops[key]; l != nil {
		l.cancel()
		delete(f.loops, key)
	}
}

func (f *Followers) loop(key types.NamespacedName) *follower {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loops[key]
}

// Lookup returns what the stream said about the push with idempotency
// key uid, and whether the caller must look the push up once itself
// because the stream may have missed it (since the message was last
// looked at, the follower started, events were trimmed before it read
// them, or the node's store was replaced).
func (f *Followers) Lookup(node types.NamespacedName, uid string) (fate Fate, known bool, resync bool, following bool) {
	l := f.loop(node)
	if l == nil {
		return Fate{}, false, false, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fate, known = l.fates[uid]
	e, ok := l.synced[uid]
	return fate, known, !ok || e != l.epoch, true
}

// Synced records that the caller looked the push up itself in the
// follower's current epoch.
func (f *Followers) Synced(node types.NamespacedName, uid string) {
	if l := f.loop(node); l != nil {
		l.mu.Lock()
		l.synced[uid] = l.epoch
		l.mu.Unlock()
	}
}

// Forget drops what is known of a finished push.
func (f *Followers) Forget(node types.NamespacedName, uid string) {
	if l := f.loop(node); l != nil {
		l.mu.Lock()
		delete(l.fates, uid)
		delete(l.synced, uid)
		l.mu.Unlock()
	}
}

// record keeps what event e, read from the log of store incarnation inc,
// says about its push.
func (l *follower) record(e api.Event, inc string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, ok := l.fates[e.Key]
	if ok && (cur.Incarnation != inc || cur.PushID != e.PushID) {
		// The key was pushed again into a store that replaced the
		// first: what the first store said is about another push.
		cur = Fate{}
	}
	if !ok {
		l.order = append(l.order, e.Key)
		if len(l.order) > maxFates {
			old := l.order[0]
			l.order = l.order[1:]
			delete(l.fates, old)
			delete(l.synced, old)
		}
	}
	cur.PushID, cur.UUID, cur.Incarnation = e.PushID, e.UUID, inc
	switch e.Fate {
	case api.FateSent:
		if cur.SentAt.IsZero() {
			cur.SentAt = e.At
		}
	case api.FateAcknowledged, api.FateSuperseded, api.FateExpired:
		cur.FinishedAt = e.At
	}
	if fateRank(e.Fate) > fateRank(cur.Fate) {
		cur.Fate = e.Fate
	}
	l.fates[e.Key] = cur
}

// newEpoch forgets which messages were resynced: the stream may have
// missed events, so each open message looks itself up once more.
func (l *follower) newEpoch() {
	l.mu.Lock()
	l.epoch++
	clear(l.synced)
	l.mu.Unlock()
}

func fateRank(f string) int {
	switch f {
	case api.FateQueued:
		return 1
	case api.FateSent:
		return 2
	case api.FateAcknowledged, api.FateSuperseded, api.FateExpired:
		return 3
	}
	return 0
}

func (f *Followers) run(ctx context.Context, l *follower) {
	log := f.Log.WithValues("pushnode", l.key.String())
	log.Info("following delivery events")
	defer log.Info("stopped following delivery events")
	backoff := time.Second
	pause := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
		return true
	}
	for ctx.Err() == nil {
		var pn ddpushv1.PushNode
		if err := f.Client.Get(ctx, l.key, &pn); err != nil {
			if ctx.Err() == nil {
				log.V(1).Info("cannot read PushNode", "err", err)
			}
			if !pause() {
				return
			}
			continue
		}
		c, err := f.nodeClient(ctx, &pn)
		if err != nil {
			log.V(1).Info("node not reachable", "err", err)
			if !pause() {
				return
			}
			continue
		}
		switch {
		case !l.pos.set:
			err = f.baseline(ctx, c, l)
		case l.pos.recheck:
			err = f.recheck(ctx, c, l)
		}
		if err != nil {
			log.V(1).Info("cannot look at the node", "err", err)
			if !pause() {
				return
			}
			continue
		}
		evs, err := c.Events(ctx, l.pos.seq, 1000, f.Wait)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// The node may be restarting or out of reach for a moment.
			// The cursor is kept: the next answer says whether it still
			// holds, so a restart on the same store costs no resync.
			log.V(1).Info("reading events failed; will resume from the cursor", "err", err, "after", l.pos.seq)
			l.pos.recheck = true
			if !pause() {
				return
			}
			continue
		}
		backoff = time.Second
		if evs.Incarnation != l.pos.incarnation {
			// The node runs on another store: the cursor, and every push
			// id the messages hold, name other events and pushes there.
			log.Info("the node's store was replaced; resyncing open messages",
				"incarnation", evs.Incarnation, "previous", l.pos.incarnation)
			l.pos.set = false
			continue
		}
		if evs.Gap {
			log.Info("events were missed (trimmed before they were read, or the log is behind the cursor); resyncing open messages")
			l.newEpoch()
			f.wakeAll(ctx, l.key)
		}
		for _, e := range evs.Events {
			if e.Key == "" {
				continue // pushed without a key: not a PushMessage
			}
			l.record(e, evs.Incarnation)
			f.wake(ctx, l.key.Namespace, e.Key)
		}
		l.pos.seq = evs.Next
	}
}

func (f *Followers) nodeClient(ctx context.Context, pn *ddpushv1.PushNode) (*api.Client, error) {
	eps, err := f.Locator.All(ctx, pn)
	if err != nil {
		return nil, err
	}
	if len(eps) == 0 {
		return nil, errors.New("no node pods")
	}
	token, err := ReadToken(ctx, f.Client, pn)
	if err != nil {
		return nil, err
	}
	c := api.NewClient(eps[0].URL, token)
	c.HTTP.Timeout = f.Wait + 30*time.Second
	return c, nil
}

// wake enqueues the PushMessage whose UID is uid.
func (f *Followers) wake(ctx context.Context, ns, uid string) {
	var list ddpushv1.PushMessageList
	if err := f.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{IndexUID: uid}); err != nil {
		return
	}
	for i := range list.Items {
		f.send(ctx, &list.Items[i])
	}
}

// wakeAll enqueues every open PushMessage of a node.
func (f *Followers) wakeAll(ctx context.Context, node types.NamespacedName) {
	var list ddpushv1.PushMessageList
	if err := f.Client.List(ctx, &list, client.InNamespace(node.Namespace), client.MatchingFields{IndexPushNode: node.Name}); err != nil {
		return
	}
	for i := range list.Items {
		if !list.Items[i].Status.Phase.Finished() {
			f.send(ctx, &list.Items[i])
		}
	}
}

func (f *Followers) send(ctx context.Context, pm *ddpushv1.PushMessage) {
	select {
	case f.events <- event.TypedGenericEvent[*ddpushv1.PushMessage]{Object: pm}:
	case <-ctx.Done():
	}
}
