package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/node/api"
)

// pushRequest is what the node is asked to push.
func pushRequest(pm *ddpushv1.PushMessage) (api.PushRequest, error) {
	s := &pm.Spec
	req := api.PushRequest{UUID: s.UUID, UserID: s.UserID, Key: string(pm.UID)}
	switch s.Kind {
	case ddpushv1.KindGeneral:
		req.Kind = api.KindGeneral
	case ddpushv1.KindClassified:
		req.Kind = api.KindClassified
		v, err := api.ParseBits(s.Bits)
		if err != nil {
			return req, err
		}
		b := api.Bits(v)
		req.Bits = &b
	case ddpushv1.KindCustom:
		req.Kind = api.KindCustom
		req.Data, req.BinaryData = s.Data, s.BinaryData
	default:
		return req, fmt.Errorf("kind %q is not General, Classified or Custom", s.Kind)
	}
	return req, nil
}

func (r *PushMessageReconciler) submit(ctx context.Context, pm *ddpushv1.PushMessage, pn *ddpushv1.PushNode) (ctrl.Result, error) {
	st := &pm.Status
	req, err := pushRequest(pm)
	if err != nil {
		r.finish(pm, ddpushv1.PhaseFailed, "InvalidSpec", err.Error())
		return ctrl.Result{}, nil
	}
	retry := func(reason, msg string) (ctrl.Result, error) {
		st.Attempts++
		st.Reason, st.Message = reason, msg
		return ctrl.Result{RequeueAfter: backoff(st.Attempts)}, nil
	}
	// Straight to the home pod: any pod would relay it there, at the
	// cost of a hop, and with the home down the answer is the same.
	ep, err := r.Locator.ForUUID(ctx, pn, targetOf(pm))
	if err != nil {
		return retry("NodeNotReachable", err.Error())
	}
	token, err := ReadToken(ctx, r.Client, pn)
	if err != nil {
		return retry("NoToken", err.Error())
	}
	// The gate is per pod: one pod down must not hold back the pushes
	// homed on the others.
	nodeKey := types.NamespacedName{Namespace: pn.Namespace, Name: ep.Pod}
	if until, ok := r.gate().enter(nodeKey, r.now(), nodeCallTimeout); !ok {
		return retry("NodeNotResponding", fmt.Sprintf("an earlier call to pod %s of PushNode %q got no answer; the next try is after %s",
			ep.Pod, pn.Name, until.UTC().Format(time.RFC3339)))
	}
	c := newNodeClient(ep.URL, token, nodeCallTimeout)
	p, err := c.Push(ctx, req)
	r.observe(nodeKey, err)
	if err != nil {
		var se *api.StatusError
		if errors.As(err, &se) {
			switch {
			case se.Code == http.StatusBadRequest:
				r.finish(pm, ddpushv1.PhaseFailed, "Rejected", "the node refused the message: "+se.Message)
				return ctrl.Result{}, nil
			case se.Code == http.StatusUnauthorized:
				return retry("Unauthorized", "the node refused the operator's token: "+se.Message)
			}
		}
		return retry("SubmitFailed", fmt.Sprintf("submitting to %s failed (will retry): %v", ep.Pod, err))
	}
	now := metav1.NewTime(r.now())
	st.PushID = int64(p.ID)
	st.TargetUUID = p.UUID
	st.NodePod = ep.Pod
	st.NodeIncarnation = p.Incarnation
	st.SubmittedAt = &now
	// No Submitted condition: pushId and submittedAt say it, and a
	// condition on every message costs every status write.
	st.Reason, st.Message = "Submitted", fmt.Sprintf("accepted by %s as push %d", ep.Pod, p.ID)
	r.applyPush(pm, pn, &p)
	// The submit answer already says what the node knew at that moment.
	node := types.NamespacedName{Namespace: pm.Namespace, Name: pn.Name}
	r.Followers.Synced(node, PushOrdinal(pn, pm), string(pm.UID))
	if f, known, _, _ := r.Followers.Lookup(node, PushOrdinal(pn, pm), string(pm.UID)); known {
		r.applyFate(pm, pn, f)
	}
	return ctrl.Result{}, nil
}

// nodeCallTimeout bounds one call to a node. A push is a commit on the
// node, answered in milliseconds; a node that takes longer is retried with
// backoff (the same idempotency key, so never pushed twice) rather than
// holding a worker that other tenants' messages wait for.
const nodeCallTimeout = 5 * time.Second

// nodePause is how long a node that gave no answer is left alone before
// one call probes it again.
const nodePause = 2 * time.Second

func (r *PushMessageReconciler) gate() *nodeGate {
	r.gateOnce.Do(func() { r.nodeGates = newNodeGate(nodePause) })
	return r.nodeGates
}

// observe opens or closes a node's gate after a call: any HTTP answer,
// even an error status, shows the node responds.
func (r *PushMessageReconciler) observe(node types.NamespacedName, err error) {
	var se *api.StatusError
	if err == nil || errors.As(err, &se) {
		r.gate().answered(node)
		return
	}
	r.gate().failed(node, r.now())
}
