package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
)

// markUnready plays the StatefulSet controller when the node pod stops
// being ready.
func markUnready(t *testing.T, ns, name string) {
	t.Helper()
	ctx := context.Background()
	eventually(t, 20*time.Second, "StatefulSet not ready", func() error {
		var sts appsv1.StatefulSet
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &sts); err != nil {
			return err
		}
		sts.Status.ReadyReplicas = 0
		sts.Status.AvailableReplicas = 0
		return k8s.Status().Update(ctx, &sts)
	})
}

func waitNodeAvailable(t *testing.T, ns, name, want string) *ddpushv1.PushMessage {
	t.Helper()
	var pm *ddpushv1.PushMessage
	eventually(t, 30*time.Second, name+" NodeAvailable "+want, func() error {
		pm = getPM(t, ns, name)
		if c := condition(pm.Status.Conditions, controllers.ConditionNodeAvailable); c != want {
			return fmt.Errorf("NodeAvailable %s", c)
		}
		return nil
	})
	return pm
}

// During a node outage open messages are written once when it starts and
// once when it ends, not on every retry tick, and the end wakes them.
func TestNodeOutageWritesEachMessageOnlyWhenItsConditionChanges(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	f := startNode(t, loc)
	ctx := context.Background()

	must(t, k8s.Create(ctx, f.message("queued", "84001", ddpushv1.KindGeneral)))
	waitPhase(t, f.ns, "queued", ddpushv1.PhaseQueued)

	markUnready(t, f.ns, f.name)
	waitNodeAvailable(t, f.ns, "queued", "False/NodeNotReady")
	must(t, k8s.Create(ctx, f.message("pending", "84002", ddpushv1.KindGeneral)))
	waitNodeAvailable(t, f.ns, "pending", "False/NodeNotReady")

	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	must(t, err)
	var list ddpushv1.PushMessageList
	must(t, k8s.List(ctx, &list, client.InNamespace(f.ns)))
	for _, pm := range list.Items {
		if pm.Status.Attempts != 0 {
			t.Errorf("%s: %d attempts counted while the node was unavailable", pm.Name, pm.Status.Attempts)
		}
	}
	w, err := wc.Watch(ctx, &ddpushv1.PushMessageList{}, client.InNamespace(f.ns),
		&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
	must(t, err)
	defer w.Stop()
	writes := map[string]int{}
	collect := func(until func() bool, limit time.Duration) {
		t.Helper()
		timeout := time.After(limit)
		for !until() {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Fatal("watch ended")
				}
				if ev.Type == watch.Error {
					t.Fatalf("watch: %v", ev.Object)
				}
				pm := ev.Object.(*ddpushv1.PushMessage)
				writes[pm.Name]++
				t.Logf("%s %s: %s, NodeAvailable %s, attempts %d", ev.Type, pm.Name, pm.Status.Phase,
					condition(pm.Status.Conditions, controllers.ConditionNodeAvailable), pm.Status.Attempts)
			case <-timeout:
				return
			}
		}
	}

	// The old retry ticks came after 2, 4 and 8 s: a window this long saw
	// at least two writes per message. On a slow machine fewer ticks
	// would fit, so the window can only miss a storm, never invent one.
	collect(func() bool { return false }, 8*time.Second)
	if len(writes) != 0 {
		t.Fatalf("messages written while nothing changed: %v", writes)
	}

	// The node comes back: the PushNode watch, not a timer, wakes both.
	markReady(t, f.ns, f.name)
	var queued, pending *ddpushv1.PushMessage
	collect(func() bool {
		queued, pending = getPM(t, f.ns, "queued"), getPM(t, f.ns, "pending")
		return condition(queued.Status.Conditions, controllers.ConditionNodeAvailable) == "True/NodeAvailable" &&
			pending.Status.Phase == ddpushv1.PhaseQueued
	}, 30*time.Second)
	if c := condition(queued.Status.Conditions, controllers.ConditionNodeAvailable); c != "True/NodeAvailable" || pending.Status.Phase != ddpushv1.PhaseQueued {
		t.Fatalf("after the outage: queued NodeAvailable %s, pending phase %s", c, pending.Status.Phase)
	}
	if queued.Status.Attempts != 0 || pending.Status.Attempts != 0 {
		t.Errorf("attempts: queued %d, pending %d", queued.Status.Attempts, pending.Status.Attempts)
	}
	// The watch delivers what the reads above saw; let it catch up to
	// the queued message's state before counting.
	collect(func() bool { return writes["queued"] >= 1 }, 10*time.Second)
	if writes["queued"] != 1 {
		t.Errorf("the queued message was written %d times for one change", writes["queued"])
	}
}
