package controllers_test

import (
	"context"
	"crypto/md5"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// A change of replicas moves the records of real node processes: 2 -> 3
// -> 2 pods, after which every record is at exactly one pod with the push
// it was accepted with, and the drained pod holds nothing.
func TestReshardMovesRecordsBetweenRealPods(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	loc := &testLocator{}
	startManager(t, loc)
	ctx := context.Background()
	f := startSharded(t, loc, 2)
	key := types.NamespacedName{Namespace: f.ns, Name: f.name}
	eventually(t, 60*time.Second, "2 pods serve", func() error {
		if c := shardsAvailable(f.pn(t)); c == nil || c.Status != "True" {
			return fmt.Errorf("ShardsAvailable %+v", c)
		}
		return nil
	})
	c0 := api.NewClient("http://"+f.procs[0].HTTP, string(f.token))
	const records = 2000
	uuids := make([]string, records)
	ids := map[string]uint64{}
	for i := range uuids {
		uuids[i] = wire.UUID(md5.Sum([]byte("real-reshard" + strconv.Itoa(i)))).String()
	}
	for i := 0; i < records; i += 500 {
		res, err := c0.BulkPush(ctx, api.BulkPushRequest{UUIDs: uuids[i : i+500], Kind: "general"})
		must(t, err)
		for _, r := range res.Results {
			if r.Error != "" {
				t.Fatalf("push to %s: %s", r.UUID, r.Error)
			}
			ids[r.UUID] = r.ID
		}
	}

	// PushMessages to offline phones, accepted before the moves: they
	// stay Queued at whichever pod their uuid's slot goes to.
	const messages = 12
	for i := range messages {
		pm := &ddpushv1.PushMessage{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: fmt.Sprintf("queued-%d", i)},
			Spec: ddpushv1.PushMessageSpec{PushNodeName: f.name, UserID: fmt.Sprintf("offline-%d", i), Kind: ddpushv1.KindGeneral}}
		must(t, k8s.Create(ctx, pm))
	}
	for i := range messages {
		waitPhase(t, f.ns, fmt.Sprintf("queued-%d", i), ddpushv1.PhaseQueued)
	}
	// Every message is still Queued, followed at its uuid's home of the
	// moment (nothing mistakes the move for a replaced store), and a
	// phone that comes online at that home gets its message: Delivered.
	checkMessages := func(n int) {
		t.Helper()
		pn := f.pn(t)
		eventually(t, 60*time.Second, "messages followed at their new homes", func() error {
			for i := range messages {
				pm := getPM(t, f.ns, fmt.Sprintf("queued-%d", i))
				home := controllers.PushOrdinal(pn, pm)
				if pm.Status.Phase != ddpushv1.PhaseQueued && pm.Status.Phase != ddpushv1.PhaseDelivered {
					t.Fatalf("%s: %s %s: %s", pm.Name, pm.Status.Phase, pm.Status.Reason, pm.Status.Message)
				}
				if home >= n {
					return fmt.Errorf("%s: home %d of %d pods", pm.Name, home, n)
				}
			}
			return nil
		})
	}

	scale := func(n int) {
		setReplicas(t, f.ns, f.name, int32(n))
	}
	waitDone := func(n int) {
		t.Helper()
		eventually(t, 3*time.Minute, fmt.Sprintf("resharded to %d pods", n), func() error {
			pn := f.pn(t)
			c := meta.FindStatusCondition(pn.Status.Conditions, controllers.ConditionResharding)
			if pn.Status.Resharding != nil || c == nil || c.Reason != controllers.ReasonReshardComplete || !strings.Contains(c.Message, fmt.Sprintf("to %d pods", n)) {
				return fmt.Errorf("resharding %+v, condition %+v", pn.Status.Resharding, c)
			}
			if got := len(owners(pn.Status.SlotMap.Ranges)); got != n {
				return fmt.Errorf("%d pods own slots", got)
			}
			return nil
		})
	}
	// Every record at exactly one of the first n pods, pending the push it
	// was accepted with, asked through pod 0 (which relays to the home).
	check := func(n int) {
		t.Helper()
		var total int64
		for i, p := range f.procs {
			st, err := api.NewClient("http://"+p.HTTP, string(f.token)).Status(ctx)
			must(t, err)
			if i >= n && st.Records != 0 {
				t.Errorf("pod %d, drained, holds %d records", i, st.Records)
			}
			total += st.Records
		}
		if total != records+messages {
			t.Errorf("the pods hold %d records together, want %d (and %d of the messages' phones)", total, records+messages, messages)
		}
		for _, u := range uuids[:200] {
			c, err := c0.Client(ctx, u)
			if err != nil || len(c.Pending) != 1 || c.Pending[0].PushID != ids[u] {
				t.Fatalf("record %s: %+v, %v; want push %d pending", u, c, err, ids[u])
			}
			p, err := c0.GetPushOf(ctx, ids[u], u)
			if err != nil || p.Fate != api.FateQueued {
				t.Fatalf("push %d of %s: %+v, %v", ids[u], u, p, err)
			}
		}
	}

	// Pod 2 comes up, where its DNS name would be known beforehand.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	f.peers = append(f.peers, l.Addr().String())
	must(t, l.Close())
	f.procs = append(f.procs, nil)
	loc.setPod(key, 2, "", f.peers[2])
	scale(3)
	f.start(t, 2, "data-2")
	waitDone(3)
	check(3)
	checkMessages(3)

	scale(2)
	waitDone(2)
	check(2)
	checkMessages(2)
	// The phone of one of them comes online at its home after the moves.
	pm := getPM(t, f.ns, "queued-0")
	home := controllers.PushOrdinal(f.pn(t), pm)
	ph := f.phoneOn(t, home, "offline-0") // acks as it receives
	must(t, ph.Heartbeat())
	waitPhase(t, f.ns, "queued-0", ddpushv1.PhaseDelivered)
	if got := getPM(t, f.ns, "queued-0"); got.Status.NodePod != fmt.Sprintf("%s-%d", f.name, home) {
		t.Errorf("queued-0 delivered at home %d, status names %s", home, got.Status.NodePod)
	}
	eventually(t, 30*time.Second, "every pod holds the final map", func() error {
		pn := f.pn(t)
		for i := range 2 {
			sm, err := api.NewClient("http://"+f.procs[i].HTTP, string(f.token)).SlotMap(ctx)
			if err != nil || int64(sm.Epoch) != pn.Status.SlotMap.Epoch {
				return fmt.Errorf("pod %d holds epoch %d (%v), recorded %d", i, sm.Epoch, err, pn.Status.SlotMap.Epoch)
			}
		}
		return nil
	})
}
