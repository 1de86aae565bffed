//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/wire"
	"k8s.io/apimachinery/pkg/api/meta"
)

// testResharding scales a PushNode 1 -> 3 -> 5 -> 2 while app servers
// push to phones and phones heartbeat, deleting the operator's pod in the
// middle of the second change: every push answered accepted
// reaches its phone exactly once, every refused one never, every
// PushMessage created along the way ends Delivered, and the phones keep
// the address they were given at the start.
func testResharding(t *testing.T) {
	ns := namespace(t, "e2e-reshard")
	n := createNode(t, ns, "grow", "")
	ip0 := n.podIP()

	// Phones on pod 0, which every size keeps. Each has one pusher that
	// pushes one message at a time and heartbeats only between messages:
	// a heartbeat crossing a message makes the node send it again, as the
	// protocol wants, which would read as a duplicate here.
	const users = 12
	type result struct {
		outcome string // accepted, refused, unknown
		got     int
	}
	var mu sync.Mutex
	results := map[string]*result{}
	phones := make([]*phone.Phone, users)
	for i := range phones {
		u, err := wire.ParseUUID(userUUID("grow" + strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		p, err := phone.Dial("udp", ip0+":9966", u)
		if err != nil {
			t.Fatal(err)
		}
		p.AutoAck = true
		t.Cleanup(func() { p.Close() })
		phones[i] = p
	}
	apiFor := func() *api.Client { return n.api() }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, p := range phones {
		wg.Go(func() {
			c := apiFor()
			lastBeat := time.Time{}
			for round := 0; ; round++ {
				select {
				case <-stop:
					return
				default:
				}
				if time.Since(lastBeat) > 5*time.Second {
					_ = p.Heartbeat()
					lastBeat = time.Now()
					// The answer, and anything pending, before the next push.
					for {
						m, err := p.Next(300 * time.Millisecond)
						if err != nil {
							break
						}
						if m.Cmd == wire.CmdCustom {
							mu.Lock()
							if r := results[string(m.Body)]; r != nil {
								r.got++
							}
							mu.Unlock()
						}
					}
				}
				data := fmt.Sprintf("u%d-r%d", i, round)
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				_, err := c.Push(ctx, api.PushRequest{UUID: p.UUID.String(), Kind: "custom", Data: data})
				cancel()
				r := &result{outcome: "accepted"}
				var se *api.StatusError
				switch {
				case err == nil:
				case errors.As(err, &se) && (se.Code == http.StatusServiceUnavailable || se.Code == http.StatusBadRequest):
					r.outcome = "refused"
				default:
					r.outcome = "unknown"
				}
				mu.Lock()
				results[data] = r
				mu.Unlock()
				if r.outcome != "accepted" {
					time.Sleep(500 * time.Millisecond)
					continue
				}
				deadline := time.Now().Add(20 * time.Second)
				for time.Now().Before(deadline) {
					m, err := p.Next(time.Until(deadline))
					if err != nil {
						break
					}
					if m.Cmd == wire.CmdCustom {
						mu.Lock()
						if r := results[string(m.Body)]; r != nil {
							r.got++
						}
						mu.Unlock()
						if string(m.Body) == data {
							break
						}
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}

	// PushMessages too, routed by the operator to the uuid's home of the
	// moment.
	pmIndex := 0
	createMessages := func(count int) {
		var b strings.Builder
		for range count {
			fmt.Fprintf(&b, "---\n%s\n", pushMessageYAML(ns, fmt.Sprintf("rs%03d", pmIndex), "grow", "pm-user-"+strconv.Itoa(pmIndex), "General", ""))
			pmIndex++
		}
		mustApply(t, "create", b.String())
	}

	createMessages(10)
	for _, size := range []int{3, 5, 2} {
		start := time.Now()
		kubectl(t, "-n", ns, "patch", "pushnode", "grow", "--type=merge", "-p", fmt.Sprintf(`{"spec":{"replicas":%d}}`, size))
		time.Sleep(2 * time.Second)
		createMessages(10)
		if size == 5 {
			// The operator goes away mid-resharding: the next one resumes
			// from what the status records.
			eventually(t, 2*time.Minute, "a move under way", func() error {
				if got := jsonpath(t, ns, "pushnode/grow", "{.status.resharding.move.id}"); got == "" {
					return errors.New("no move recorded yet")
				}
				return nil
			})
			kubectl(t, "-n", operatorNS, "delete", "pod", "-l", "app.kubernetes.io/name=ddpush-operator", "--wait=false")
		}
		waitResharded(t, ns, "grow", size, 8*time.Minute)
		t.Logf("resharded to %d pods in %v", size, time.Since(start).Round(time.Second))
		createMessages(10)
	}
	time.Sleep(5 * time.Second)
	close(stop)
	wg.Wait()

	// The PushMessages, for phones that are offline: each was accepted,
	// at its uuid's home of the moment, and none failed.
	eventually(t, 3*time.Minute, "every PushMessage accepted", func() error {
		for _, pm := range listMessages(t, ns) {
			if pm.Status.PushID == 0 || pm.Status.Phase == string(ddpushv1.PhaseFailed) {
				return fmt.Errorf("%s: phase %q, push %d", pm.Name, pm.Status.Phase, pm.Status.PushID)
			}
		}
		return nil
	})

	// Everything accepted arrived, once; nothing refused did. Phones that
	// missed a message get it with a heartbeat now.
	for _, p := range phones {
		_ = p.Heartbeat()
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range phones {
		for {
			m, err := p.Next(min(time.Until(deadline), 2*time.Second))
			if err != nil {
				break
			}
			if m.Cmd == wire.CmdCustom {
				mu.Lock()
				if r := results[string(m.Body)]; r != nil {
					r.got++
				}
				mu.Unlock()
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	counts := map[string]int{}
	for data, r := range results {
		counts[r.outcome]++
		switch {
		case r.outcome == "accepted" && r.got != 1:
			t.Errorf("accepted push %s reached its phone %d times", data, r.got)
		case r.outcome == "refused" && r.got != 0:
			t.Errorf("refused push %s reached its phone", data)
		}
	}
	t.Logf("pushes: %d accepted, %d refused, %d unknown", counts["accepted"], counts["refused"], counts["unknown"])
	if counts["accepted"] < users {
		t.Errorf("only %d pushes accepted", counts["accepted"])
	}
	if got := n.podIP(); got != ip0 {
		t.Errorf("pod 0 went from %s to %s: its phones lost their address", ip0, got)
	}
}

// waitResharded waits until the PushNode runs size pods that hold every
// slot between them and the Resharding condition says the change is done.
func waitResharded(t *testing.T, ns, name string, size int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%s resharded to %d pods", name, size), func() error {
		var pn ddpushv1.PushNode
		decodeJSON(t, kubectl(t, "-n", ns, "get", "pushnode", name, "-o", "json"), &pn)
		st := pn.Status
		c := meta.FindStatusCondition(st.Conditions, "Resharding")
		switch {
		case c == nil || c.Status != "False":
			return fmt.Errorf("resharding: %+v", c)
		case st.Resharding != nil:
			return fmt.Errorf("resharding in progress: %+v", *st.Resharding)
		case st.SlotMap == nil:
			return errors.New("no slot map recorded")
		case int(st.ReadyReplicas) != size || len(st.Pods) != size:
			return fmt.Errorf("%d ready pods, %d in status, want %d", st.ReadyReplicas, len(st.Pods), size)
		}
		owners := map[int32]bool{}
		for _, r := range st.SlotMap.Ranges {
			owners[r.Ordinal] = true
		}
		if len(owners) != size {
			return fmt.Errorf("%d pods own slots, want %d", len(owners), size)
		}
		for _, p := range st.Pods {
			if p.MapEpoch != st.SlotMap.Epoch {
				return fmt.Errorf("pod %s holds epoch %d, the map is %d", p.Name, p.MapEpoch, st.SlotMap.Epoch)
			}
		}
		return nil
	})
}
