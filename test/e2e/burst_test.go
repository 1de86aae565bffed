//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// testBurst creates 1,000 PushMessages (ten Custom messages for each of
// 100 users) in ten batches, deletes the operator's pod after the fourth
// batch and the node's pod after the seventh, then brings the phones
// online. Every message must end in its true phase: the one the node gives
// its push, exactly one Delivered per user (the last of its messages the
// node accepted; the others Superseded), and no push made twice.
func testBurst(t *testing.T) {
	const users, perUser, batch = 100, 10, 100
	total := users * perUser
	ns := namespace(t, "e2e-burst")
	n := createNode(t, ns, "burst", "")
	userOf := func(i int) string { return strconv.Itoa(50000 + i%users) }

	for start := 0; start < total; start += batch {
		var b strings.Builder
		for i := start; i < start+batch; i++ {
			fmt.Fprintf(&b, "---\n%s\n", pushMessageYAML(ns, fmt.Sprintf("b%04d", i), "burst", userOf(i), "Custom", fmt.Sprintf("  data: m%04d", i)))
		}
		mustApply(t, "create", b.String())
		switch start / batch {
		case 3:
			kubectl(t, "-n", operatorNS, "delete", "pod", "-l", "app.kubernetes.io/name=ddpush-operator", "--wait=false")
		case 6:
			kubectl(t, "-n", ns, "delete", "pod", "burst-0", "--wait=false")
		}
	}
	kubectl(t, "-n", operatorNS, "rollout", "status", "deployment", "--timeout=120s")
	kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "--timeout=120s", "pod/burst-0")

	// Every message accepted by the node (none left Pending) before any
	// phone is online: Queued, or already Superseded by a later one.
	eventually(t, 5*time.Minute, "every message accepted", func() error {
		waiting := 0
		for _, pm := range listMessages(t, ns) {
			if pm.Status.PushID == 0 {
				waiting++
			}
		}
		if waiting > 0 {
			return fmt.Errorf("%d of %d not accepted yet", waiting, total)
		}
		return nil
	})

	// The phones come online (at the new pod's address) and ack.
	got := map[string]string{}
	phones := map[string]*phone.Phone{}
	for u := range users {
		user := userOf(u)
		phones[user] = n.phoneFor(user)
	}
	eventually(t, 3*time.Minute, "every message finished", func() error {
		for user, p := range phones {
			for {
				select {
				case m := <-p.Messages():
					if m.Cmd == wire.CmdCustom {
						got[user] = string(m.Body)
					}
					continue
				default:
				}
				break
			}
			_ = p.Heartbeat()
		}
		open := 0
		for _, pm := range listMessages(t, ns) {
			if !finishedPhase(pm.Status.Phase) {
				open++
			}
		}
		if open > 0 {
			return fmt.Errorf("%d of %d still open", open, total)
		}
		return nil
	})

	// A phone may have been handed its message after its last drain above
	// (the check then found every message finished): read what is left.
	for user, p := range phones {
		for got[user] == "" {
			m, err := p.Next(10 * time.Second)
			if err != nil {
				break
			}
			if m.Cmd == wire.CmdCustom {
				got[user] = string(m.Body)
			}
		}
	}

	// The truth is on the node: each message's phase is its push's fate.
	c := n.api()
	ctx := context.Background()
	delivered := map[string]string{}
	for _, pm := range listMessages(t, ns) {
		p, err := c.GetPush(ctx, uint64(pm.Status.PushID))
		if err != nil {
			t.Fatalf("%s: push %d: %v", pm.Name, pm.Status.PushID, err)
		}
		want := map[string]string{api.FateAcknowledged: "Delivered", api.FateSuperseded: "Superseded"}[p.Fate]
		if pm.Status.Phase != want || p.Key != pm.UID {
			t.Errorf("%s: phase %s, but its push %d on the node is %s (key %q, the message's UID %q)", pm.Name, pm.Status.Phase, p.ID, p.Fate, p.Key, pm.UID)
		}
		if pm.Status.Phase == "Delivered" {
			if other, dup := delivered[pm.Spec.UserID]; dup {
				t.Errorf("user %s: both %s and %s Delivered", pm.Spec.UserID, other, pm.Name)
			}
			delivered[pm.Spec.UserID] = pm.Name
			if want := "m" + strings.TrimPrefix(pm.Name, "b"); got[pm.Spec.UserID] != want {
				t.Errorf("user %s: the phone last received %q, but %s (%s) is the Delivered one", pm.Spec.UserID, got[pm.Spec.UserID], pm.Name, want)
			}
		}
	}
	if len(delivered) != users {
		t.Errorf("%d users have a Delivered message, want %d", len(delivered), users)
	}
	// Exactly once: the node made one push per message, whatever the
	// restarts (a fresh store: push ids start at 1).
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LastPushID != uint64(total) {
		t.Errorf("the node made %d pushes for %d messages", st.LastPushID, total)
	}
}

type burstMessage struct {
	Name string `json:"-"`
	UID  string `json:"-"`
	Spec struct {
		UserID string `json:"userId"`
	} `json:"spec"`
	Status struct {
		Phase  string `json:"phase"`
		PushID int64  `json:"pushId"`
	} `json:"status"`
}

func listMessages(t *testing.T, ns string) []burstMessage {
	t.Helper()
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
				UID  string `json:"uid"`
			} `json:"metadata"`
			burstMessage
		} `json:"items"`
	}
	decodeJSON(t, kubectl(t, "-n", ns, "get", "pushmessages", "-o", "json"), &list)
	out := make([]burstMessage, len(list.Items))
	for i, it := range list.Items {
		out[i] = it.burstMessage
		out[i].Name, out[i].UID = it.Metadata.Name, it.Metadata.UID
	}
	return out
}

func finishedPhase(p string) bool {
	switch p {
	case "Delivered", "Superseded", "Expired", "Failed":
		return true
	}
	return false
}
