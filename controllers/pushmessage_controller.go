package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers/builders"
	"github.com/ddpush/ddpush-operator/node/api"
)

// Field indexes of PushMessages.
const (
	IndexPushNode = "spec.pushNodeName"
	IndexUID      = "metadata.uid"
)

// Condition types of a PushMessage.
const (
	ConditionDelivered     = "Delivered"
	ConditionNodeAvailable = "NodeAvailable"
)

// PushMessageReconciler submits each PushMessage to its node exactly once
// (its UID is the idempotency key) and moves its phase as the node's
// delivery events come in.
type PushMessageReconciler struct {
	Client    client.Client
	Recorder  events.EventRecorder
	Locator   NodeLocator
	Followers *Followers
	// Workers is how many messages are reconciled at once (0: the default).
	Workers int

	gateOnce  sync.Once
	nodeGates *nodeGate
	// handedOver holds when each message not yet written was first handed
	// to an online phone (see deferFirstWrite).
	handedOver sync.Map
	// writtenFrom holds, for each message whose status this process
	// wrote, the resourceVersion that write replaced, until the cache
	// shows another (see cacheBehind).
	writtenFrom sync.Map
	// Now is the clock (tests may move it).
	Now func() time.Time
	// PushNodeDeletedGrace is how long a submitted message outlives its
	// PushNode before it fails (0: DefaultPushNodeDeletedGrace).
	PushNodeDeletedGrace time.Duration
}

// PushMessages are read, their status written, and finished ones deleted
// after their TTL.
// +kubebuilder:rbac:groups=ddpush.dev,resources=pushmessages,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups=ddpush.dev,resources=pushmessages/status,verbs=update
// +kubebuilder:rbac:groups=ddpush.dev,resources=pushnodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch

func (r *PushMessageReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile moves one PushMessage along.
func (r *PushMessageReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var pm ddpushv1.PushMessage
	if err := r.Client.Get(ctx, req.NamespacedName, &pm); err != nil {
		if apierrors.IsNotFound(err) {
			r.handedOver.Delete(req.NamespacedName)
			r.writtenFrom.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.cacheBehind(&pm) {
		// Our own last write has not reached the cache yet: anything
		// decided on this copy would be written over a stale version
		// and refused (a conflict, an apiserver request for nothing).
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	if !pm.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	node := types.NamespacedName{Namespace: pm.Namespace, Name: pm.Spec.PushNodeName}
	if pm.Status.Phase.Finished() {
		// A finished message is never evaluated again; only its TTL runs.
		// One finished before the Finished condition existed gets it, so
		// that a `kubectl wait` on it ends too.
		var pn *ddpushv1.PushNode
		if got := (&ddpushv1.PushNode{}); r.Client.Get(ctx, node, got) == nil {
			pn = got
		}
		r.Followers.Forget(node, PushOrdinal(pn, &pm), string(pm.UID))
		if needsFinishedCondition(&pm) {
			setFinishedCondition(&pm)
			if requeue, err := r.writeStatus(ctx, &pm); requeue || err != nil {
				return afterWrite(requeue, err)
			}
		}
		return r.expireFinished(ctx, &pm)
	}
	orig := pm.Status.DeepCopy()
	r.resumeHandOver(&pm)
	res, err := r.advance(ctx, &pm, node)
	if err == nil && r.deferFirstWrite(&pm, orig) {
		return ctrl.Result{RequeueAfter: firstWriteGrace}, nil
	}
	setFinishedCondition(&pm)
	if !equality.Semantic.DeepEqual(orig, &pm.Status) {
		if requeue, uerr := r.writeStatus(ctx, &pm); requeue || uerr != nil {
			return afterWrite(requeue, uerr)
		}
		r.announce(&pm, orig.Phase)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if pm.Status.Phase.Finished() {
		return r.expireFinished(ctx, &pm)
	}
	// Wake at the deadline even if nothing else happens.
	if d := r.deadline(&pm); !d.IsZero() {
		left := d.Sub(r.now())
		if res.RequeueAfter == 0 || left < res.RequeueAfter {
			res.RequeueAfter = max(left, time.Second)
		}
	}
	return res, nil
}

// backoff grows with failed attempts: 1s, 2s, 4s … up to a minute.
func backoff(attempts int32) time.Duration {
	d := time.Second << min(attempts, 6)
	return min(d, time.Minute)
}

func (r *PushMessageReconciler) advance(ctx context.Context, pm *ddpushv1.PushMessage, node types.NamespacedName) (ctrl.Result, error) {
	st := &pm.Status
	if st.Phase == "" {
		st.Phase = ddpushv1.PhasePending
		st.Reason, st.Message = "Created", "waiting to be submitted to the node"
	}
	var pn ddpushv1.PushNode
	found := true
	if err := r.Client.Get(ctx, node, &pn); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("read PushNode %s: %w", node.Name, err)
		}
		found = false
	}

	// What the node already said comes before any verdict of the
	// operator's own: an ack the follower has seen makes the message
	// Delivered even when the operator gets to it past its deadline.
	if st.PushID != 0 {
		var holder *ddpushv1.PushNode
		if found {
			holder = &pn
		}
		if f, known, _, _ := r.Followers.Lookup(node, PushOrdinal(holder, pm), string(pm.UID)); known {
			r.applyFate(pm, holder, f)
		}
		if st.Phase.Finished() {
			return ctrl.Result{}, nil
		}
	}
	if r.pastDeadline(pm) {
		pnp := &pn
		if !found {
			pnp = nil
		}
		res, _ := r.failPastDeadline(ctx, pm, pnp)
		return res, nil
	}

	if !found {
		return r.pushNodeMissing(pm, node), nil
	}
	st.PushNodeMissingSince = nil
	if reason, msg := homeUnavailable(&pn, pm); reason != "" {
		// Nothing to try until the node is back: no retry ticks and no
		// status write per tick (a node outage would otherwise rewrite
		// every open message over and over). The PushNode watch wakes the
		// message when the node's Available condition, or the readiness
		// of one of its pods, changes.
		r.nodeUnavailable(pm, reason, msg)
		return ctrl.Result{}, nil
	}
	nodeAvailableAgain(pm)
	r.Followers.Ensure(node, int(builders.Pods(&pn)))

	if st.PushID == 0 {
		return r.submit(ctx, pm, &pn)
	}
	return r.follow(ctx, pm, &pn, node)
}

// nodeAvailableAgain turns a NodeAvailable condition that says False to
// True. A message whose node was always available has no such condition:
// one that says "available" on every message tells a person nothing the
// phase does not, and costs bytes in etcd and in every watch event.
func nodeAvailableAgain(pm *ddpushv1.PushMessage) {
	if meta.FindStatusCondition(pm.Status.Conditions, ConditionNodeAvailable) == nil {
		return
	}
	meta.SetStatusCondition(&pm.Status.Conditions, metav1.Condition{Type: ConditionNodeAvailable, Status: metav1.ConditionTrue,
		Reason: "NodeAvailable", Message: "the PushNode is available", ObservedGeneration: pm.Generation})
}

func (r *PushMessageReconciler) nodeUnavailable(pm *ddpushv1.PushMessage, reason, msg string) {
	st := &pm.Status
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: ConditionNodeAvailable, Status: metav1.ConditionFalse,
		Reason: reason, Message: msg, ObservedGeneration: pm.Generation})
	if st.PushID == 0 {
		st.Reason, st.Message = reason, msg
	}
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// follow applies what the event stream says, looking the push up once
// when the stream may have missed something.
func (r *PushMessageReconciler) follow(ctx context.Context, pm *ddpushv1.PushMessage, pn *ddpushv1.PushNode, node types.NamespacedName) (ctrl.Result, error) {
	uid := string(pm.UID)
	f, known, resync, following := r.Followers.Lookup(node, PushOrdinal(pn, pm), uid)
	if known {
		r.applyFate(pm, pn, f)
	}
	if !following || !resync || pm.Status.Phase.Finished() {
		return ctrl.Result{}, nil
	}
	p, err := r.lookupPush(ctx, pm, pn)
	if err != nil {
		var se *api.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			c, _, cerr := r.nodeClient(ctx, pm, pn)
			if cerr != nil {
				return ctrl.Result{RequeueAfter: backoff(3)}, nil
			}
			r.pushNotFound(ctx, c, pm)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{RequeueAfter: backoff(3)}, nil
	}
	r.Followers.Synced(node, PushOrdinal(pn, pm), uid)
	r.applyPush(pm, pn, &p)
	return ctrl.Result{}, nil
}

// phaseOf maps a node fate to a phase.
func phaseOf(fate string) ddpushv1.PushMessagePhase {
	switch fate {
	case api.FateQueued:
		return ddpushv1.PhaseQueued
	case api.FateSent:
		return ddpushv1.PhaseSent
	case api.FateAcknowledged:
		return ddpushv1.PhaseDelivered
	case api.FateSuperseded:
		return ddpushv1.PhaseSuperseded
	case api.FateExpired:
		return ddpushv1.PhaseExpired
	}
	return ""
}

func phaseRank(p ddpushv1.PushMessagePhase) int {
	switch p {
	case ddpushv1.PhasePending, "":
		return 0
	case ddpushv1.PhaseQueued:
		return 1
	case ddpushv1.PhaseSent:
		return 2
	}
	return 3
}

// apply moves the phase forward to what the node says; it never moves back.
func (r *PushMessageReconciler) apply(pm *ddpushv1.PushMessage, fate string, sentAt, finishedAt *time.Time) {
	st := &pm.Status
	next := phaseOf(fate)
	if sentAt != nil && st.SentAt == nil {
		t := metav1.NewTime(*sentAt)
		st.SentAt = &t
	}
	if next == "" || phaseRank(next) <= phaseRank(st.Phase) {
		return
	}
	if phaseRank(next) == phaseRank(ddpushv1.PhaseDelivered) && r.finishedLate(pm, finishedAt) {
		// The deadline came first; the node finished with the push later.
		r.finishLate(pm, next, finishedAt)
		return
	}
	switch next {
	case ddpushv1.PhaseQueued:
		st.Phase, st.Reason, st.Message = next, "ClientOffline", "accepted; the client is offline and gets it on its next heartbeat"
	case ddpushv1.PhaseSent:
		st.Phase, st.Reason, st.Message = next, "HandedToClient", "sent to the online client; waiting for its ack"
	case ddpushv1.PhaseDelivered:
		if finishedAt != nil {
			t := metav1.NewTime(*finishedAt)
			st.DeliveredAt = &t
		}
		r.finish(pm, next, "Acknowledged", "the client acknowledged the message")
		if finishedAt != nil {
			t := metav1.NewTime(*finishedAt)
			st.CompletionTime = &t
		}
	case ddpushv1.PhaseSuperseded:
		r.finish(pm, next, "Superseded", "a newer push of the same kind to this client replaced it before the ack (DDPush keeps only the latest)")
	case ddpushv1.PhaseExpired:
		r.finish(pm, next, "RecordExpired", "the client's record expired on the node before it acknowledged the message")
	}
}

func (r *PushMessageReconciler) finish(pm *ddpushv1.PushMessage, phase ddpushv1.PushMessagePhase, reason, msg string) {
	st := &pm.Status
	now := metav1.NewTime(r.now())
	st.Phase, st.Reason, st.Message = phase, reason, msg
	if st.CompletionTime == nil {
		st.CompletionTime = &now
	}
	status := metav1.ConditionFalse
	if phase == ddpushv1.PhaseDelivered {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: ConditionDelivered, Status: status,
		Reason: reason, Message: msg, ObservedGeneration: pm.Generation})
}

// announce records a Warning Event when a message ends Failed or Expired:
// that is when a person has something to look at. Other phase changes are
// in the status alone; an Event for each cost as many apiserver writes as
// the status itself, for nobody.
func (r *PushMessageReconciler) announce(pm *ddpushv1.PushMessage, from ddpushv1.PushMessagePhase) {
	if r.Recorder == nil || pm.Status.Phase == from {
		return
	}
	if pm.Status.Phase != ddpushv1.PhaseFailed && pm.Status.Phase != ddpushv1.PhaseExpired {
		return
	}
	r.Recorder.Eventf(pm, nil, corev1.EventTypeWarning, string(pm.Status.Phase), "Deliver", "%s", pm.Status.Message)
}

// expireFinished deletes a finished message once its TTL has passed.
func (r *PushMessageReconciler) expireFinished(ctx context.Context, pm *ddpushv1.PushMessage) (ctrl.Result, error) {
	if pm.Spec.TTLSecondsAfterFinished == nil || pm.Status.CompletionTime == nil {
		return ctrl.Result{}, nil
	}
	at := pm.Status.CompletionTime.Add(time.Duration(*pm.Spec.TTLSecondsAfterFinished) * time.Second)
	if left := at.Sub(r.now()); left > 0 {
		return ctrl.Result{RequeueAfter: left}, nil
	}
	logf.FromContext(ctx).Info("deleting finished PushMessage past its TTL", "phase", pm.Status.Phase)
	if err := r.Client.Delete(ctx, pm, client.Preconditions{UID: &pm.UID}); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// SetupIndexes registers the field indexes the controllers use.
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &ddpushv1.PushMessage{}, IndexPushNode, func(o client.Object) []string {
		return []string{o.(*ddpushv1.PushMessage).Spec.PushNodeName}
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &ddpushv1.PushMessage{}, IndexUID, func(o client.Object) []string {
		return []string{string(o.GetUID())}
	})
}

// SetupWithManager registers the reconciler. It wakes on its own changes,
// on its PushNode's changes (a node that becomes available), and on the
// followers' events.
func (r *PushMessageReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		// The spec is immutable and the status is ours: only creation
		// matters, or every status write would reconcile again.
		For(&ddpushv1.PushMessage{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&ddpushv1.PushNode{}, handler.EnqueueRequestsFromMapFunc(r.messagesOfNode),
			builder.WithPredicates(availabilityChanged())).
		WatchesRawSource(source.Channel(r.Followers.Events(), &handler.TypedEnqueueRequestForObject[*ddpushv1.PushMessage]{})).
		Named("pushmessage").
		WithOptions(controller.Options{MaxConcurrentReconciles: cmp.Or(r.Workers, DefaultPushMessageWorkers)}).
		Complete(r)
}

// availabilityChanged passes PushNode events that can unblock messages:
// creation, deletion, a change of its Available condition, and a pod of
// a sharded PushNode that becomes ready or not (or a new slot map).
func availabilityChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*ddpushv1.PushNode)
			n, ok2 := e.ObjectNew.(*ddpushv1.PushNode)
			if !ok1 || !ok2 {
				return true
			}
			return meta.IsStatusConditionTrue(o.Status.Conditions, ConditionAvailable) !=
				meta.IsStatusConditionTrue(n.Status.Conditions, ConditionAvailable) ||
				readyPods(o) != readyPods(n) || slotMapEpoch(o) != slotMapEpoch(n)
		},
	}
}

// readyPods lists the ready pods of a sharded PushNode, for comparing.
func readyPods(pn *ddpushv1.PushNode) string {
	var b strings.Builder
	for _, p := range pn.Status.Pods {
		if p.Ready {
			fmt.Fprintf(&b, "%d,", p.Ordinal)
		}
	}
	return b.String()
}

func slotMapEpoch(pn *ddpushv1.PushNode) int64 {
	if pn.Status.SlotMap == nil {
		return 0
	}
	return pn.Status.SlotMap.Epoch
}

// homeUnavailable says why the pod a message goes to cannot take it now,
// or "" when it can. A PushNode of one pod must be Available. In a sharded
// one only the message's home counts, as the operator last saw it: the
// other pods being down changes nothing for it, and sending it to one of
// them would only be refused (the home is where it must be committed).
func homeUnavailable(pn *ddpushv1.PushNode, pm *ddpushv1.PushMessage) (reason, msg string) {
	if !builders.Sharded(pn) {
		if !meta.IsStatusConditionTrue(pn.Status.Conditions, ConditionAvailable) {
			return "NodeNotReady", fmt.Sprintf("PushNode %q is not available", pn.Name)
		}
		return "", ""
	}
	o := PushOrdinal(pn, pm)
	if pm.Status.PushID == 0 {
		var err error
		if o, err = HomeOrdinal(pn, targetOf(pm)); err != nil {
			return "NoSlotMap", err.Error()
		}
	}
	for _, p := range pn.Status.Pods {
		if int(p.Ordinal) != o {
			continue
		}
		if !p.Ready {
			return "HomePodNotReady", fmt.Sprintf("pod %s, the home of uuid %s (slots %s), is not ready: %s; the message waits for it",
				p.Name, targetOf(pm), p.Slots, p.Problem)
		}
		return "", ""
	}
	return "HomePodNotReady", fmt.Sprintf("pod %s, the home of uuid %s, has not been seen by the operator yet", PodName(pn, o), targetOf(pm))
}

func (r *PushMessageReconciler) messagesOfNode(ctx context.Context, o client.Object) []reconcile.Request {
	var list ddpushv1.PushMessageList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{IndexPushNode: o.GetName()}); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if !list.Items[i].Status.Phase.Finished() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}
