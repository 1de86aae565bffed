//go:build e2e

package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// homeOf is the ordinal of the pod owning user's uuid when the slots are
// split evenly between n pods, as the operator splits them.
func homeOf(t *testing.T, n int, user string) int {
	t.Helper()
	peers := map[int]string{}
	for i := range n {
		peers[i] = fmt.Sprintf("p%d:1", i)
	}
	m, err := slotmap.EvenSplit(n, 1, peers)
	if err != nil {
		t.Fatal(err)
	}
	u, err := wire.ParseUUID(userUUID(user))
	if err != nil {
		t.Fatal(err)
	}
	return m.OwnerOf(u)
}

// phoneOn connects a phone for user to pod ordinal of the node.
func (n *node) phoneOn(ordinal int, user string) *phone.Phone {
	n.t.Helper()
	u, err := wire.ParseUUID(userUUID(user))
	if err != nil {
		n.t.Fatal(err)
	}
	pod := fmt.Sprintf("pod/%s-%d", n.name, ordinal)
	p, err := phone.Dial("udp", jsonpath(n.t, n.ns, pod, "{.status.podIP}")+":9966", u)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { p.Close() })
	if err := p.Heartbeat(); err != nil {
		n.t.Fatal(err)
	}
	return p
}

// testSharded: a PushNode of three pods takes PushMessages for uuids on
// every shard to Delivered, to phones talking to pods that are not their
// homes, through a stream during which one pod is deleted and recreated
// by its StatefulSet.
func testSharded(t *testing.T) {
	ns := namespace(t, "e2e-sharded")
	n := createNode(t, ns, "trio", "  replicas: 3\n")
	waitJSONPath(t, 120*time.Second, ns, "pushnode/trio", `{.status.conditions[?(@.type=="ShardsAvailable")].status}`, "True")
	kubectl(t, "-n", ns, "get", "poddisruptionbudget/trio")
	// With pods named by IP, the epoch grows as they get their IPs: what
	// counts is that every pod holds the one recorded.
	epoch := jsonpath(t, ns, "pushnode/trio", "{.status.slotMap.epoch}")
	if held := jsonpath(t, ns, "pushnode/trio", "{.status.pods[*].mapEpoch}"); epoch == "" || held != strings.TrimSpace(strings.Repeat(epoch+" ", 3)) {
		t.Fatalf("slot map epoch %q, pods hold %q", epoch, held)
	}

	// One user per shard and round: a second Custom push to the same
	// phone could supersede the first before its ack.
	const rounds, deleteAfter = 6, 1
	users := make([][]string, 3)
	for i := 0; len(users[0]) < rounds || len(users[1]) < rounds || len(users[2]) < rounds; i++ {
		u := "sh" + strconv.Itoa(i)
		if h := homeOf(t, 3, u); len(users[h]) < rounds {
			users[h] = append(users[h], u)
		}
	}
	// Every phone talks to a pod that is not its home, which relays what
	// the phone sends and what its home has for it.
	front := func(shard int) int { return (shard + 1) % 3 }
	phones := make([][]*phone.Phone, 3)
	for shard := range 3 {
		for _, u := range users[shard] {
			phones[shard] = append(phones[shard], n.phoneOn(front(shard), u))
		}
	}
	name := func(round, shard int) string { return fmt.Sprintf("r%d-s%d", round, shard) }
	uid := jsonpath(t, ns, "pod/trio-1", "{.metadata.uid}")
	for round := range rounds {
		for shard := range 3 {
			mustApply(t, "create", pushMessageYAML(ns, name(round, shard), "trio", users[shard][round], "Custom", "  data: "+name(round, shard)))
		}
		if round == deleteAfter {
			kubectl(t, "-n", ns, "delete", "pod", "trio-1", "--wait=false")
		}
	}
	// Shard 2 (home pod 2, phones on pod 0) does not wait for pod 1.
	for round := range rounds {
		for _, shard := range []int{2} {
			expectCustom(t, phones[shard][round], name(round, shard))
			waitPhase(t, ns, name(round, shard), "Delivered")
		}
	}
	eventually(t, 90*time.Second, "trio-1 recreated", func() error {
		if u := jsonpath(t, ns, "pod/trio-1", "{.metadata.uid}"); u == "" || u == uid {
			return fmt.Errorf("pod uid %q", u)
		}
		return nil
	})
	kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "--timeout=90s", "pod/trio-1")
	waitJSONPath(t, 90*time.Second, ns, "pushnode/trio", `{.status.conditions[?(@.type=="ShardsAvailable")].status}`, "True")
	// Shard 0's phones talked to the pod that went, and shard 1's home is
	// the pod that went: with their next heartbeat (to the new pod 1, and
	// through pod 2 to it) what waits for them is sent again. A message
	// handed over before the pod went may have been acknowledged already,
	// so what counts is the phase.
	for _, shard := range []int{0, 1} {
		for _, u := range users[shard] {
			n.phoneOn(front(shard), u)
		}
	}
	for round := range rounds {
		for shard := range 3 {
			waitPhase(t, ns, name(round, shard), "Delivered")
			if pod := jsonpath(t, ns, "pm/"+name(round, shard), "{.status.nodePod}"); pod != fmt.Sprintf("trio-%d", shard) {
				t.Errorf("%s went to %s, not its home", name(round, shard), pod)
			}
		}
	}
	out := kubectl(t, "-n", ns, "get", "pn", "trio", "-o", "wide")
	if !strings.Contains(out, "3/3") {
		t.Errorf("kubectl get pn -o wide:\n%s", out)
	}
}
