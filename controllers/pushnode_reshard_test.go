package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/node/api"
)

// movingNodes stands in for the pods of a PushNode on the slot map and
// move paths of the node API: each holds a map, refuses older epochs, and
// a move is done on the second look; the first move fails once, as a
// move whose target went away does.
type movingNodes struct {
	mu      sync.Mutex
	maps    []*api.SlotMap
	moves   map[string]*api.Move
	reqs    map[string]api.MoveRequest
	posts   map[string]int
	failed  bool
	servers []*httptest.Server
}

func newMovingNodes(t *testing.T, n int) *movingNodes {
	f := &movingNodes{maps: make([]*api.SlotMap, n), moves: map[string]*api.Move{}, reqs: map[string]api.MoveRequest{}, posts: map[string]int{}}
	for i := range n {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.serve(i, w, r) }))
		t.Cleanup(s.Close)
		f.servers = append(f.servers, s)
	}
	return f
}

func (f *movingNodes) install(i int, m api.SlotMap) {
	m.Self = i
	f.maps[i] = &m
}

func (f *movingNodes) serve(i int, w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	answer := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	fail := func(code int, msg string) { answer(code, map[string]any{"error": msg, "self": i}) }
	switch {
	case r.URL.Path == api.PathStatus:
		answer(http.StatusOK, api.Status{Ready: f.maps[i] != nil, Records: 10})
	case r.URL.Path == api.PathSlotMap && r.Method == http.MethodGet:
		if f.maps[i] == nil {
			fail(http.StatusNotFound, "no slot map")
			return
		}
		answer(http.StatusOK, f.maps[i])
	case r.URL.Path == api.PathSlotMap && r.Method == http.MethodPut:
		var m api.SlotMap
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			fail(http.StatusBadRequest, err.Error())
			return
		}
		if f.maps[i] != nil && m.Epoch < f.maps[i].Epoch {
			fail(http.StatusConflict, fmt.Sprintf("epoch %d is older than %d", m.Epoch, f.maps[i].Epoch))
			return
		}
		f.install(i, m)
		answer(http.StatusOK, f.maps[i])
	case r.URL.Path == api.PathMoves && r.Method == http.MethodPost:
		var req api.MoveRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			fail(http.StatusBadRequest, err.Error())
			return
		}
		f.posts[req.ID]++
		mv := f.moves[req.ID]
		if mv == nil || mv.Phase == api.MoveFailed {
			mv = &api.Move{ID: req.ID, Phase: api.MoveStreaming, Source: i, Target: req.Target, Epoch: req.Map.Epoch}
			f.moves[req.ID], f.reqs[req.ID] = mv, req
		}
		answer(http.StatusAccepted, mv)
	case strings.HasPrefix(r.URL.Path, api.PathMoves+"/"):
		mv := f.moves[strings.TrimPrefix(r.URL.Path, api.PathMoves+"/")]
		if mv == nil {
			fail(http.StatusNotFound, "no such move")
			return
		}
		if mv.Phase == api.MoveStreaming {
			if !f.failed {
				f.failed = true
				mv.Phase, mv.Error = api.MoveFailed, "the target does not answer"
			} else {
				req := f.reqs[mv.ID]
				f.install(i, req.Map)
				f.install(req.Target, req.Map)
				mv.Phase, mv.Records = api.MoveDone, 5
			}
		}
		answer(http.StatusOK, mv)
	default:
		fail(http.StatusNotFound, "not here")
	}
}

// owners counts the slots of each ordinal in a map.
func owners(ranges []ddpushv1.SlotRange) map[int32]int32 {
	out := map[int32]int32{}
	for _, r := range ranges {
		out[r.Ordinal] += r.To - r.From + 1
	}
	return out
}

// A change of replicas moves slots batch by batch through the source
// pods, records each step in the status, hands every map to every pod,
// and shrinks the StatefulSet only once the leaving pods are drained.
func TestReshardGrowsAndShrinks(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	ctx := context.Background()
	ns := namespace(t)
	key := types.NamespacedName{Namespace: ns, Name: "moving"}
	nodes := newMovingNodes(t, 5)
	for i, s := range nodes.servers {
		loc.setPod(key, i, s.URL, fmt.Sprintf("moving-%d.peers:9977", i))
	}
	must(t, k8s.Create(ctx, newShardedPushNode(ns, "moving", 3)))
	eventually(t, 30*time.Second, "the even split on 3 pods", func() error {
		pn := getPN(t, ns, "moving")
		if sm := pn.Status.SlotMap; sm == nil || sm.Epoch != 1 || sm.Pods != 3 || len(sm.Ranges) != 3 {
			return fmt.Errorf("slot map %+v", pn.Status.SlotMap)
		}
		if c := meta.FindStatusCondition(pn.Status.Conditions, controllers.ConditionResharding); c == nil || c.Reason != controllers.ReasonNotResharding {
			return fmt.Errorf("Resharding %+v", c)
		}
		return nil
	})

	scale := func(n int32) {
		t.Helper()
		setReplicas(t, ns, "moving", n)
	}
	waitComplete := func(n int32, during func(*ddpushv1.PushNode) error) *ddpushv1.PushNode {
		t.Helper()
		var done *ddpushv1.PushNode
		eventually(t, 3*time.Minute, fmt.Sprintf("resharding to %d pods", n), func() error {
			pn := getPN(t, ns, "moving")
			if pn.Status.Resharding != nil {
				if err := during(pn); err != nil {
					t.Error(err)
				}
				return fmt.Errorf("resharding %+v", *pn.Status.Resharding)
			}
			c := meta.FindStatusCondition(pn.Status.Conditions, controllers.ConditionResharding)
			if c == nil || c.Reason != controllers.ReasonReshardComplete || !strings.Contains(c.Message, fmt.Sprintf("to %d pods", n)) {
				return fmt.Errorf("Resharding %+v", c)
			}
			if int(pn.Status.SlotMap.Pods) != int(n) {
				return fmt.Errorf("slot map names %d pods", pn.Status.SlotMap.Pods)
			}
			done = pn
			return nil
		})
		for o, c := range owners(done.Status.SlotMap.Ranges) {
			if c != 1024/n && c != 1024/n+1 {
				t.Errorf("pod %d holds %d slots after resharding to %d", o, c, n)
			}
		}
		if len(owners(done.Status.SlotMap.Ranges)) != int(n) {
			t.Errorf("owners %v", owners(done.Status.SlotMap.Ranges))
		}
		return done
	}

	// Growing: the StatefulSet grows first, and moves need every pod.
	scale(5)
	seenMove := false
	pn := waitComplete(5, func(pn *ddpushv1.PushNode) error {
		var sts appsv1.StatefulSet
		if err := k8s.Get(ctx, key, &sts); err != nil {
			return err
		}
		if *sts.Spec.Replicas != 5 {
			return fmt.Errorf("growing: statefulset replicas %d", *sts.Spec.Replicas)
		}
		if pn.Status.Resharding.Move != nil {
			seenMove = true
		}
		return nil
	})
	if !seenMove {
		t.Error("no move was seen in the status")
	}
	rs := meta.FindStatusCondition(pn.Status.Conditions, controllers.ConditionResharding)
	if !strings.Contains(rs.Message, "moved 409 slots from 3 to 5 pods") {
		t.Errorf("complete: %q", rs.Message)
	}
	// Every pod holds the recorded map.
	nodes.mu.Lock()
	for i, m := range nodes.maps {
		if m == nil || int64(m.Epoch) != pn.Status.SlotMap.Epoch {
			t.Errorf("pod %d holds %+v, recorded epoch %d", i, m, pn.Status.SlotMap.Epoch)
		}
	}
	// The failed move was asked again with the same id.
	again := 0
	for _, n := range nodes.posts {
		if n > 1 {
			again++
		}
	}
	nodes.mu.Unlock()
	if again != 1 {
		t.Errorf("%d moves were asked more than once, want the one that failed", again)
	}

	// Shrinking: pods 2-4 drain while the StatefulSet keeps them.
	scale(2)
	pn = waitComplete(2, func(pn *ddpushv1.PushNode) error {
		var sts appsv1.StatefulSet
		if err := k8s.Get(ctx, key, &sts); err != nil {
			return err
		}
		if *sts.Spec.Replicas != 5 {
			return fmt.Errorf("draining: statefulset replicas %d, want 5 until the pods own nothing", *sts.Spec.Replicas)
		}
		return nil
	})
	eventually(t, 20*time.Second, "the StatefulSet shrinks", func() error {
		var sts appsv1.StatefulSet
		if err := k8s.Get(ctx, key, &sts); err != nil {
			return err
		}
		if *sts.Spec.Replicas != 2 {
			return fmt.Errorf("statefulset replicas %d", *sts.Spec.Replicas)
		}
		return nil
	})
	if o := owners(pn.Status.SlotMap.Ranges); o[0] != 512 || o[1] != 512 {
		t.Errorf("owners after 5 -> 2: %v", o)
	}

	var evs eventsv1.EventList
	eventually(t, 20*time.Second, "resharding events", func() error {
		if err := k8s.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		n := map[string]int{}
		for _, e := range evs.Items {
			if e.Regarding.Name == "moving" {
				n[e.Reason]++
			}
		}
		if n[controllers.EventReshardingStarted] < 2 || n[controllers.EventReshardComplete] < 2 {
			return fmt.Errorf("events %v", n)
		}
		return nil
	})
}

// A PushNode of one pod has no map: going to 3 pods hands every pod the
// map of every slot at pod 0 and moves from there; going back to one pod
// drains pods 1 and 2, and the pod template loses the peer link only then.
func TestReshardFromAndToOnePod(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	ctx := context.Background()
	ns := namespace(t)
	key := types.NamespacedName{Namespace: ns, Name: "single"}
	nodes := newMovingNodes(t, 3)
	for i, s := range nodes.servers {
		loc.setPod(key, i, s.URL, fmt.Sprintf("single-%d.peers:9977", i))
	}
	must(t, k8s.Create(ctx, newPushNode(ns, "single")))
	eventually(t, 30*time.Second, "the PushNode of one pod is looked at", func() error {
		if pn := getPN(t, ns, "single"); pn.Status.ObservedGeneration == 0 || pn.Status.SlotMap != nil {
			return fmt.Errorf("status %+v", pn.Status)
		}
		return nil
	})
	peerArgs := func() bool {
		var sts appsv1.StatefulSet
		must(t, k8s.Get(ctx, key, &sts))
		for _, a := range sts.Spec.Template.Spec.Containers[0].Args {
			if strings.HasPrefix(a, "--peer-addr") {
				return true
			}
		}
		return false
	}
	if peerArgs() {
		t.Fatal("a single pod with a peer link")
	}

	setReplicas(t, ns, "single", 3)
	var first uint64
	eventually(t, 3*time.Minute, "resharding to 3 pods", func() error {
		nodes.mu.Lock()
		if m := nodes.maps[0]; m != nil && first == 0 {
			first = m.Epoch
			if len(m.Ranges) != 1 || m.Ranges[0].Ordinal != 0 || len(m.Peers) != 3 {
				t.Errorf("pod 0's first map %+v", m)
			}
		}
		nodes.mu.Unlock()
		pn := getPN(t, ns, "single")
		c := meta.FindStatusCondition(pn.Status.Conditions, controllers.ConditionResharding)
		if pn.Status.Resharding != nil || c == nil || c.Reason != controllers.ReasonReshardComplete {
			return fmt.Errorf("resharding %+v, condition %+v", pn.Status.Resharding, c)
		}
		if o := owners(pn.Status.SlotMap.Ranges); o[0] != 342 || o[1] != 341 || o[2] != 341 {
			return fmt.Errorf("owners %v", o)
		}
		return nil
	})
	if first != 1 {
		t.Errorf("pod 0's first map has epoch %d, want 1", first)
	}
	if !peerArgs() {
		t.Error("3 pods without a peer link")
	}

	setReplicas(t, ns, "single", 1)
	eventually(t, 3*time.Minute, "resharding to 1 pod", func() error {
		pn := getPN(t, ns, "single")
		if pn.Status.Resharding != nil {
			if !peerArgs() {
				t.Error("the peer link went while draining")
			}
			return fmt.Errorf("resharding %+v", *pn.Status.Resharding)
		}
		if o := owners(pn.Status.SlotMap.Ranges); o[0] != 1024 || pn.Status.SlotMap.Pods != 1 {
			return fmt.Errorf("slot map %+v", pn.Status.SlotMap)
		}
		var sts appsv1.StatefulSet
		if err := k8s.Get(ctx, key, &sts); err != nil {
			return err
		}
		if *sts.Spec.Replicas != 1 || peerArgs() {
			return fmt.Errorf("statefulset replicas %d, peer link %v", *sts.Spec.Replicas, peerArgs())
		}
		return nil
	})
}

// setReplicas changes a PushNode's replicas, reading it again when the
// operator updated it in between (a conflict is not the test's failure).
func setReplicas(t *testing.T, ns, name string, n int32) {
	t.Helper()
	must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pn := getPN(t, ns, name)
		pn.Spec.Replicas = ptr.To(n)
		return k8s.Update(context.Background(), pn)
	}))
}
