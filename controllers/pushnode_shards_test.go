package controllers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/controllers/builders"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// shardedFixture is a PushNode of n pods, each a real node process.
type shardedFixture struct {
	ns, name string
	n        int
	loc      *testLocator
	dir      string
	token    []byte
	procs    []*nodetest.Process
	peers    []string
}

func newShardedPushNode(ns, name string, n int32) *ddpushv1.PushNode {
	pn := newPushNode(ns, name)
	pn.Spec.Replicas = ptr.To(n)
	return pn
}

// startSharded creates a PushNode of n replicas and starts its pods as
// node processes on loopback, each with its ordinal and peer listener.
func startSharded(t *testing.T, loc *testLocator, n int) *shardedFixture {
	t.Helper()
	ctx := context.Background()
	f := &shardedFixture{ns: namespace(t), name: "shard", n: n, loc: loc, dir: t.TempDir()}
	f.procs, f.peers = make([]*nodetest.Process, n), make([]string, n)
	// The peer addresses are known before the PushNode exists, as a
	// pod's DNS name is: the first map the operator computes is the one.
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		f.peers[i] = l.Addr().String()
		must(t, l.Close())
		loc.setPod(types.NamespacedName{Namespace: f.ns, Name: f.name}, i, "", f.peers[i])
	}
	must(t, k8s.Create(ctx, newShardedPushNode(f.ns, f.name, int32(n))))
	var sec corev1.Secret
	eventually(t, 20*time.Second, "token secret", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: f.name + "-api-token"}, &sec)
	})
	f.token = sec.Data["token"]
	for i := range n {
		f.start(t, i, "data-"+strconv.Itoa(i))
	}
	return f
}

// start runs pod i on data directory data (under the fixture's), on the
// peer address it had before if any.
func (f *shardedFixture) start(t *testing.T, i int, data string) {
	t.Helper()
	tokenFile := filepath.Join(f.dir, "operator-token")
	must(t, os.WriteFile(tokenFile, f.token, 0o600))
	peer := f.peers[i]
	if peer == "" {
		peer = "127.0.0.1:0"
	}
	p := nodetest.StartProcess(t, filepath.Join(f.dir, data), "--api-token-file", tokenFile,
		"--ordinal", strconv.Itoa(i), "--peer-addr", peer)
	if p.Peer == "" {
		t.Fatalf("pod %d did not say where its peer listener is:\n%s", i, p.Logs())
	}
	f.procs[i], f.peers[i] = p, p.Peer
	f.loc.setPod(types.NamespacedName{Namespace: f.ns, Name: f.name}, i, "http://"+p.HTTP, p.Peer)
}

func (f *shardedFixture) pn(t *testing.T) *ddpushv1.PushNode { return getPN(t, f.ns, f.name) }

// homeOf is the ordinal owning user's uuid in the even split of n pods.
func homeOf(t testing.TB, n int, user string) int {
	t.Helper()
	peers := map[int]string{}
	for i := range n {
		peers[i] = fmt.Sprintf("p%d:1", i)
	}
	m, err := slotmap.EvenSplit(n, 1, peers)
	must(t, err)
	u, err := wire.ParseUUID(userUUID(user))
	must(t, err)
	return m.OwnerOf(u)
}

// usersOnEveryShard returns one user id per ordinal, each homed there.
func usersOnEveryShard(t testing.TB, n int, prefix string) []string {
	t.Helper()
	users := make([]string, n)
	found := 0
	for i := 0; found < n && i < 100000; i++ {
		u := prefix + strconv.Itoa(i)
		if h := homeOf(t, n, u); users[h] == "" {
			users[h] = u
			found++
		}
	}
	if found < n {
		t.Fatalf("no user for every shard: %v", users)
	}
	return users
}

// phoneOn attaches user's phone to pod i (its home, as the client
// Service would route it there or to a pod that relays).
func (f *shardedFixture) phoneOn(t *testing.T, i int, user string) *phone.Phone {
	t.Helper()
	u, err := wire.ParseUUID(userUUID(user))
	must(t, err)
	p, err := phone.Dial("udp", f.procs[i].Client, u)
	must(t, err)
	t.Cleanup(func() { p.Close() })
	must(t, p.Heartbeat())
	return p
}

// getSlotMap reads what pod i holds.
func (f *shardedFixture) getSlotMap(t *testing.T, i int) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+f.procs[i].HTTP+"/v1/slotmap", nil)
	must(t, err)
	req.Header.Set("Authorization", "Bearer "+string(f.token))
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func shardsAvailable(pn *ddpushv1.PushNode) *metav1.Condition {
	return meta.FindStatusCondition(pn.Status.Conditions, controllers.ConditionShardsAvailable)
}

// The objects of a sharded PushNode, and what the operator reports while
// none of its pods answers: the slot map is computed and recorded, each
// pod's share is shown, and a message waits for its own home pod.
func TestShardedPushNodeObjectsAndStatus(t *testing.T) {
	loc := &testLocator{}
	startManagerOpts(t, cfg, loc, nil, func(o *controllers.Options) { o.Builders.NetworkPolicy.Enabled = true })
	ctx := context.Background()
	ns := namespace(t)
	pn := newShardedPushNode(ns, "edge", 3)
	pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "mobile"}
	must(t, k8s.Create(ctx, pn))
	key := types.NamespacedName{Namespace: ns, Name: "edge"}

	var pdb policyv1.PodDisruptionBudget
	eventually(t, 20*time.Second, "PodDisruptionBudget", func() error { return k8s.Get(ctx, key, &pdb) })
	got := getPN(t, ns, "edge")
	if !metav1.IsControlledBy(&pdb, got) || pdb.Spec.MaxUnavailable.IntValue() != 1 ||
		pdb.Labels[builders.LabelManagedBy] != builders.ManagedByValue || pdb.Labels["team"] != "mobile" {
		t.Errorf("budget %+v", pdb.ObjectMeta)
	}
	var np networkingv1.NetworkPolicy
	eventually(t, 20*time.Second, "NetworkPolicy", func() error { return k8s.Get(ctx, key, &np) })
	if len(np.Spec.Ingress) != 3 || np.Spec.Ingress[2].Ports[0].Port.IntValue() != 9977 {
		t.Errorf("NetworkPolicy ingress %+v", np.Spec.Ingress)
	}

	eventually(t, 20*time.Second, "slot map and pods in the status", func() error {
		got = getPN(t, ns, "edge")
		st := got.Status
		if st.SlotMap == nil || st.SlotMap.Epoch != 1 || len(st.SlotMap.Ranges) != 3 {
			return fmt.Errorf("slot map %+v", st.SlotMap)
		}
		if len(st.Pods) != 3 {
			return fmt.Errorf("pods %+v", st.Pods)
		}
		c := shardsAvailable(got)
		if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "pod edge-1 (slots 342-682, 33% of uuids) is not ready") ||
			!strings.Contains(c.Message, "3/3 pods not ready, 100% of uuids") {
			return fmt.Errorf("ShardsAvailable %+v", c)
		}
		return nil
	})
	want := []ddpushv1.SlotRange{{From: 0, To: 341, Ordinal: 0}, {From: 342, To: 682, Ordinal: 1}, {From: 683, To: 1023, Ordinal: 2}}
	for i, r := range got.Status.SlotMap.Ranges {
		if r != want[i] {
			t.Errorf("range %d = %+v, want %+v", i, r, want[i])
		}
	}
	for i, p := range got.Status.Pods {
		if p.Name != fmt.Sprintf("edge-%d", i) || int(p.Ordinal) != i || p.Ready || p.Problem == "" {
			t.Errorf("pod %d: %+v", i, p)
		}
	}
	if p := got.Status.Pods[2]; p.Slots != "683-1023" || p.SlotCount != 341 || p.Share != "33%" {
		t.Errorf("pod 2 share %+v", p)
	}

	// The pod template compares equal to what the API server made of it
	// (the downward-API env, the peer port): reconciles, every few seconds
	// while the pods are down, leave the StatefulSet alone.
	var sts appsv1.StatefulSet
	must(t, k8s.Get(ctx, key, &sts))
	c := container0(t, &sts)
	if *sts.Spec.Replicas != 3 || len(c.Args) != 2 || c.Args[0] != "--peer-addr=:9977" || c.Args[1] != "--peer-token-file=/etc/pushnode/api/peer-token" {
		t.Errorf("StatefulSet replicas %d args %v", *sts.Spec.Replicas, c.Args)
	}
	// The pods' peer secret sits beside the API token, and is another one.
	var sec corev1.Secret
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: builders.SecretName(getPN(t, ns, key.Name))}, &sec))
	if tok, peer := sec.Data[builders.TokenKey], sec.Data[builders.PeerTokenKey]; len(tok) == 0 || len(peer) == 0 || string(tok) == string(peer) {
		t.Errorf("secret keys %v: want an API token and a different peer secret", slices.Sorted(maps.Keys(sec.Data)))
	}
	rv := sts.ResourceVersion
	time.Sleep(2*controllers.ShardRecheck + time.Second)
	must(t, k8s.Get(ctx, key, &sts))
	if sts.ResourceVersion != rv {
		t.Errorf("the StatefulSet was rewritten by reconciles that changed nothing (resourceVersion %s -> %s)", rv, sts.ResourceVersion)
	}

	// The locator's home agrees with the map, for uuids and user ids.
	for _, user := range usersOnEveryShard(t, 3, "loc-") {
		o, err := controllers.HomeOrdinal(got, userUUID(user))
		must(t, err)
		if h := homeOf(t, 3, user); o != h {
			t.Errorf("user %s: HomeOrdinal %d, want %d", user, o, h)
		}
	}
	if _, err := controllers.HomeOrdinal(got, "not-hex"); err == nil {
		t.Errorf("HomeOrdinal took a uuid that is not one")
	}

	// A message waits for its home, and says which one.
	user := usersOnEveryShard(t, 3, "wait-")[2]
	pm := &ddpushv1.PushMessage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "waits"},
		Spec: ddpushv1.PushMessageSpec{PushNodeName: "edge", UserID: user, Kind: ddpushv1.KindGeneral}}
	must(t, k8s.Create(ctx, pm))
	eventually(t, 20*time.Second, "message waits for edge-2", func() error {
		m := getPM(t, ns, "waits")
		c := meta.FindStatusCondition(m.Status.Conditions, controllers.ConditionNodeAvailable)
		if m.Status.Phase != ddpushv1.PhasePending || c == nil || c.Reason != "HomePodNotReady" || !strings.Contains(c.Message, "pod edge-2") {
			return fmt.Errorf("status %s %+v", m.Status.Phase, c)
		}
		return nil
	})
}

// Three real node processes: the operator hands each the slot map, reports
// every pod, and PushMessages for uuids on every shard go to their home
// and reach Delivered. A pod that goes away is reported with its share;
// its messages wait while the others are delivered; back on an empty
// volume, it gets the map again and its messages go out.
func TestShardedPushNodeDelivers(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	f := startSharded(t, loc, 3)
	ctx := context.Background()
	markReadyN(t, f.ns, f.name, 3)

	eventually(t, 30*time.Second, "every pod holds the map", func() error {
		pn := f.pn(t)
		if c := shardsAvailable(pn); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("ShardsAvailable %+v pods %+v", c, pn.Status.Pods)
		}
		return nil
	})
	pn := f.pn(t)
	epoch := pn.Status.SlotMap.Epoch
	if epoch != 1 {
		t.Errorf("slot map epoch %d: the first map is epoch 1 and nothing changed it", epoch)
	}
	for i := range 3 {
		code, m := f.getSlotMap(t, i)
		if code != http.StatusOK || m["epoch"] != float64(epoch) || m["self"] != float64(i) {
			t.Fatalf("pod %d holds %d %v", i, code, m)
		}
		peers, _ := m["peers"].(map[string]any)
		if peers[strconv.Itoa((i+1)%3)] != f.peers[(i+1)%3] {
			t.Errorf("pod %d's peers %v; want the pods' peer listeners %v", i, peers, f.peers)
		}
		p := pn.Status.Pods[i]
		if !p.Ready || p.MapEpoch != epoch || p.Slots == "" {
			t.Errorf("pod %d status %+v", i, p)
		}
	}

	users := usersOnEveryShard(t, 3, "deliver-")
	phones := make([]*phone.Phone, 3)
	for i, u := range users {
		phones[i] = f.phoneOn(t, i, u)
	}
	for i, u := range users {
		pm := &ddpushv1.PushMessage{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: fmt.Sprintf("to-%d", i)},
			Spec: ddpushv1.PushMessageSpec{PushNodeName: f.name, UserID: u, Kind: ddpushv1.KindCustom, Data: fmt.Sprintf("for shard %d", i)}}
		must(t, k8s.Create(ctx, pm))
	}
	for i := range users {
		expectCustom(t, phones[i], fmt.Sprintf("for shard %d", i))
		got := waitPhase(t, f.ns, fmt.Sprintf("to-%d", i), ddpushv1.PhaseDelivered)
		o, ok := slotmap.OrdinalOfID(uint64(got.Status.PushID))
		if got.Status.NodePod != fmt.Sprintf("%s-%d", f.name, i) || !ok || o != i {
			t.Errorf("message for shard %d went to %s as push %d (ordinal %d)", i, got.Status.NodePod, got.Status.PushID, o)
		}
	}

	// A phone talking to a pod that is not its home (the client Service
	// may send it anywhere): the push still goes to the home, which hands
	// it to the phone through the pod the phone talks to.
	relayed := usersOnEveryShard(t, 3, "front-")
	for home, u := range relayed {
		front := (home + 1) % 3
		p := f.phoneOn(t, front, u)
		name := fmt.Sprintf("via-%d", front)
		pm := &ddpushv1.PushMessage{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
			Spec: ddpushv1.PushMessageSpec{PushNodeName: f.name, UserID: u, Kind: ddpushv1.KindCustom, Data: name}}
		must(t, k8s.Create(ctx, pm))
		expectCustom(t, p, name)
		if got := waitPhase(t, f.ns, name, ddpushv1.PhaseDelivered); got.Status.NodePod != fmt.Sprintf("%s-%d", f.name, home) {
			t.Errorf("%s went to %s, not home %d", name, got.Status.NodePod, home)
		}
	}

	// A uuid target, in capitals, finds the same home as the node computes.
	byUUID := &ddpushv1.PushMessage{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "by-uuid"},
		Spec: ddpushv1.PushMessageSpec{PushNodeName: f.name, UUID: strings.ToUpper(userUUID(users[2])), Kind: ddpushv1.KindCustom, Data: "by uuid"}}
	must(t, k8s.Create(ctx, byUUID))
	expectCustom(t, phones[2], "by uuid")
	if got := waitPhase(t, f.ns, "by-uuid", ddpushv1.PhaseDelivered); got.Status.NodePod != f.name+"-2" {
		t.Errorf("by-uuid went to %s", got.Status.NodePod)
	}

	// Pushes to offline phones, one per shard, wait in their homes' stores.
	offline := usersOnEveryShard(t, 3, "offline-")
	for i, u := range offline {
		pm := &ddpushv1.PushMessage{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: fmt.Sprintf("queued-%d", i)},
			Spec: ddpushv1.PushMessageSpec{PushNodeName: f.name, UserID: u, Kind: ddpushv1.KindCustom, Data: fmt.Sprintf("queued %d", i)}}
		must(t, k8s.Create(ctx, pm))
		waitPhase(t, f.ns, pm.Name, ddpushv1.PhaseQueued)
	}

	// Pod 1 goes away.
	_ = f.procs[1].Cmd.Process.Kill()
	eventually(t, 30*time.Second, "pod 1 reported down", func() error {
		pn := f.pn(t)
		c := shardsAvailable(pn)
		if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "1/3 pods not ready, 33% of uuids") ||
			!strings.Contains(c.Message, "pod shard-1 (slots 342-682, 33% of uuids) is not ready") {
			return fmt.Errorf("ShardsAvailable %+v", c)
		}
		// The StatefulSet still counts it ready (its probes lag): the
		// silence of its API is a problem for a person.
		if d := meta.FindStatusCondition(pn.Status.Conditions, controllers.ConditionDegraded); d == nil || d.Status != metav1.ConditionTrue ||
			!strings.Contains(d.Message, "cannot read the status of pod shard-1") {
			return fmt.Errorf("Degraded %+v", d)
		}
		if p := pn.Status.Pods[1]; p.Ready || !pn.Status.Pods[0].Ready || !pn.Status.Pods[2].Ready {
			return fmt.Errorf("pods %+v", pn.Status.Pods)
		}
		return nil
	})
	waitEvent(t, f.ns, f.name, corev1.EventTypeWarning, controllers.EventShardsUnavailable, "pod shard-1 (slots 342-682, 33% of uuids) is not ready")
	for i, u := range users {
		pm := &ddpushv1.PushMessage{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: fmt.Sprintf("again-%d", i)},
			Spec: ddpushv1.PushMessageSpec{PushNodeName: f.name, UserID: u, Kind: ddpushv1.KindCustom, Data: fmt.Sprintf("again %d", i)}}
		must(t, k8s.Create(ctx, pm))
	}
	for _, i := range []int{0, 2} {
		expectCustom(t, phones[i], fmt.Sprintf("again %d", i))
		waitPhase(t, f.ns, fmt.Sprintf("again-%d", i), ddpushv1.PhaseDelivered)
	}
	eventually(t, 20*time.Second, "message for pod 1 waits", func() error {
		m := getPM(t, f.ns, "again-1")
		c := meta.FindStatusCondition(m.Status.Conditions, controllers.ConditionNodeAvailable)
		if m.Status.Phase != ddpushv1.PhasePending || c == nil || c.Reason != "HomePodNotReady" {
			return fmt.Errorf("status %s %+v", m.Status.Phase, c)
		}
		return nil
	})

	// Back on an empty volume: no map until the operator hands it again.
	f.start(t, 1, "data-1-new")
	eventually(t, 30*time.Second, "pod 1 back with the map", func() error {
		if c := shardsAvailable(f.pn(t)); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("ShardsAvailable %+v", c)
		}
		if code, m := f.getSlotMap(t, 1); code != http.StatusOK || m["epoch"] != float64(epoch) {
			return fmt.Errorf("pod 1 holds %d %v", code, m)
		}
		return nil
	})
	p1 := f.phoneOn(t, 1, users[1])
	expectCustom(t, p1, "again 1")
	got := waitPhase(t, f.ns, "again-1", ddpushv1.PhaseDelivered)
	if got.Status.NodePod != f.name+"-1" {
		t.Errorf("again-1 went to %s", got.Status.NodePod)
	}

	// The push queued on pod 1 went with its store; those queued on the
	// other pods, whose stores are the same, are untouched and delivered.
	got = waitPhase(t, f.ns, "queued-1", ddpushv1.PhaseFailed)
	if got.Status.Reason != controllers.ReasonNodeStoreReplaced {
		t.Errorf("queued-1: %s: %s", got.Status.Reason, got.Status.Message)
	}
	for _, i := range []int{0, 2} {
		name := fmt.Sprintf("queued-%d", i)
		if m := getPM(t, f.ns, name); m.Status.Phase != ddpushv1.PhaseQueued {
			t.Errorf("%s: %s %s: %s", name, m.Status.Phase, m.Status.Reason, m.Status.Message)
		}
		expectCustom(t, f.phoneOn(t, i, offline[i]), fmt.Sprintf("queued %d", i))
		waitPhase(t, f.ns, name, ddpushv1.PhaseDelivered)
	}
}

// A pod holding a slot map of a newer epoch than the status records (the
// PushNode restored from an older copy, a person's PUT) would refuse the
// recorded one forever: the operator moves every pod to an epoch past it.
// A pod whose peer address changes gets a new epoch too, as every other pod.
func TestShardedPushNodeMovesPastANewerEpoch(t *testing.T) {
	loc := &testLocator{}
	startManagerOpts(t, cfg, loc, nil, func(o *controllers.Options) { o.StatusRefresh = 2 * time.Second })
	f := startSharded(t, loc, 2)
	markReadyN(t, f.ns, f.name, 2)
	eventually(t, 30*time.Second, "every pod holds the map", func() error {
		if c := shardsAvailable(f.pn(t)); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("ShardsAvailable %+v", c)
		}
		return nil
	})
	peers := map[int]string{0: f.peers[0], 1: f.peers[1]}
	newer, err := slotmap.EvenSplit(2, 5, peers)
	must(t, err)
	body, err := json.Marshal(newer)
	must(t, err)
	req, err := http.NewRequest(http.MethodPut, "http://"+f.procs[0].HTTP+"/v1/slotmap", strings.NewReader(string(body)))
	must(t, err)
	req.Header.Set("Authorization", "Bearer "+string(f.token))
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT epoch 5: %d", resp.StatusCode)
	}
	// Nothing the operator watches changes: it sees the pod's map at its
	// next periodic look.
	eventually(t, 30*time.Second, "every pod at epoch 6", func() error {
		pn := f.pn(t)
		if pn.Status.SlotMap == nil || pn.Status.SlotMap.Epoch != 6 {
			return fmt.Errorf("status slot map %+v", pn.Status.SlotMap)
		}
		if c := shardsAvailable(pn); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("ShardsAvailable %+v", c)
		}
		for i := range 2 {
			if code, m := f.getSlotMap(t, i); code != http.StatusOK || m["epoch"] != float64(6) {
				return fmt.Errorf("pod %d holds %d %v", i, code, m)
			}
		}
		return nil
	})

	// Pod 1 comes back listening for peers elsewhere (a pod named by its
	// IP that got another one): a map of a new epoch, with the same slots
	// and the new address, goes to every pod.
	_ = f.procs[1].Cmd.Process.Kill()
	f.peers[1] = ""
	f.start(t, 1, "data-1")
	eventually(t, 30*time.Second, "every pod at epoch 7 with pod 1's new address", func() error {
		pn := f.pn(t)
		if pn.Status.SlotMap == nil || pn.Status.SlotMap.Epoch != 7 {
			return fmt.Errorf("status slot map %+v", pn.Status.SlotMap)
		}
		for i := range 2 {
			code, m := f.getSlotMap(t, i)
			peers, _ := m["peers"].(map[string]any)
			if code != http.StatusOK || m["epoch"] != float64(7) || peers["1"] != f.peers[1] {
				return fmt.Errorf("pod %d holds %d %v; pod 1 listens on %s", i, code, m, f.peers[1])
			}
		}
		return nil
	})
}

func container0(t *testing.T, sts *appsv1.StatefulSet) corev1.Container {
	t.Helper()
	if len(sts.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("containers %+v", sts.Spec.Template.Spec.Containers)
	}
	return sts.Spec.Template.Spec.Containers[0]
}

// A PushNode of one pod is what it always was: no slot map handed out or
// recorded, no per-pod status, no ShardsAvailable condition.
func TestSinglePodPushNodeHasNoSlotMap(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	f := startNode(t, loc)
	p := f.phone(t, "50005")
	pm := f.message("single", "50005", ddpushv1.KindCustom)
	pm.Spec.Data = "whole"
	must(t, k8s.Create(context.Background(), pm))
	expectCustom(t, p, "whole")
	waitPhase(t, f.ns, "single", ddpushv1.PhaseDelivered)
	pn := getPN(t, f.ns, f.name)
	if pn.Status.SlotMap != nil || len(pn.Status.Pods) != 0 || shardsAvailable(pn) != nil {
		t.Errorf("status of a single pod: slotMap %+v pods %+v ShardsAvailable %+v", pn.Status.SlotMap, pn.Status.Pods, shardsAvailable(pn))
	}
	token, err := controllers.ReadToken(context.Background(), k8s, pn)
	must(t, err)
	var none *api.NoSlotMapError
	if _, err := api.NewClient("http://"+f.proc.HTTP, token).SlotMap(context.Background()); !errors.As(err, &none) {
		t.Errorf("the node's slot map: %v; want none", err)
	}
	var pdb policyv1.PodDisruptionBudget
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: f.name}, &pdb); err == nil {
		t.Errorf("a single pod has a PodDisruptionBudget")
	}
}

// The locator the manager runs with finds a uuid's home pod by the slot
// map in the PushNode's status, and the pod's IP; without a map, pod 0.
func TestPodIPLocatorFindsTheHomePod(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	for i := range 3 {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("edge-%d", i)},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "pushnode", Image: "example.test/pushnode"}}}}
		must(t, k8s.Create(ctx, pod))
		pod.Status.PodIP = fmt.Sprintf("10.0.0.%d", 10+i)
		must(t, k8s.Status().Update(ctx, pod))
	}
	pn := newShardedPushNode(ns, "edge", 3)
	pn.Spec.Ports.HTTP = 8080
	loc := &controllers.PodIPLocator{Client: k8s}
	if _, err := loc.ForUUID(ctx, pn, userUUID("x")); err == nil {
		t.Fatalf("a sharded PushNode without a slot map in its status has a home for a uuid")
	}
	pn.Status.SlotMap = &ddpushv1.SlotMapStatus{Epoch: 1, Ranges: []ddpushv1.SlotRange{
		{From: 0, To: 341, Ordinal: 0}, {From: 342, To: 682, Ordinal: 1}, {From: 683, To: 1023, Ordinal: 2}}}
	for home, user := range usersOnEveryShard(t, 3, "ip-") {
		ep, err := loc.ForUUID(ctx, pn, userUUID(user))
		must(t, err)
		if want := fmt.Sprintf("http://10.0.0.%d:8080", 10+home); ep.URL != want || ep.Pod != fmt.Sprintf("edge-%d", home) || ep.Ordinal != home {
			t.Errorf("user %s (home %d): %+v, want %s", user, home, ep, want)
		}
	}
	if got := loc.PeerAddr(pn, 2); got != "edge-2.edge-headless."+ns+".svc:9977" {
		t.Errorf("PeerAddr = %q", got)
	}
	byIP := &controllers.PodIPLocator{Client: k8s, PeerByPodIP: true}
	if got := byIP.PeerAddr(pn, 2); got != "10.0.0.12:9977" {
		t.Errorf("PeerAddr by pod IP = %q", got)
	}
	if got := byIP.PeerAddr(pn, 5); got != "edge-5.edge-headless."+ns+".svc:9977" {
		t.Errorf("PeerAddr by pod IP of a pod without one = %q; want the DNS name", got)
	}
	single := newPushNode(ns, "edge")
	for _, user := range usersOnEveryShard(t, 3, "one-") {
		ep, err := loc.ForUUID(ctx, single, userUUID(user))
		must(t, err)
		if ep.Pod != "edge-0" {
			t.Errorf("one pod: user %s went to %s", user, ep.Pod)
		}
	}
	if _, err := loc.Pod(ctx, pn, 3); err == nil {
		t.Errorf("pod 3 of 3 was found")
	}
}

// A pod that restarts on an empty volume, while nothing else changes,
// gets the map as soon as the Pod object shows the restart: the periodic
// look is set far beyond the test, so only the Pod watch can do it.
func TestShardedPodRestartGetsTheMapAtOnce(t *testing.T) {
	loc := &testLocator{}
	startManagerOpts(t, cfg, loc, nil, func(o *controllers.Options) { o.StatusRefresh = time.Hour })
	f := startSharded(t, loc, 2)
	ctx := context.Background()
	markReadyN(t, f.ns, f.name, 2)
	// The pod the StatefulSet controller would have made (envtest runs
	// none), labelled as the template labels it.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: f.name + "-1", Labels: builders.Labels(f.pn(t))},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "pushnode", Image: "example.test/pushnode"}}}}
	must(t, k8s.Create(ctx, pod))
	eventually(t, 30*time.Second, "every pod holds the map", func() error {
		if c := shardsAvailable(f.pn(t)); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("ShardsAvailable %+v", c)
		}
		return nil
	})
	time.Sleep(time.Second) // let the reconciles of the pod's creation end

	_ = f.procs[1].Cmd.Process.Kill()
	f.start(t, 1, "data-1-empty")
	if code, _ := f.getSlotMap(t, 1); code != http.StatusNotFound {
		t.Fatalf("pod 1 on an empty volume: GET /v1/slotmap %d", code)
	}
	time.Sleep(2 * time.Second)
	if code, _ := f.getSlotMap(t, 1); code != http.StatusNotFound {
		t.Fatalf("pod 1 got the map before its Pod showed the restart (%d): the test cannot tell the watch from something else", code)
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "pushnode", Image: "example.test/pushnode", ImageID: "x", RestartCount: 1}}
	must(t, k8s.Status().Update(ctx, pod))
	eventually(t, 10*time.Second, "pod 1 holds the map again", func() error {
		if code, m := f.getSlotMap(t, 1); code != http.StatusOK || m["epoch"] != float64(1) {
			return fmt.Errorf("pod 1 holds %d %v", code, m)
		}
		return nil
	})
}
