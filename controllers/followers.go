package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers/builders"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/slotmap"
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
// long-poll loop per node pod feeds PushMessage reconciles, so no message
// is ever polled on its own. Each pod of a sharded PushNode has its own
// event log (of the pushes homed there) and its own store incarnation, so
// each has its own loop and cursor. It is a manager Runnable: loops stop
// with it.
type Followers struct {
	Client  client.Client
	Locator NodeLocator
	Log     logr.Logger
	// Wait is the long-poll wait; the loop is otherwise idle.
	Wait time.Duration

	events chan event.TypedGenericEvent[*ddpushv1.PushMessage]

	mu    sync.Mutex
	ctx   context.Context
	loops map[podKey]*follower
}

// podKey names one pod of a PushNode.
type podKey struct {
	node    types.NamespacedName
	ordinal int
}

func (k podKey) String() string { return fmt.Sprintf("%s#%d", k.node, k.ordinal) }

// NewFollowers returns followers that publish on a buffered channel.
func NewFollowers(c client.Client, l NodeLocator, log logr.Logger) *Followers {
	return &Followers{Client: c, Locator: l, Log: log, Wait: 25 * time.Second,
		events: make(chan event.TypedGenericEvent[*ddpushv1.PushMessage], 1024),
		loops:  map[podKey]*follower{}}
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
	key    podKey
	cancel context.CancelFunc
	// kick ends the loop's wait between attempts: the pod is back.
	kick chan struct{}
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

// Ensure starts following the pods 0..replicas-1 of a PushNode that
// nobody follows yet.
func (f *Followers) Ensure(node types.NamespacedName, replicas int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx == nil {
		return
	}
	for i := range max(replicas, 1) {
		key := podKey{node, i}
		if f.loops[key] != nil {
			continue
		}
		ctx, cancel := context.WithCancel(f.ctx)
		l := &follower{key: key, cancel: cancel, kick: make(chan struct{}, 1), fates: map[string]Fate{}, synced: map[string]int{}}
		f.loops[key] = l
		go f.run(ctx, l)
	}
}

// Stop stops following every pod of a PushNode.
func (f *Followers) Stop(node types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for key, l := range f.loops {
		if key.node == node {
			l.cancel()
			delete(f.loops, key)
		}
	}
}

// Kick has the follower of a pod try again now rather than at the end of
// its backoff: the pod was seen coming back, and the messages homed there
// should not wait up to the longest backoff for their events.
func (f *Followers) Kick(node types.NamespacedName, ordinal int) {
	if l := f.loop(podKey{node, ordinal}); l != nil {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

func (f *Followers) loop(key podKey) *follower {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loops[key]
}

// PushOrdinal is the ordinal of the pod whose event log and store hold
// pm's push: its uuid's home in the slot map recorded in pn's status.
// Slots move between pods when replicas change, and a push moves with
// its uuid keeping its id, so the pod that accepted it (which its id
// names) may no longer hold it. pn nil, or a sharded PushNode without a
// map, leaves the pod that accepted it; a PushNode of one pod holds
// every push in pod 0, whichever pod accepted it before it shrank.
func PushOrdinal(pn *ddpushv1.PushNode, pm *ddpushv1.PushMessage) int {
	accepted := acceptedOrdinal(pm)
	switch {
	case pn == nil || pm.Status.PushID == 0:
		return accepted
	case !builders.Sharded(pn):
		return 0
	case pn.Status.SlotMap == nil:
		return accepted
	}
	if home, err := HomeOrdinal(pn, targetOf(pm)); err == nil {
		return home
	}
	return accepted
}

// acceptedOrdinal is the ordinal of the pod that accepted pm's push,
// which encodes itself in the push ids it hands out. An id in ordinal
// 0's range from another pod comes from a node that does not partition
// its ids (an image from before sharding, which pushes only where it is
// asked), and then the pod that accepted the push is in NodePod.
func acceptedOrdinal(pm *ddpushv1.PushMessage) int {
	if o, ok := slotmap.OrdinalOfID(uint64(pm.Status.PushID)); ok && o > 0 {
		return o
	}
	if o, ok := slotmap.OrdinalFromPodName(pm.Status.NodePod); ok {
		return o
	}
	return 0
}

// Lookup returns what the stream said about the push with idempotency
// key uid, and whether the caller must look the push up once itself
// because the stream may have missed it (since the message was last
// looked at, the follower started, events were trimmed before it read
// them, or the node's store was replaced).
func (f *Followers) Lookup(node types.NamespacedName, ordinal int, uid string) (fate Fate, known bool, resync bool, following bool) {
	l := f.loop(podKey{node, ordinal})
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
func (f *Followers) Synced(node types.NamespacedName, ordinal int, uid string) {
	if l := f.loop(podKey{node, ordinal}); l != nil {
		l.mu.Lock()
		l.synced[uid] = l.epoch
		l.mu.Unlock()
	}
}

// Forget drops what is known of a finished push.
func (f *Followers) Forget(node types.NamespacedName, ordinal int, uid string) {
	if l := f.loop(podKey{node, ordinal}); l != nil {
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
	log := f.Log.WithValues("pushnode", l.key.node.String(), "ordinal", l.key.ordinal)
	log.Info("following delivery events")
	defer log.Info("stopped following delivery events")
	backoff := time.Second
	pause := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
			backoff = min(backoff*2, 30*time.Second)
		case <-l.kick:
			backoff = time.Second
		}
		return true
	}
	for ctx.Err() == nil {
		var pn ddpushv1.PushNode
		if err := f.Client.Get(ctx, l.key.node, &pn); err != nil {
			if ctx.Err() == nil {
				log.V(1).Info("cannot read PushNode", "err", err)
			}
			if !pause() {
				return
			}
			continue
		}
		c, err := f.nodeClient(ctx, &pn, l.key.ordinal)
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
			f.wake(ctx, l.key.node.Namespace, e.Key)
		}
		l.pos.seq = evs.Next
	}
}

func (f *Followers) nodeClient(ctx context.Context, pn *ddpushv1.PushNode, ordinal int) (*api.Client, error) {
	ep, err := f.Locator.Pod(ctx, pn, ordinal)
	if err != nil {
		return nil, err
	}
	token, err := ReadToken(ctx, f.Client, pn)
	if err != nil {
		return nil, err
	}
	return newNodeClient(ep.URL, token, f.Wait+30*time.Second), nil
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

// wakeAll enqueues every open PushMessage whose push the pod holds (and,
// for pod 0, those not submitted yet, as before there were several pods).
func (f *Followers) wakeAll(ctx context.Context, key podKey) {
	var list ddpushv1.PushMessageList
	if err := f.Client.List(ctx, &list, client.InNamespace(key.node.Namespace), client.MatchingFields{IndexPushNode: key.node.Name}); err != nil {
		return
	}
	pn := f.pushNode(ctx, key.node)
	for i := range list.Items {
		if !list.Items[i].Status.Phase.Finished() && PushOrdinal(pn, &list.Items[i]) == key.ordinal {
			f.send(ctx, &list.Items[i])
		}
	}
}

// pushNode reads the PushNode whose slot map says where pushes live; nil
// when it cannot be read, which leaves each push at the pod that
// accepted it.
func (f *Followers) pushNode(ctx context.Context, key types.NamespacedName) *ddpushv1.PushNode {
	var pn ddpushv1.PushNode
	if err := f.Client.Get(ctx, key, &pn); err != nil {
		return nil
	}
	return &pn
}

func (f *Followers) send(ctx context.Context, pm *ddpushv1.PushMessage) {
	select {
	case f.events <- event.TypedGenericEvent[*ddpushv1.PushMessage]{Object: pm}:
	case <-ctx.Done():
	}
}
