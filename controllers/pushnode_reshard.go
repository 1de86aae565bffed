package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// ConditionResharding says whether slots are moving between the pods of
// a PushNode after its replicas changed.
const ConditionResharding = "Resharding"

// Reasons of the Resharding condition and events.
const (
	ReasonReshardMoving    = "Moving"
	ReasonReshardPaused    = "Paused"
	ReasonReshardComplete  = "Complete"
	ReasonNotResharding    = "NotResharding"
	EventReshardingStarted = "ReshardingStarted"
	EventReshardComplete   = "ReshardingComplete"
)

// Timings of the resharding loop: a running move is looked at about once
// a second (its handoff takes milliseconds, its streaming seconds); a
// paused one as often as a pod that is down.
const (
	reshardPoll       = time.Second
	reshardPausedPoll = ShardRecheck
	reshardMaxBackoff = time.Minute
)

// nodeMoveTimeout bounds one call about a move: the source answers from
// memory, the move itself runs in the background.
const nodeMoveTimeout = 10 * time.Second

// reshardOutcome is what one look at a resharding asks of the reconcile.
type reshardOutcome struct {
	// requeue is when to look again; 0 leaves it to the other rules.
	requeue time.Duration
	// moving is the map a running move installs: its source and target
	// may hold it before the other pods.
	moving slotmap.Map
	// events go out once the status that tells of them is written.
	events []reshardEvent
}

type reshardEvent struct{ reason, message string }

// after asks for another look within d: a new map reaches the pods in
// this same reconcile, and the next step waits for them to report it.
func (o *reshardOutcome) after(d time.Duration) {
	if o.requeue == 0 || d < o.requeue {
		o.requeue = d
	}
}

// recordedMap is the map in st with peers for its pods, and the number
// of pods it names; the zero Map and one pod when there is none.
func recordedMap(st *ddpushv1.PushNodeStatus, peer func(int) string) (slotmap.Map, int, error) {
	sm := st.SlotMap
	if sm == nil {
		return slotmap.Map{}, 1, nil
	}
	pods := int(sm.Pods)
	for _, r := range sm.Ranges {
		pods = max(pods, int(r.Ordinal)+1)
	}
	m, err := slotmap.New(uint64(sm.Epoch), specRanges(sm), peersOf(pods, peer))
	if err != nil {
		return slotmap.Map{}, 0, fmt.Errorf("the recorded slot map (epoch %d) is not valid: %w", sm.Epoch, err)
	}
	return m, pods, nil
}

// recordMap writes m as the map every pod must hold.
func recordMap(st *ddpushv1.PushNodeStatus, m slotmap.Map) {
	st.SlotMap = slotMapStatus(m)
	st.SlotMap.Pods = int32(len(m.Peers()))
}

// reconcileResharding drives a change of replicas one step: it starts
// it, follows the running move, and takes the next step once every pod
// holds the recorded map and serves. Each step is recorded in st before
// the pods are asked to take it, so that a restarted operator resumes
// the same step. The slot map it records is what reconcileShards then
// hands to every pod.
func (r *PushNodeReconciler) reconcileResharding(ctx context.Context, pn *ddpushv1.PushNode, st *ddpushv1.PushNodeStatus, sts *appsv1.StatefulSet) (reshardOutcome, []problem) {
	log := logf.FromContext(ctx)
	var out reshardOutcome
	want := replicasOf(pn)
	peer := func(i int) string { return r.Locator.PeerAddr(pn, i) }

	if st.SlotMap == nil && st.Resharding == nil && (want == 1 || pn.Status.ObservedGeneration == 0) {
		if want > 1 {
			// A new PushNode of several pods: the even split, no move.
			m, err := slotmap.EvenSplit(want, firstEpoch, peersOf(want, peer))
			if err != nil {
				return out, []problem{{"SlotMapInvalid", err.Error()}}
			}
			recordMap(st, m)
		}
		setReshardingCondition(pn, st, notResharding(want))
		return out, nil
	}

	cur, curPods, err := recordedMap(st, peer)
	if err != nil {
		return out, []problem{{"SlotMapInvalid", err.Error()}}
	}
	pods := max(curPods, want)
	step, err := planReshard(cur, curPods, want, pods, peer)
	if err != nil {
		return out, []problem{{"ReshardPlanFailed", err.Error()}}
	}
	rs := st.Resharding
	if rs == nil {
		if step.Kind == stepNone {
			setReshardingCondition(pn, st, notResharding(curPods))
			return out, nil
		}
		now := metav1.Now()
		rs = &ddpushv1.ReshardingStatus{FromReplicas: int32(curPods), ToReplicas: int32(want), SlotsTotal: int32(step.Remaining), StartedAt: &now}
		st.Resharding = rs
		log.Info("resharding started", "from", curPods, "to", want, "slots", step.Remaining, "map", cur.String())
		out.events = append(out.events, reshardEvent{EventReshardingStarted,
			fmt.Sprintf("replicas %d -> %d: %d of %d slots move, %d at a time", curPods, want, step.Remaining, slotmap.NumSlots, reshardBatchSlots)})
	}
	if rs.ToReplicas != int32(want) && rs.Move == nil {
		// Replicas changed again: the plan goes to the new number from
		// where the slots are now.
		log.Info("resharding retargeted", "from", rs.ToReplicas, "to", want)
		rs.ToReplicas = int32(want)
		rs.SlotsTotal = rs.SlotsMoved + int32(step.Remaining)
	}

	if rs.Move != nil {
		moving, detail, paused, wait := r.followMove(ctx, pn, st, cur)
		out.moving = moving
		out.after(wait)
		setReshardingCondition(pn, st, reshardingCondition(pn, rs, detail, paused))
		return out, nil
	}

	// A move needs every pod the map names; the map without the drained
	// pods only those that stay, so that pods that never came up can be
	// given up by scaling back.
	gate := curPods
	if step.Kind == stepFinal {
		gate = want
	}
	if why := reshardBlocked(pn, sts, cur, gate); why != "" {
		out.after(reshardPausedPoll)
		setReshardingCondition(pn, st, reshardingCondition(pn, rs, why, true))
		return out, nil
	}

	switch step.Kind {
	case stepNone:
		took := time.Duration(0)
		if rs.StartedAt != nil {
			took = time.Since(rs.StartedAt.Time).Round(time.Second)
		}
		msg := fmt.Sprintf("moved %d slots from %d to %d pods in %s", rs.SlotsMoved, rs.FromReplicas, rs.ToReplicas, took)
		log.Info("resharding complete", "slots", rs.SlotsMoved, "from", rs.FromReplicas, "to", rs.ToReplicas, "took", took)
		out.events = append(out.events, reshardEvent{EventReshardComplete, msg})
		st.Resharding = nil
		setReshardingCondition(pn, st, metav1.Condition{Type: ConditionResharding, Status: metav1.ConditionFalse, Reason: ReasonReshardComplete, Message: msg})
		// The StatefulSet shrinks to the pods the map names now.
		out.after(reshardPoll)
		return out, nil
	case stepInstall, stepFinal:
		log.Info("resharding: new slot map for every pod", "step", step.Kind.String(), "map", step.Map.String())
		recordMap(st, step.Map)
		out.after(reshardPoll)
		detail := fmt.Sprintf("handing every pod slot map epoch %d, which names %d pods", step.Map.Epoch(), len(step.Map.Peers()))
		setReshardingCondition(pn, st, reshardingCondition(pn, rs, detail, false))
		return out, nil
	}
	rs.Move = &ddpushv1.SlotMoveStatus{
		ID: step.ID, Epoch: int64(step.Map.Epoch()), Source: int32(step.Move.Old), Target: int32(step.Move.New),
		Slots: slotmap.Range{From: step.Move.From, To: step.Move.To}.String(), StartedAt: metav1.Now(),
	}
	log.Info("resharding: next batch", "id", step.ID, "slots", rs.Move.Slots, "source", step.Move.Old, "target", step.Move.New)
	// The source is asked only once this is written: a restart in
	// between asks it with the same id.
	out.after(time.Millisecond)
	setReshardingCondition(pn, st, reshardingCondition(pn, rs, "", false))
	return out, nil
}

// reshardBlocked says why the next step must wait, or "" when it may go.
// Every pod named by the recorded map must hold it and serve, since a
// move needs its source, its target and every front that relays to them.
func reshardBlocked(pn *ddpushv1.PushNode, sts *appsv1.StatefulSet, cur slotmap.Map, curPods int) string {
	if sts == nil {
		return "the StatefulSet does not exist yet"
	}
	if cur.IsZero() {
		// The pods of a StatefulSet made for one pod start in order, and
		// its rolling update restarts pod 0 with its peer link only once
		// the new pods are ready, which they are once they hold a map:
		// the first map goes out at once. Pod 0 refuses it until it
		// restarted, and no slot moves until it holds it.
		return ""
	}
	seen := map[int32]ddpushv1.PushNodePodStatus{}
	for _, p := range pn.Status.Pods {
		seen[p.Ordinal] = p
	}
	for i := range curPods {
		p, ok := seen[int32(i)]
		switch {
		case !ok:
			return fmt.Sprintf("pod %s has not reported yet", PodName(pn, i))
		case !p.Ready:
			why := p.Problem
			if why == "" {
				why = "it is not ready"
			}
			return fmt.Sprintf("pod %s is not ready: %s", p.Name, why)
		case p.MapEpoch != int64(cur.Epoch()):
			return fmt.Sprintf("pod %s holds slot map epoch %d, not %d yet", p.Name, p.MapEpoch, cur.Epoch())
		}
	}
	return ""
}

// followMove asks the source of the recorded move to start it, or reads
// how far it is, and adopts its map once it is done. It returns the map
// the move installs, what the condition tells, whether it is stuck, and
// when to look again.
func (r *PushNodeReconciler) followMove(ctx context.Context, pn *ddpushv1.PushNode, st *ddpushv1.PushNodeStatus, cur slotmap.Map) (slotmap.Map, string, bool, time.Duration) {
	log := logf.FromContext(ctx)
	rs := st.Resharding
	mv := rs.Move
	from, to, err := parseSlotRange(mv.Slots)
	var next slotmap.Map
	if err == nil {
		if uint64(mv.Epoch) != cur.Epoch()+1 {
			err = fmt.Errorf("it installs epoch %d, and the recorded map is epoch %d", mv.Epoch, cur.Epoch())
		} else {
			next, err = withMove(cur, slotmap.Move{From: from, To: to, Old: int(mv.Source), New: int(mv.Target)}, uint64(mv.Epoch))
		}
	}
	if err != nil {
		// Nothing was adopted from it: the plan starts again from the
		// recorded map.
		log.Error(err, "dropping a recorded move that does not fit the recorded map", "id", mv.ID)
		rs.Move = nil
		return slotmap.Map{}, fmt.Sprintf("dropped move %s: %v", mv.ID, err), false, reshardPoll
	}
	pause := func(why string) (slotmap.Map, string, bool, time.Duration) {
		return next, why, true, reshardPausedPoll
	}
	token, err := ReadToken(ctx, r.Client, pn)
	if err != nil {
		return pause(err.Error())
	}
	src, err := r.Locator.Pod(ctx, pn, int(mv.Source))
	if err != nil {
		return pause(fmt.Sprintf("the source pod: %v", err))
	}
	c := newNodeClient(src.URL, token, nodeMoveTimeout)

	var got api.Move
	start := mv.Phase == "" || mv.Phase == api.MoveFailed
	if !start {
		got, err = c.GetMove(ctx, mv.ID)
		var se *api.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			// The source lost it (a new volume, say): the same id starts
			// it again.
			log.Info("the source does not know the move; asking again", "id", mv.ID, "pod", src.Pod)
			start = true
		} else if err != nil {
			return pause(fmt.Sprintf("cannot read move %s at pod %s: %v", mv.ID, src.Pod, err))
		}
		if got.Phase == api.MoveHandoff {
			// A source settling a handoff asks the target whether it
			// committed; a target back on another address (pod IPs)
			// is found only if the source is told it.
			if tgt, terr := r.Locator.Pod(ctx, pn, int(mv.Target)); terr == nil {
				if again, serr := c.StartMove(ctx, api.MoveRequest{ID: mv.ID, Map: api.FromMap(next), Target: int(mv.Target), TargetURL: tgt.URL}); serr == nil {
					got = again
				}
			}
		}
	}
	if start {
		tgt, err := r.Locator.Pod(ctx, pn, int(mv.Target))
		if err != nil {
			return pause(fmt.Sprintf("the target pod: %v", err))
		}
		mv.Attempts++
		got, err = c.StartMove(ctx, api.MoveRequest{ID: mv.ID, Map: api.FromMap(next), Target: int(mv.Target), TargetURL: tgt.URL})
		if err != nil {
			mv.Phase, mv.Error = api.MoveFailed, err.Error()
			return next, fmt.Sprintf("pod %s did not start move %s: %v", src.Pod, mv.ID, err), true, moveBackoff(mv.Attempts)
		}
		log.Info("asked the source to move slots", "id", mv.ID, "pod", src.Pod, "slots", mv.Slots, "target", tgt.Pod, "attempt", mv.Attempts)
	}
	mv.Phase, mv.Error = got.Phase, got.Error
	switch got.Phase {
	case api.MoveDone:
		log.Info("moved slots", "id", mv.ID, "slots", mv.Slots, "source", mv.Source, "target", mv.Target,
			"records", got.Records, "pushes", got.Pushes, "holdMillis", got.HoldMillis, "took", time.Since(mv.StartedAt.Time).Round(time.Millisecond))
		n := int32(to - from + 1)
		recordMap(st, next)
		rs.SlotsMoved += n
		rs.Move = nil
		return slotmap.Map{}, fmt.Sprintf("moved slots %s from pod %s to pod %s; handing every pod slot map epoch %d",
			mv.Slots, PodName(pn, int(mv.Source)), PodName(pn, int(mv.Target)), next.Epoch()), false, reshardPoll
	case api.MoveFailed:
		log.Info("a move failed; it is asked again", "id", mv.ID, "error", got.Error, "attempts", mv.Attempts)
		return next, fmt.Sprintf("move %s failed at pod %s (attempt %d, asked again): %s", mv.ID, src.Pod, mv.Attempts, got.Error), true, moveBackoff(mv.Attempts)
	}
	return next, "", false, reshardPoll
}

// moveBackoff is the wait before a failed move is asked again: doubling
// from a second, at most reshardMaxBackoff.
func moveBackoff(attempts int32) time.Duration {
	d := time.Second
	for i := int32(1); i < attempts && d < reshardMaxBackoff; i++ {
		d *= 2
	}
	return min(d, reshardMaxBackoff)
}

// notResharding is the Resharding condition of a PushNode whose slots
// are where its replicas want them.
func notResharding(pods int) metav1.Condition {
	return metav1.Condition{Type: ConditionResharding, Status: metav1.ConditionFalse, Reason: ReasonNotResharding,
		Message: fmt.Sprintf("the slots are spread over %d pods as replicas asks", pods)}
}

// setReshardingCondition sets c, except that a Complete condition stays
// until the next resharding begins: it tells how the last one went.
func setReshardingCondition(pn *ddpushv1.PushNode, st *ddpushv1.PushNodeStatus, c metav1.Condition) {
	if c.Reason == ReasonNotResharding {
		if was := meta.FindStatusCondition(st.Conditions, ConditionResharding); was != nil && was.Reason == ReasonReshardComplete {
			return
		}
	}
	c.ObservedGeneration = pn.Generation
	meta.SetStatusCondition(&st.Conditions, c)
}

// reshardingCondition tells how far a resharding is: "moved X of Y
// slots from N to M pods; moving slots a-b from pod s to pod t", with
// detail instead of the move when given, and reason Paused when paused.
func reshardingCondition(pn *ddpushv1.PushNode, rs *ddpushv1.ReshardingStatus, detail string, paused bool) metav1.Condition {
	c := metav1.Condition{Type: ConditionResharding, Status: metav1.ConditionTrue, Reason: ReasonReshardMoving}
	msg := fmt.Sprintf("moved %d of %d slots from %d to %d pods", rs.SlotsMoved, rs.SlotsTotal, rs.FromReplicas, rs.ToReplicas)
	if mv := rs.Move; mv != nil {
		msg += fmt.Sprintf("; moving slots %s from pod %s to pod %s", mv.Slots, PodName(pn, int(mv.Source)), PodName(pn, int(mv.Target)))
		if mv.Phase != "" && mv.Phase != api.MoveFailed {
			msg += " (" + mv.Phase + ")"
		}
	}
	if paused {
		c.Reason = ReasonReshardPaused
		msg += "; paused"
		if detail != "" {
			msg += ": " + detail
		}
	} else if detail != "" {
		msg += "; " + detail
	}
	c.Message = truncateMessage(msg)
	return c
}

// truncateMessage keeps a condition message within what the apiserver
// takes (32768 bytes), a node's error quoted in it included.
func truncateMessage(s string) string {
	const maxLen = 32 * 1024
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen-3] + "..."
}
