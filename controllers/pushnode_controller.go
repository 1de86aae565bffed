// Package controllers holds the reconcilers of PushNode and PushMessage.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers/builders"
)

// StatusRefresh is how often a ready PushNode's record counts are re-read.
const StatusRefresh = 30 * time.Second

// DefaultConflictRetry is how often a PushNode blocked by an object it
// does not control looks again.
const DefaultConflictRetry = time.Minute

// PushNodeReconciler turns a PushNode into its ConfigMap, Secret,
// Services and StatefulSet, and reports their state.
type PushNodeReconciler struct {
	Client client.Client
	// APIReader reads from the API server, past the cache, which holds
	// only objects carrying the operator's label.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Builders  builders.Options
	Locator   NodeLocator
	Followers *Followers
	// ConflictRetry: see Options.
	ConflictRetry time.Duration
	// StatusRefresh: see Options.
	StatusRefresh time.Duration
}

func (r *PushNodeReconciler) statusRefresh() time.Duration {
	if r.StatusRefresh > 0 {
		return r.StatusRefresh
	}
	return StatusRefresh
}

func (r *PushNodeReconciler) conflictRetry() time.Duration {
	if r.ConflictRetry > 0 {
		return r.ConflictRetry
	}
	return DefaultConflictRetry
}

// The operator reads PushNodes and writes only their status.
// +kubebuilder:rbac:groups=ddpush.dev,resources=pushnodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=ddpush.dev,resources=pushnodes/status,verbs=update
// Owner references with blockOwnerDeletion need update on the owner's
// finalizers where the OwnerReferencesPermissionEnforcement admission
// plugin is on.
// +kubebuilder:rbac:groups=ddpush.dev,resources=pushnodes/finalizers,verbs=update
// Owned objects go with their PushNode through garbage collection: no
// delete, except the StatefulSet, replaced (orphaning its pods) when the
// volume size changes.
// +kubebuilder:rbac:groups="",resources=services;configmaps;secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// Data claims are read one by one from the API server and grown.
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one PushNode's objects to the desired state.
func (r *PushNodeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	var pn ddpushv1.PushNode
	if err := r.Client.Get(ctx, req.NamespacedName, &pn); err != nil {
		if apierrors.IsNotFound(err) {
			r.Followers.Stop(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !pn.DeletionTimestamp.IsZero() {
		// Owned objects go with it through their owner references; the
		// StatefulSet's claim retention policy decides about the data.
		r.Followers.Stop(req.NamespacedName)
		return ctrl.Result{}, nil
	}

	var problems []problem
	var applyErr error
	conflicted, waiting := false, false
	for _, b := range builders.For(&pn, r.Builders) {
		op, err := r.apply(ctx, &pn, b)
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			// Someone else wrote it meanwhile: start over from fresh reads.
			return ctrl.Result{Requeue: true}, nil
		}
		if conflict := (*conflictError)(nil); errors.As(err, &conflict) {
			// Later objects need this one (the StatefulSet mounts the
			// ConfigMap and the Secret): stop here, touch nothing.
			problems = append(problems, problem{ReasonResourceConflict, conflict.Error()})
			r.Recorder.Eventf(&pn, nil, corev1.EventTypeWarning, ReasonResourceConflict, "Apply", "%s", conflict.Error())
			conflicted = true
			break
		}
		if errors.Is(err, errBeingDeleted) {
			waiting = true
			break
		}
		if err != nil {
			obj := b.Object()
			applyErr = fmt.Errorf("apply %T %s: %w", obj, obj.GetName(), err)
			problems = append(problems, problem{"ApplyFailed", applyErr.Error()})
			break
		}
		if op != controllerutil.OperationResultNone {
			log.Info("applied", "object", b.Object().GetName(), "operation", op)
		}
	}

	if applyErr == nil {
		problems = append(problems, r.reconcileNetworkPolicy(ctx, &pn)...)
	}

	var sts appsv1.StatefulSet
	stsPtr := &sts
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: pn.Namespace, Name: builders.StatefulSetName(&pn)}, &sts); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		stsPtr = nil
	}
	problems = append(problems, r.reconcileStorage(ctx, &pn, stsPtr)...)

	st := pn.Status.DeepCopy()
	problems, reshard := r.fillStatus(ctx, &pn, st, stsPtr, problems)
	before := slices.Clone(pn.Status.Conditions)
	beforePods := slices.Clone(pn.Status.Pods)
	if !equality.Semantic.DeepEqual(&pn.Status, st) {
		pn.Status = *st
		if err := r.Client.Status().Update(ctx, &pn); err != nil {
			// No events: the transition they would tell of is not
			// recorded yet, and the retry would tell it a second time.
			if apierrors.IsConflict(err) {
				return ctrl.Result{Requeue: true}, nil
			}
			return ctrl.Result{}, fmt.Errorf("update status: %w", err)
		}
	}
	r.recordEvents(&pn, before, st.Conditions, problems)
	if r.Recorder != nil {
		for _, e := range reshard.events {
			r.Recorder.Eventf(&pn, nil, corev1.EventTypeNormal, e.reason, "Reshard", "%s", e.message)
		}
	}
	res, err := r.requeue(ctx, req, &pn, st, beforePods, applyErr, waiting, conflicted)
	if d := reshard.requeue; d > 0 && err == nil && (res.RequeueAfter == 0 || d < res.RequeueAfter) {
		res.RequeueAfter = d
	}
	return res, err
}

// requeue says when to look at a PushNode again, once its status is
// written.
func (r *PushNodeReconciler) requeue(_ context.Context, req ctrl.Request, pn *ddpushv1.PushNode, st *ddpushv1.PushNodeStatus, beforePods []ddpushv1.PushNodePodStatus, applyErr error, waiting, conflicted bool) (ctrl.Result, error) {
	if applyErr != nil {
		return ctrl.Result{}, applyErr
	}
	if waiting {
		return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
	}
	if conflicted {
		// The conflicting object is not watched (it is not ours): look
		// again later in case it was removed.
		return ctrl.Result{RequeueAfter: r.conflictRetry()}, nil
	}
	if builders.Sharded(pn) {
		if anyPodReady(st) {
			r.Followers.Ensure(req.NamespacedName, int(builders.Pods(pn)))
		}
		for _, o := range podsBack(beforePods, st.Pods) {
			r.Followers.Kick(req.NamespacedName, o)
		}
		// A pod that comes back on its own (a process restart inside its
		// container) changes nothing the operator watches, and must get
		// its map and be counted again.
		if !meta.IsStatusConditionTrue(st.Conditions, ConditionShardsAvailable) {
			return ctrl.Result{RequeueAfter: ShardRecheck}, nil
		}
		// A pod still holds another epoch (one back on another address):
		// the recorded one goes out at once, since until then the pods
		// disagree on where to reach each other.
		if mapsDiffer(st) {
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		return ctrl.Result{RequeueAfter: r.statusRefresh()}, nil
	}
	if meta.IsStatusConditionTrue(st.Conditions, ConditionAvailable) {
		r.Followers.Ensure(req.NamespacedName, 1)
		return ctrl.Result{RequeueAfter: r.statusRefresh()}, nil
	}
	return ctrl.Result{}, nil
}

// fillStatus computes the status into st and returns every problem found,
// those passed in and those it finds itself.
func (r *PushNodeReconciler) fillStatus(ctx context.Context, pn *ddpushv1.PushNode, st *ddpushv1.PushNodeStatus, sts *appsv1.StatefulSet, problems []problem) ([]problem, reshardOutcome) {
	d := builders.Defaulted(pn)
	// The pods the StatefulSet runs: more than replicas while slots
	// drain from the pods that leave.
	desired := builders.Pods(pn)
	st.ObservedGeneration = pn.Generation
	// Replicas counts the pods that exist, as the scale subresource
	// expects; desired is in the spec.
	st.Replicas, st.ReadyReplicas = 0, 0
	if sts != nil {
		st.Replicas, st.ReadyReplicas = sts.Status.Replicas, sts.Status.ReadyReplicas
	}
	st.Selector = labels.SelectorFromSet(builders.SelectorLabels(pn)).String()
	st.Ready = fmt.Sprintf("%d/%d", st.ReadyReplicas, desired)
	st.TokenSecretName = builders.SecretName(pn)
	st.SettingsHash = builders.SettingsHash(builders.NodeEnv(pn))
	internal := fmt.Sprintf("%s.%s.svc", builders.InternalServiceName(pn), pn.Namespace)
	st.PushEndpoint = net.JoinHostPort(internal, strconv.Itoa(int(d.Spec.Ports.Push)))
	st.HTTPEndpoint = "http://" + net.JoinHostPort(internal, strconv.Itoa(int(d.Spec.Ports.HTTP)))
	st.ClientEndpoint = r.clientEndpoint(ctx, d)

	avail := availableCondition(sts, desired)
	reshard, reshardProblems := r.reconcileResharding(ctx, pn, st, sts)
	problems = append(problems, reshardProblems...)
	if builders.Sharded(pn) {
		// Pods get their map as soon as they answer, ready or not: a pod
		// without one would take itself for the home of every uuid.
		problems = append(problems, r.reconcileShards(ctx, pn, st, avail.Status == metav1.ConditionTrue, reshard.moving)...)
	} else if avail.Status == "True" {
		if err := r.readNodeStats(ctx, pn, st); err != nil {
			// Ready pods that the operator cannot query still serve
			// phones; say so without calling the node unavailable.
			problems = append(problems, problem{"NodeAPIUnreachable", fmt.Sprintf("cannot read the node's status: %v", err)})
		}
	}
	for _, c := range []metav1.Condition{avail, progressingCondition(sts, desired), degradedCondition(problems)} {
		c.ObservedGeneration = pn.Generation
		meta.SetStatusCondition(&st.Conditions, c)
	}
	return problems, reshard
}

func (r *PushNodeReconciler) clientEndpoint(ctx context.Context, pn *ddpushv1.PushNode) string {
	var svc corev1.Service
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: pn.Namespace, Name: builders.ClientServiceName(pn)}, &svc); err != nil {
		return ""
	}
	proto := "udp+tcp"
	switch {
	case !*pn.Spec.ClientService.TCP:
		proto = "udp"
	case !*pn.Spec.ClientService.UDP:
		proto = "tcp"
	}
	port := strconv.Itoa(int(pn.Spec.Ports.Client))
	switch svc.Spec.Type {
	case corev1.ServiceTypeLoadBalancer:
		for _, in := range svc.Status.LoadBalancer.Ingress {
			host := in.IP
			if host == "" {
				host = in.Hostname
			}
			if host != "" {
				return proto + "://" + net.JoinHostPort(host, port)
			}
		}
		return "pending: the load balancer has no address yet"
	case corev1.ServiceTypeNodePort:
		if len(svc.Spec.Ports) > 0 && svc.Spec.Ports[0].NodePort != 0 {
			return fmt.Sprintf("%s://<any node>:%d", proto, svc.Spec.Ports[0].NodePort)
		}
	}
	return proto + "://" + net.JoinHostPort(fmt.Sprintf("%s.%s.svc", svc.Name, svc.Namespace), port)
}

// readNodeStats reads the record and online counts from the pod of a
// PushNode of one pod (reconcileShards reads those of sharded ones).
func (r *PushNodeReconciler) readNodeStats(ctx context.Context, pn *ddpushv1.PushNode, st *ddpushv1.PushNodeStatus) error {
	ep, err := r.Locator.Pod(ctx, pn, 0)
	if err != nil {
		return err
	}
	token, err := ReadToken(ctx, r.Client, pn)
	if err != nil {
		return err
	}
	c := newNodeClient(ep.URL, token, nodeStatusTimeout)
	s, err := c.Status(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", ep.Pod, err)
	}
	st.Records, st.Online = settledCount(pn.Status.Records, s.Records), settledCount(pn.Status.Online, s.Online)
	return nil
}

// ReadToken reads a PushNode's API token from its Secret.
func ReadToken(ctx context.Context, c client.Reader, pn *ddpushv1.PushNode) (string, error) {
	var s corev1.Secret
	if err := c.Get(ctx, types.NamespacedName{Namespace: pn.Namespace, Name: builders.SecretName(pn)}, &s); err != nil {
		return "", fmt.Errorf("read API token secret: %w", err)
	}
	t := string(s.Data[builders.TokenKey])
	if t == "" {
		return "", fmt.Errorf("secret %s has no %q key", s.Name, builders.TokenKey)
	}
	return t, nil
}

// SetupWithManager registers the reconciler; it watches what it owns.
func (r *PushNodeReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		// Status writes are ours; only spec changes need a reconcile.
		For(&ddpushv1.PushNode{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Owns(&corev1.Service{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		// A pod of a sharded PushNode that restarts (a new pod, or its
		// container again) may come back without its map, or need one
		// sooner than the next look; its StatefulSet may not change.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.shardedPushNodeOfPod),
			builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool { return podRestarted(e.ObjectOld, e.ObjectNew) }})).
		Named("pushnode").
		// Reading a node's status can wait out nodeStatusTimeout: one
		// worker would let a few stopped nodes hold back every other
		// PushNode (and the messages waiting for it to be Available).
		WithOptions(controller.Options{MaxConcurrentReconciles: pushNodeWorkers}).
		Complete(r)
}

// shardedPushNodeOfPod is the sharded PushNode a node pod belongs to.
func (r *PushNodeReconciler) shardedPushNodeOfPod(ctx context.Context, o client.Object) []reconcile.Request {
	l := o.GetLabels()
	if l[builders.LabelName] != builders.SelectorLabels(&ddpushv1.PushNode{})[builders.LabelName] || l[builders.LabelInstance] == "" {
		return nil
	}
	key := types.NamespacedName{Namespace: o.GetNamespace(), Name: l[builders.LabelInstance]}
	var pn ddpushv1.PushNode
	if err := r.Client.Get(ctx, key, &pn); err != nil || !builders.Sharded(&pn) {
		return nil
	}
	return []reconcile.Request{{NamespacedName: key}}
}

// podRestarted: a pod got an IP, or one of its containers restarted, or
// its readiness changed.
func podRestarted(oldObj, newObj client.Object) bool {
	o, ok1 := oldObj.(*corev1.Pod)
	n, ok2 := newObj.(*corev1.Pod)
	if !ok1 || !ok2 {
		return false
	}
	if o.Status.PodIP != n.Status.PodIP || podReady(o) != podReady(n) {
		return true
	}
	restarts := func(p *corev1.Pod) (sum int32) {
		for _, c := range p.Status.ContainerStatuses {
			sum += c.RestartCount
		}
		return sum
	}
	return restarts(o) != restarts(n)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// pushNodeWorkers is how many PushNodes are reconciled at once.
const pushNodeWorkers = 4

// ShardRecheck is how soon a sharded PushNode with a pod down is looked
// at again.
const ShardRecheck = 5 * time.Second

// podsBack lists the ordinals ready now and not before.
func podsBack(before, now []ddpushv1.PushNodePodStatus) []int {
	was := map[int32]bool{}
	for _, p := range before {
		was[p.Ordinal] = p.Ready
	}
	var out []int
	for _, p := range now {
		if p.Ready && !was[p.Ordinal] {
			out = append(out, int(p.Ordinal))
		}
	}
	return out
}

func anyPodReady(st *ddpushv1.PushNodeStatus) bool {
	for _, p := range st.Pods {
		if p.Ready {
			return true
		}
	}
	return false
}

// nodeStatusTimeout bounds the read of a node's status: it answers from
// memory, in milliseconds, when it is well.
const nodeStatusTimeout = 2 * time.Second

// mapsDiffer reports whether a pod holds another slot map epoch than the
// one recorded.
func mapsDiffer(st *ddpushv1.PushNodeStatus) bool {
	if st.SlotMap == nil {
		return false
	}
	for _, p := range st.Pods {
		if p.MapEpoch != st.SlotMap.Epoch {
			return true
		}
	}
	return false
}
