package controllers_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// nodeProxy stands between the operator and a node process, so that the
// process can be replaced under one address, and counts the lookups of
// single pushes (GET /v1/pushes/{id}) the operator makes.
type nodeProxy struct {
	srv     *httptest.Server
	mu      sync.Mutex
	target  *url.URL
	lookups atomic.Int64
	events  atomic.Int64
}

func startProxy(t *testing.T, target string) *nodeProxy {
	t.Helper()
	p := &nodeProxy{}
	p.point(t, target)
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		p.mu.Lock()
		r.SetURL(p.target)
		p.mu.Unlock()
	}, ErrorLog: log.New(io.Discard, "", 0)} // a node being replaced is expected to be unreachable for a while
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, api.PathPushes+"/"):
			p.lookups.Add(1)
		case r.Method == http.MethodGet && r.URL.Path == api.PathEvents:
			p.events.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// point sends what comes next to the node process at hostport.
func (p *nodeProxy) point(t *testing.T, hostport string) {
	t.Helper()
	u, err := url.Parse("http://" + hostport)
	must(t, err)
	p.mu.Lock()
	p.target = u
	p.mu.Unlock()
}

// tokenFile writes the operator's token for a PushNode into dir.
func tokenFile(t *testing.T, f *nodeFixture, dir string) string {
	t.Helper()
	var sec corev1.Secret
	must(t, k8s.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: f.name + "-api-token"}, &sec))
	path := filepath.Join(dir, "operator-token")
	must(t, os.WriteFile(path, sec.Data["token"], 0o600))
	return path
}

// startNodeBehindProxy is startNode with the operator reaching the node
// through a proxy, on a data directory the test knows. It waits until the
// event follower reads through the proxy: it has then started, and has
// looked at what the node held when it did.
func startNodeBehindProxy(t *testing.T, loc *testLocator) (*nodeFixture, *nodeProxy, string) {
	t.Helper()
	ctx := context.Background()
	f := &nodeFixture{ns: namespace(t), name: "node", loc: loc}
	must(t, k8s.Create(ctx, newPushNode(f.ns, f.name)))
	eventually(t, 20*time.Second, "token secret", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: f.name + "-api-token"}, &corev1.Secret{})
	})
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	f.proc = nodetest.StartProcess(t, data, "--api-token-file", tokenFile(t, f, dir))
	px := startProxy(t, f.proc.HTTP)
	loc.set(types.NamespacedName{Namespace: f.ns, Name: f.name}, px.srv.URL)
	markReady(t, f.ns, f.name)
	eventually(t, 90*time.Second, "follower reading through the proxy", func() error {
		if px.events.Load() == 0 {
			return fmt.Errorf("no events read through the proxy yet")
		}
		return nil
	})
	return f, px, data
}

func waitPhaseWithin(t *testing.T, d time.Duration, ns, name string, want ddpushv1.PushMessagePhase) *ddpushv1.PushMessage {
	t.Helper()
	var pm *ddpushv1.PushMessage
	eventually(t, d, name+" "+string(want), func() error {
		pm = getPM(t, ns, name)
		if pm.Status.Phase.Finished() && pm.Status.Phase != want {
			t.Fatalf("%s ended %s (%s: %s), want %s", name, pm.Status.Phase, pm.Status.Reason, pm.Status.Message, want)
		}
		if pm.Status.Phase != want {
			return fmt.Errorf("phase %q (%s: %s)", pm.Status.Phase, pm.Status.Reason, pm.Status.Message)
		}
		return nil
	})
	return pm
}

func dialPhone(t *testing.T, addr, user string) *phone.Phone {
	t.Helper()
	u, err := wire.ParseUUID(userUUID(user))
	must(t, err)
	p, err := phone.Dial("udp", addr, u)
	must(t, err)
	t.Cleanup(func() { p.Close() })
	must(t, p.Heartbeat())
	return p
}

// A node whose store is replaced by an empty one hands out the same push
// ids again. A message still open on the old store must not take the fate
// of the new store's push with its id: here that push was acknowledged,
// and the message ends Failed (NodeStoreReplaced), not Delivered.
func TestStoreReplacedWhileMessageOpenIsNotGivenAnotherPushsFate(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	f, px, _ := startNodeBehindProxy(t, loc)
	ctx := context.Background()

	victim := f.message("victim", "81001", ddpushv1.KindCustom)
	victim.Spec.Data = "for the first store"
	must(t, k8s.Create(ctx, victim))
	got := waitPhase(t, f.ns, "victim", ddpushv1.PhaseQueued)
	id, inc := uint64(got.Status.PushID), got.Status.NodeIncarnation
	if id == 0 || len(inc) != 32 {
		t.Fatalf("submitted message has push id %d and node incarnation %q", id, inc)
	}

	// The store is replaced: the node comes back on a new, empty data
	// directory. The operator cannot reach it until the push with the
	// victim's id has been made there and acknowledged.
	f.proc.Signal(t, syscall.SIGTERM, 20*time.Second)
	dir := t.TempDir()
	proc := nodetest.StartProcess(t, filepath.Join(dir, "data"), "--api-token-file", tokenFile(t, f, dir))
	c := api.NewClient("http://"+proc.HTTP, mustToken(t, f))
	st, err := c.Status(ctx)
	must(t, err)
	if st.Incarnation == inc || st.Incarnation == "" {
		t.Fatalf("the new store has incarnation %q, the old one %q", st.Incarnation, inc)
	}
	for n := uint64(1); n < id; n++ {
		_, err := c.Push(ctx, api.PushRequest{UUID: userUUID("81003"), Kind: api.KindGeneral})
		must(t, err)
	}
	other := dialPhone(t, proc.Client, "81002")
	var p api.Push
	eventually(t, 20*time.Second, "other client online", func() error {
		ci, err := c.Client(ctx, userUUID("81002"))
		if err != nil || !ci.Online {
			return fmt.Errorf("online %v, %v", ci.Online, err)
		}
		return nil
	})
	p, err = c.Push(ctx, api.PushRequest{UUID: userUUID("81002"), Kind: api.KindCustom, Data: "someone else's", Key: "someone-else"})
	must(t, err)
	if p.ID != id {
		t.Fatalf("the new store gave id %d, want the victim's %d", p.ID, id)
	}
	expectCustom(t, other, "someone else's")
	eventually(t, 20*time.Second, "other push acknowledged", func() error {
		got, err := c.GetPush(ctx, id)
		if err != nil || got.Fate != api.FateAcknowledged {
			return fmt.Errorf("fate %q, %v", got.Fate, err)
		}
		return nil
	})

	px.point(t, proc.HTTP)
	got = waitPhaseWithin(t, 3*time.Minute, f.ns, "victim", ddpushv1.PhaseFailed)
	if got.Status.Reason != controllers.ReasonNodeStoreReplaced || got.Status.DeliveredAt != nil {
		t.Fatalf("victim: %s: %s (deliveredAt %v)", got.Status.Reason, got.Status.Message, got.Status.DeliveredAt)
	}
	if got.Status.NodeIncarnation != inc || uint64(got.Status.PushID) != id {
		t.Fatalf("victim's status now names push %d of %q, submitted as %d of %q", got.Status.PushID, got.Status.NodeIncarnation, id, inc)
	}
	// And it was not pushed again to the new store.
	if _, err := c.Client(ctx, userUUID("81001")); err == nil {
		t.Fatalf("the new store has a record for the victim's client: the message was pushed again")
	}
}

// A node restarting on its store keeps its incarnation: the event
// follower resumes from its cursor, so no open message looks its push up
// again, and what happened meanwhile still arrives through the events.
func TestFollowerResumesAfterNodeRestartWithoutLookups(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	f, px, data := startNodeBehindProxy(t, loc)
	ctx := context.Background()

	users := []string{"82001", "82002", "82003"}
	for _, u := range users {
		pm := f.message("m-"+u, u, ddpushv1.KindCustom)
		pm.Spec.Data = "hello " + u
		must(t, k8s.Create(ctx, pm))
	}
	for _, u := range users {
		waitPhase(t, f.ns, "m-"+u, ddpushv1.PhaseQueued)
	}
	before := px.lookups.Load()
	inc := getPM(t, f.ns, "m-"+users[0]).Status.NodeIncarnation

	f.proc.Signal(t, syscall.SIGTERM, 20*time.Second)
	f.proc = nodetest.StartProcess(t, data, "--api-token-file", tokenFile(t, f, t.TempDir()))
	px.point(t, f.proc.HTTP)
	st, err := api.NewClient("http://"+f.proc.HTTP, mustToken(t, f)).Status(ctx)
	must(t, err)
	if st.Incarnation != inc {
		t.Fatalf("the node restarted on its store with incarnation %q, was %q", st.Incarnation, inc)
	}

	// Each phone comes online on the restarted node and acknowledges: the
	// messages learn it from the events alone.
	for _, u := range users {
		p := dialPhone(t, f.proc.Client, u)
		expectCustom(t, p, "hello "+u)
		waitPhaseWithin(t, 2*time.Minute, f.ns, "m-"+u, ddpushv1.PhaseDelivered)
	}
	if n := px.lookups.Load() - before; n != 0 {
		t.Fatalf("%d pushes were looked up one by one after the node restarted on the same store", n)
	}
}

func mustToken(t *testing.T, f *nodeFixture) string {
	t.Helper()
	var sec corev1.Secret
	must(t, k8s.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: f.name + "-api-token"}, &sec))
	return string(sec.Data["token"])
}

// A node restored from a copy of its store keeps the copy's incarnation
// but its log ends before the follower's cursor: that gap makes every
// open message look its push up, and one the copy does not hold is lost
// (PushLost: the store is the same one, only older).
func TestRestoredStoreBehindTheCursorResyncs(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	f, px, data := startNodeBehindProxy(t, loc)
	ctx := context.Background()

	// A copy of the store, taken while no node runs on it.
	f.proc.Signal(t, syscall.SIGTERM, 20*time.Second)
	db := filepath.Join(data, "pushnode.db")
	backup, err := os.ReadFile(db)
	must(t, err)
	f.proc = nodetest.StartProcess(t, data, "--api-token-file", tokenFile(t, f, t.TempDir()))
	px.point(t, f.proc.HTTP)

	pm := f.message("after-copy", "83001", ddpushv1.KindGeneral)
	must(t, k8s.Create(ctx, pm))
	got := waitPhase(t, f.ns, "after-copy", ddpushv1.PhaseQueued)
	inc := got.Status.NodeIncarnation

	// The store is put back to the copy: same incarnation, shorter log,
	// no push for the message.
	f.proc.Signal(t, syscall.SIGTERM, 20*time.Second)
	must(t, os.WriteFile(db, backup, 0o600))
	f.proc = nodetest.StartProcess(t, data, "--api-token-file", tokenFile(t, f, t.TempDir()))
	st, err := api.NewClient("http://"+f.proc.HTTP, mustToken(t, f)).Status(ctx)
	must(t, err)
	if st.Incarnation != inc {
		t.Fatalf("the restored copy has incarnation %q, the store had %q", st.Incarnation, inc)
	}
	px.point(t, f.proc.HTTP)
	got = waitPhaseWithin(t, 2*time.Minute, f.ns, "after-copy", ddpushv1.PhaseFailed)
	if got.Status.Reason != "PushLost" {
		t.Fatalf("after-copy: %s: %s", got.Status.Reason, got.Status.Message)
	}
}
