package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// ConditionShardsAvailable says, on a PushNode of more than one pod,
// whether every pod holds the current slot map and serves: a pod that
// does not leaves its share of the uuids without a home.
const ConditionShardsAvailable = "ShardsAvailable"

// firstEpoch is the epoch of the first map of a PushNode.
const firstEpoch = 1

// shardWorkers bounds the pods asked at once: a PushNode may have 512.
const shardWorkers = 16

// slotMapStatus is the status form of m.
func slotMapStatus(m slotmap.Map) *ddpushv1.SlotMapStatus {
	s := m.Spec()
	out := &ddpushv1.SlotMapStatus{Epoch: int64(s.Epoch), Ranges: make([]ddpushv1.SlotRange, len(s.Ranges))}
	for i, r := range s.Ranges {
		out.Ranges[i] = ddpushv1.SlotRange{From: int32(r.From), To: int32(r.To), Ordinal: int32(r.Ordinal)}
	}
	return out
}

// share is the part of all uuids that a number of slots holds, for people.
func share(slots int) string {
	// Whole percents, except below 10% where they would hide a pod's
	// share: 512 pods hold 0.2% each, and "0%" reads as nothing.
	if p := float64(slots*100) / slotmap.NumSlots; p > 0 && p < 9.95 {
		return fmt.Sprintf("%.1f%%", p)
	}
	return fmt.Sprintf("%d%%", (slots*100+slotmap.NumSlots/2)/slotmap.NumSlots)
}

// podShard is what one pod said, or why it said nothing.
type podShard struct {
	st      ddpushv1.PushNodePodStatus
	stats   bool   // Records and Online are read
	held    uint64 // epoch of the map the pod held before this round
	newer   bool   // the pod holds a newer epoch, or the same one with other content
	problem string // for the Degraded condition: what a person must fix
	// unreachable: the pod's API did not answer.
	unreachable bool
}

// reconcileShards hands the slot map to every pod of a sharded PushNode
// that does not hold it, and records the map and each pod's state in st.
// Pods restart, and a pod whose volume was replaced comes back without a
// map, so every pod is asked every time rather than trusted to have kept
// what it was given. It returns the problems a person has to act on.
//
// allReady is whether the StatefulSet counts every pod ready: a ready pod
// whose API does not answer still serves phones, but the operator can
// neither hand it a map nor deliver through it, which a person must see.
func (r *PushNodeReconciler) reconcileShards(ctx context.Context, pn *ddpushv1.PushNode, st *ddpushv1.PushNodeStatus, allReady bool, moving slotmap.Map) []problem {
	log := logf.FromContext(ctx)
	if st.SlotMap == nil {
		// The first map waits for its pod (see reconcileResharding).
		return nil
	}
	// The recorded map is the truth: slots moved since the even split
	// stay where they went.
	m, pods, err := recordedMap(st, func(i int) string { return r.Locator.PeerAddr(pn, i) })
	if err != nil {
		return []problem{{"SlotMapInvalid", err.Error()}}
	}
	epoch := m.Epoch()
	token, terr := ReadToken(ctx, r.Client, pn)
	results := make([]podShard, pods)
	var wg sync.WaitGroup
	sem := make(chan struct{}, shardWorkers)
	for i := range results {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = r.shardOf(ctx, pn, m, moving, i, token, terr)
		}()
	}
	wg.Wait()

	// A pod holding a newer epoch than the status records (the status
	// was restored from an older copy, say) would refuse this map for
	// good: the next map goes past it.
	var high uint64
	for _, p := range results {
		if p.newer {
			high = max(high, p.held)
		}
	}
	// While a move runs its source and target hold its map, newer than
	// the recorded one: that is no reason for another epoch.
	if high >= epoch && moving.IsZero() {
		log.Info("a pod holds a slot map newer than the recorded one; moving to a new epoch", "held", high, "recorded", epoch)
		next, err := slotmap.New(high+1, m.Spec().Ranges, m.Peers())
		if err != nil {
			return []problem{{"SlotMapInvalid", err.Error()}}
		}
		recordMap(st, next)
	} else {
		recordMap(st, m)
	}

	var problems []problem
	st.Pods = make([]ddpushv1.PushNodePodStatus, len(results))
	var records, online int64
	var down []podShard
	var shardProblems, unreachable []string
	for i, p := range results {
		st.Pods[i] = p.st
		if p.stats {
			records += p.st.Records
			online += p.st.Online
		}
		if !p.st.Ready {
			down = append(down, p)
		}
		switch {
		case p.problem != "":
			shardProblems = append(shardProblems, p.problem)
		case p.unreachable && allReady:
			unreachable = append(unreachable, fmt.Sprintf("cannot read the status of pod %s: %s", p.st.Name, p.st.Problem))
		}
	}
	// One problem per reason, not per pod: a cause shared by hundreds of
	// pods (a wrong token, an old image) must not make a condition message
	// the apiserver refuses, nor one event per pod on every look.
	problems = appendGrouped(problems, "ShardProblem", shardProblems)
	problems = appendGrouped(problems, "NodeAPIUnreachable", unreachable)
	st.Records, st.Online = records, online
	meta.SetStatusCondition(&st.Conditions, shardsCondition(pn, m, down))
	return problems
}

func specRanges(s *ddpushv1.SlotMapStatus) []slotmap.Range {
	out := make([]slotmap.Range, len(s.Ranges))
	for i, r := range s.Ranges {
		out[i] = slotmap.Range{From: int(r.From), To: int(r.To), Ordinal: int(r.Ordinal)}
	}
	return out
}

// shardsCondition tells which pods leave which share of the uuids
// without a home.
func shardsCondition(pn *ddpushv1.PushNode, m slotmap.Map, down []podShard) metav1.Condition {
	c := metav1.Condition{Type: ConditionShardsAvailable, ObservedGeneration: pn.Generation}
	n := len(m.Peers())
	if len(down) == 0 {
		c.Status, c.Reason = metav1.ConditionTrue, "AllShardsServed"
		c.Message = fmt.Sprintf("all %d pods hold slot map epoch %d and serve their slots", n, m.Epoch())
		return c
	}
	slots := 0
	parts := make([]string, 0, min(len(down), 4))
	for i, p := range down {
		slots += int(p.st.SlotCount)
		if i < 4 {
			parts = append(parts, fmt.Sprintf("pod %s (slots %s, %s of uuids) is not ready: %s", p.st.Name, p.st.Slots, p.st.Share, p.st.Problem))
		}
	}
	if len(down) > len(parts) {
		parts = append(parts, fmt.Sprintf("and %d more pods", len(down)-len(parts)))
	}
	c.Status, c.Reason = metav1.ConditionFalse, "PodsNotReady"
	c.Message = fmt.Sprintf("%d/%d pods not ready, %s of uuids cannot take pushes until they are back: %s",
		len(down), n, share(slots), strings.Join(parts, "; "))
	return c
}

// shardOf asks pod i what it holds and serves, and hands it m if it does
// not hold it. The source and target of a running move may hold moving
// instead: they install it themselves.
func (r *PushNodeReconciler) shardOf(ctx context.Context, pn *ddpushv1.PushNode, m, moving slotmap.Map, i int, token string, terr error) podShard {
	p := podShard{st: ddpushv1.PushNodePodStatus{
		Name: PodName(pn, i), Ordinal: int32(i), Slots: m.Ranges(i), SlotCount: int32(m.SlotCount(i)),
		Share: share(m.SlotCount(i)),
	}}
	notReady := func(why string) podShard {
		p.st.Ready, p.st.Problem = false, why
		return p
	}
	if terr != nil {
		return notReady(terr.Error())
	}
	ep, err := r.Locator.Pod(ctx, pn, i)
	if err != nil {
		return notReady(err.Error())
	}
	p.st.Name = ep.Pod
	c := newNodeClient(ep.URL, token, nodeStatusTimeout)
	ns, err := c.Status(ctx)
	if err != nil {
		p.unreachable = true
		return notReady(fmt.Sprintf("its API does not answer: %v", err))
	}
	p.st.Records, p.st.Online, p.stats = ns.Records, ns.Online, true
	if was, ok := recordedPod(pn.Status.Pods, i); ok {
		p.st.Records, p.st.Online = settledCount(was.Records, ns.Records), settledCount(was.Online, ns.Online)
	}
	held, self, err := heldSlotMap(ctx, c)
	var old *errOldImage
	switch {
	case errors.As(err, &old):
		p.problem = fmt.Sprintf("pod %s runs a node image that does not know slot maps (%v): "+
			"a PushNode of more than one pod needs an image that does", ep.Pod, old.err)
		return notReady(p.problem)
	case err != nil:
		return notReady(fmt.Sprintf("cannot read its slot map: %v", err))
	case self != i:
		// Both would take themselves for the home of the same slots.
		p.problem = fmt.Sprintf("pod %s runs as ordinal %d, not %d: its --ordinal or pod name is wrong", ep.Pod, self, i)
		return notReady(p.problem)
	}
	p.held = held.Epoch()
	switch {
	case held.Equal(m):
	case !moving.IsZero() && held.Equal(moving):
		p.st.MapEpoch = int64(held.Epoch())
		p.st.Slots, p.st.SlotCount, p.st.Share = moving.Ranges(i), int32(moving.SlotCount(i)), share(moving.SlotCount(i))
		if !ns.Ready {
			return notReady("the node says it is not ready")
		}
		p.st.Ready = true
		return p
	case !held.IsZero() && held.Epoch() >= m.Epoch():
		p.newer = true
		if len(slotmap.Diff(held, m)) != 0 {
			p.st.MapEpoch = int64(held.Epoch())
			return notReady(fmt.Sprintf("it holds slot map epoch %d, which gives slots to other pods than epoch %d; a new epoch is handed out", held.Epoch(), m.Epoch()))
		}
		// The same slots with another epoch or other peer addresses (a
		// pod back on another IP): it still serves its slots, so it is
		// not counted down for the moment until the next epoch reaches it.
	default:
		if _, err := c.PutSlotMap(ctx, m); err != nil {
			var se *api.StatusError
			// 400: the map is wrong; 409 with the epoch checked just
			// before: the node takes no map (started without --peer-addr).
			if errors.As(err, &se) && (se.Code == http.StatusBadRequest || se.Code == http.StatusConflict) {
				p.problem = fmt.Sprintf("pod %s refused slot map epoch %d: %s", ep.Pod, m.Epoch(), se.Message)
				return notReady(p.problem)
			}
			return notReady(fmt.Sprintf("handing it slot map epoch %d failed: %v", m.Epoch(), err))
		}
		logf.FromContext(ctx).Info("handed the slot map to a pod", "pod", ep.Pod, "epoch", m.Epoch(), "slots", m.Ranges(i), "previous", held.Epoch())
		// A sharded pod without a map is not ready; with it, it may be
		// now, and counting it so spares its messages a round.
		if again, err := c.Status(ctx); err == nil {
			ns = again
		}
	}
	p.st.MapEpoch = int64(m.Epoch())
	if p.newer {
		p.st.MapEpoch = int64(held.Epoch())
	}
	if !ns.Ready {
		why := "the node says it is not ready"
		if ns.StoreError != "" {
			why += ": " + ns.StoreError
		}
		return notReady(why)
	}
	p.st.Ready = true
	return p
}

// errOldImage says a node does not serve slot maps at all.
type errOldImage struct{ err error }

func (e *errOldImage) Error() string { return e.err.Error() }

// heldSlotMap reads the map a pod holds (the zero Map when it has none)
// and the ordinal the pod takes itself for.
func heldSlotMap(ctx context.Context, c *api.Client) (slotmap.Map, int, error) {
	sm, err := c.SlotMap(ctx)
	var none *api.NoSlotMapError
	if errors.As(err, &none) {
		if none.Self < 0 {
			// A 404 that does not name the pod's ordinal is a router
			// without the path: an image from before sharding.
			return slotmap.Map{}, 0, &errOldImage{err}
		}
		return slotmap.Map{}, none.Self, nil
	}
	if err != nil {
		return slotmap.Map{}, 0, err
	}
	m, err := api.MapOf(sm)
	if err != nil {
		return slotmap.Map{}, 0, fmt.Errorf("the pod holds a slot map the operator cannot read: %w", err)
	}
	return m, sm.Self, nil
}

// groupedShown is how many pods' own words a grouped problem quotes.
const groupedShown = 3

// appendGrouped adds one problem of reason for all msgs (one per pod):
// the first few in full and how many more.
func appendGrouped(problems []problem, reason string, msgs []string) []problem {
	switch n := len(msgs); {
	case n == 0:
		return problems
	case n <= groupedShown:
		return append(problems, problem{reason, strings.Join(msgs, "; ")})
	default:
		return append(problems, problem{reason, fmt.Sprintf("%d pods: %s; and %d more", n, strings.Join(msgs[:groupedShown], "; "), n-groupedShown)})
	}
}
