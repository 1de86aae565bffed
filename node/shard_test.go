package node_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/pusher"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// startShards starts n pods of one PushNode on loopback and hands them
// an even slot map.
func startShards(t *testing.T, n int) ([]*nodetest.Node, slotmap.Map) {
	t.Helper()
	return nodetest.StartShards(t, n, 1, nil)
}

func putMap(t *testing.T, p *nodetest.Node, m any) (int, string) {
	t.Helper()
	var body []byte
	switch v := m.(type) {
	case []byte:
		body = v
	case string:
		body = []byte(v)
	default:
		var err error
		if body, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	return httpDo(t, p, http.MethodPut, api.PathSlotMap, body)
}

func httpDo(t *testing.T, p *nodetest.Node, method, path string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+p.HTTPAddr().String()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+nodetest.Token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// uuidHomedOn finds a uuid whose home is ordinal o.
func uuidHomedOn(t testing.TB, m slotmap.Map, o int, salt string) wire.UUID {
	for i := range 100000 {
		u := wire.UUID(md5.Sum([]byte(salt + strconv.Itoa(i))))
		if m.OwnerOf(u) == o {
			return u
		}
	}
	t.Fatalf("no uuid homed on %d", o)
	return wire.UUID{}
}

// next waits for the next message of cmd, skipping 0x00 heartbeat answers.
func next(t *testing.T, ph *phone.Phone, cmd byte) phone.Message {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		msg, err := ph.Next(time.Until(deadline))
		if err != nil {
			break
		}
		if msg.Cmd == cmd {
			return msg
		}
	}
	t.Fatalf("phone %s: no 0x%02x within 5s", ph.UUID, cmd)
	return phone.Message{}
}

// TestShardedPodsRelay runs three pods with one map: phones on every pod
// for uuids homed on every pod, over UDP and TCP, pushed through every
// pod's 9999 and HTTP API, see exactly what one node would give them.
func TestShardedPodsRelay(t *testing.T) {
	pods, m := startShards(t, 3)
	ctx := context.Background()
	for front := range pods {
		for home := range pods {
			for _, network := range []string{"udp", "tcp"} {
				name := fmt.Sprintf("front%d-home%d-%s", front, home, network)
				t.Run(name, func(t *testing.T) {
					u := uuidHomedOn(t, m, home, name)
					ph, err := phone.Dial(network, pods[front].ClientAddr().String(), u)
					if err != nil {
						t.Fatal(err)
					}
					defer ph.Close()
					ph.AutoAck = false
					// The first heartbeat creates the record at the home.
					nodetest.Eventually(t, 5*time.Second, func() error {
						if err := ph.Heartbeat(); err != nil {
							return err
						}
						c, err := pods[(front+1)%len(pods)].API.Client(ctx, u.String())
						if err != nil {
							return err
						}
						if !c.Online {
							return errors.New("not online yet")
						}
						return nil
					})
					// A general push through a third pod's 9999.
					entry := pods[(front+2)%len(pods)]
					ps, err := pusher.Dial(entry.PushAddr().String(), 5*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					defer ps.Close()
					if err := ps.General(u); err != nil {
						t.Fatalf("9999 push through pod %d: %v", (front+2)%len(pods), err)
					}
					msg := next(t, ph, wire.CmdGeneral)
					if err := ph.Ack(msg); err != nil {
						t.Fatal(err)
					}
					// Custom pushes over HTTP at the front: the second
					// replaces the first, and a heartbeat resends it.
					p1, err := pods[front].API.Push(ctx, api.PushRequest{UUID: u.String(), Kind: "custom", Data: "one"})
					if err != nil {
						t.Fatal(err)
					}
					if got, _ := slotmap.OrdinalOfID(p1.ID); got != home {
						t.Fatalf("push id %d names pod %d, home is %d", p1.ID, got, home)
					}
					if p1.Incarnation != "" && front != home {
						t.Fatalf("a relayed push carries the front's store incarnation %q", p1.Incarnation)
					}
					if got := next(t, ph, wire.CmdCustom); string(got.Body) != "one" {
						t.Fatalf("got %q", got.Body)
					}
					p2, err := pods[(front+1)%len(pods)].API.Push(ctx, api.PushRequest{UUID: u.String(), Kind: "custom", Data: "two"})
					if err != nil {
						t.Fatal(err)
					}
					if got := next(t, ph, wire.CmdCustom); string(got.Body) != "two" {
						t.Fatalf("got %q", got.Body)
					}
					if err := ph.Heartbeat(); err != nil {
						t.Fatal(err)
					}
					got := next(t, ph, wire.CmdCustom)
					if string(got.Body) != "two" {
						t.Fatalf("resent %q", got.Body)
					}
					if err := ph.Ack(got); err != nil {
						t.Fatal(err)
					}
					// Every pod answers the fates, from the home's store.
					nodetest.Eventually(t, 5*time.Second, func() error {
						for i, p := range pods {
							a, err := p.API.GetPush(ctx, p1.ID)
							if err != nil {
								return fmt.Errorf("pod %d: %w", i, err)
							}
							b, err := p.API.GetPush(ctx, p2.ID)
							if err != nil {
								return fmt.Errorf("pod %d: %w", i, err)
							}
							if a.Fate != "superseded" || b.Fate != "acknowledged" {
								return fmt.Errorf("pod %d: fates %s, %s", i, a.Fate, b.Fate)
							}
						}
						return nil
					})
				})
			}
		}
	}
}

// TestSlotMapAPI covers PUT and GET /v1/slotmap and the owner lookup:
// what is refused and why, epochs that only move forward, and a map that
// outlives a restart.
func TestSlotMapAPI(t *testing.T) {
	plain := nodetest.Start(t, nil)
	if code, body := httpDo(t, plain, http.MethodGet, api.PathSlotMap, nil); code != http.StatusNotFound || !bytes.Contains([]byte(body), []byte("serves every slot")) {
		t.Fatalf("GET on a whole node: %d %s", code, body)
	}
	m1, _ := slotmap.EvenSplit(2, 1, map[int]string{0: "127.0.0.1:1", 1: "127.0.0.1:2"})
	if code, body := putMap(t, plain, m1); code != http.StatusConflict || !bytes.Contains([]byte(body), []byte("--peer-addr")) {
		t.Fatalf("PUT on a whole node: %d %s", code, body)
	}

	dir := t.TempDir()
	cfg := nodetest.Config(t, dir)
	cfg.PeerAddr, cfg.Ordinal = "127.0.0.1:0", 0
	pod := nodetest.StartConfig(t, cfg)
	if code, body := httpDo(t, pod, http.MethodGet, api.PathSlotMap, nil); code != http.StatusNotFound || !bytes.Contains([]byte(body), []byte(`"self":0`)) {
		t.Fatalf("GET before any map: %d %s", code, body)
	}
	// Before its first map a pod is home of nothing: not ready, pushes
	// refused, phone packets dropped and counted.
	if code, body := httpDo(t, pod, http.MethodGet, api.PathReadyz, nil); code != http.StatusServiceUnavailable || !strings.Contains(body, "no slot map") {
		t.Fatalf("readyz before any map: %d %s", code, body)
	}
	early := wire.UUID(md5.Sum([]byte("early")))
	if _, err := pod.API.Push(context.Background(), api.PushRequest{UUID: early.String(), Kind: "general"}); err == nil || !strings.Contains(err.Error(), "no slot map") {
		t.Fatalf("push before any map: %v", err)
	}
	eph, err := phone.Dial("udp", pod.ClientAddr().String(), early)
	if err != nil {
		t.Fatal(err)
	}
	defer eph.Close()
	nodetest.Eventually(t, 5*time.Second, func() error {
		_ = eph.Heartbeat()
		if n := pod.Core().Stats().DropsByName()["no_slot_map"]; n == 0 {
			return errors.New("no drop counted")
		}
		return nil
	})
	if pod.Core().Records() != 0 {
		t.Fatalf("a pod without a map took a record")
	}
	for _, bad := range []string{``, `null`, `{}`, `[]`, `{"epoch":1}`, `{"epoch":0,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"0":"a:1"}}`,
		`{"epoch":1,"ranges":[{"from":0,"to":1022,"ordinal":0}],"peers":{"0":"a:1"}}`,
		`{"epoch":1,"ranges":[{"from":0,"to":1023,"ordinal":1}],"peers":{"0":"a:1"}}`,
		`{"epoch":1,"ranges":[{"from":0,"to":1023,"ordinal":512}],"peers":{"512":"a:1"}}`,
		`{"epoch":1,"ranges":[{"from":0,"to":1024,"ordinal":0}],"peers":{"0":"a:1"}}`,
		`{"epoch":-1,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"0":"a:1"}}`,
		`{"epoch":1,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"0":""}}`,
		`{"epoch":18446744073709551615,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"0":"a:1"}}`,
		`{"epoch":1,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"0":"a b:1"}}`} {
		code, body := putMap(t, pod, bad)
		if code != http.StatusBadRequest {
			t.Errorf("PUT %s: %d %s, want 400", bad, code, body)
		}
	}
	if code, _ := httpDo(t, pod, http.MethodGet, api.PathSlotMap, nil); code != http.StatusNotFound {
		t.Fatalf("a refused map was installed")
	}
	peers := map[int]string{0: pod.Shard().PeerAddr(), 1: "127.0.0.1:9"}
	m2, _ := slotmap.EvenSplit(2, 2, peers)
	if code, body := putMap(t, pod, m2); code != http.StatusOK || !bytes.Contains([]byte(body), []byte(`"epoch":2`)) || !bytes.Contains([]byte(body), []byte(`"self":0`)) {
		t.Fatalf("PUT epoch 2: %d %s", code, body)
	}
	if code, body := putMap(t, pod, m2); code != http.StatusOK {
		t.Fatalf("PUT the same map again: %d %s", code, body)
	}
	older, _ := slotmap.EvenSplit(2, 1, peers)
	if code, body := putMap(t, pod, older); code != http.StatusConflict || !bytes.Contains([]byte(body), []byte("newer")) {
		t.Fatalf("PUT an older epoch: %d %s", code, body)
	}
	other, _ := slotmap.EvenSplit(3, 2, map[int]string{0: peers[0], 1: peers[1], 2: "127.0.0.1:10"})
	if code, body := putMap(t, pod, other); code != http.StatusConflict || !bytes.Contains([]byte(body), []byte("new epoch")) {
		t.Fatalf("PUT another map of the same epoch: %d %s", code, body)
	}
	moved, _ := slotmap.New(3, []slotmap.Range{{From: 0, To: 99, Ordinal: 1}, {From: 100, To: 1023, Ordinal: 0}}, peers)
	if code, body := putMap(t, pod, moved); code != http.StatusConflict || !strings.Contains(body, "slot move") {
		t.Fatalf("PUT a map that moves slots: %d %s", code, body)
	}
	readdressed, _ := slotmap.New(3, m2.Spec().Ranges, map[int]string{0: peers[0], 1: "127.0.0.1:11"})
	if code, body := putMap(t, pod, readdressed); code != http.StatusOK {
		t.Fatalf("PUT a map with a new address: %d %s", code, body)
	}
	m2 = readdressed
	var owner api.SlotOwner
	u := uuidHomedOn(t, m2, 1, "owner")
	code, body := httpDo(t, pod, http.MethodGet, api.PathSlotOwner+"?uuid="+u.String(), nil)
	if err := json.Unmarshal([]byte(body), &owner); err != nil || code != http.StatusOK || owner.Ordinal != 1 || owner.Peer != "127.0.0.1:11" || owner.Epoch != 3 || owner.Slot != int(slotmap.Slot(u)) {
		t.Fatalf("owner: %d %s", code, body)
	}
	uid := wire.UUID(md5.Sum([]byte("alice")))
	code, body = httpDo(t, pod, http.MethodGet, api.PathSlotOwner+"?userId=alice", nil)
	if err := json.Unmarshal([]byte(body), &owner); err != nil || code != http.StatusOK || owner.UUID != uid.String() || owner.Ordinal != m2.OwnerOf(uid) {
		t.Fatalf("owner by user id: %d %s", code, body)
	}
	for _, q := range []string{"", "?uuid=zz", "?uuid=" + u.String() + "&userId=alice"} {
		if code, body := httpDo(t, pod, http.MethodGet, api.PathSlotOwner+q, nil); code != http.StatusBadRequest {
			t.Errorf("owner%s: %d %s, want 400", q, code, body)
		}
	}
	// Pod 1 does not exist: its pushes are refused, never accepted.
	if _, err := pod.API.Push(context.Background(), api.PushRequest{UUID: u.String(), Kind: "general"}); err == nil || !bytes.Contains([]byte(err.Error()), []byte("503")) {
		t.Fatalf("push to an unreachable home: %v", err)
	}
	ps, err := pusher.Dial(pod.PushAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.General(u); !errors.Is(err, pusher.ErrRejected) {
		t.Fatalf("9999 push to an unreachable home: %v", err)
	}
	ps.Close()
	st, err := pod.API.Status(context.Background())
	if err != nil || st.SlotMap == nil || st.SlotMap.Epoch != 3 || st.SlotMap.Slots != m2.SlotCount(0) || len(st.Peers) != 1 || st.Peers[0].Up {
		t.Fatalf("status: %+v %+v %v", st.SlotMap, st.Peers, err)
	}

	// The map outlives a restart.
	pod.Stop(t)
	pod = nodetest.StartConfig(t, cfg)
	code, body = httpDo(t, pod, http.MethodGet, api.PathSlotMap, nil)
	if code != http.StatusOK || !bytes.Contains([]byte(body), []byte(`"epoch":3`)) {
		t.Fatalf("after a restart: %d %s", code, body)
	}
	if code, body := httpDo(t, pod, http.MethodGet, api.PathReadyz, nil); code != http.StatusOK {
		t.Fatalf("readyz with a stored map: %d %s", code, body)
	}
	// And ids keep naming the pod: a local push gets an id of ordinal 0.
	p, err := pod.API.Push(context.Background(), api.PushRequest{UUID: uuidHomedOn(t, m2, 0, "local").String(), Kind: "general"})
	if err != nil || p.Incarnation == "" {
		t.Fatalf("local push: %+v %v", p, err)
	}
}

// TestShardedBulkAndTCPDetach: a bulk push at one pod fans out to every
// home and answers per target; a TCP phone on a front that closes its
// connection is offline at its home.
func TestShardedBulkAndTCPDetach(t *testing.T) {
	pods, m := startShards(t, 3)
	ctx := context.Background()
	var uuids []string
	phones := map[string]*phone.Phone{}
	for home := range pods {
		for i := range 3 {
			u := uuidHomedOn(t, m, home, fmt.Sprintf("bulk%d", i))
			uuids = append(uuids, u.String())
			ph, err := phone.Dial("tcp", pods[i].ClientAddr().String(), u)
			if err != nil {
				t.Fatal(err)
			}
			defer ph.Close()
			if err := ph.Heartbeat(); err != nil {
				t.Fatal(err)
			}
			phones[u.String()] = ph
		}
	}
	nodetest.Eventually(t, 5*time.Second, func() error {
		for _, u := range uuids {
			c, err := pods[0].API.Client(ctx, u)
			if err != nil || !c.Online {
				return fmt.Errorf("%s not online: %v", u, err)
			}
		}
		return nil
	})
	res, err := pods[1].API.BulkPush(ctx, api.BulkPushRequest{UUIDs: uuids, Kind: "custom", Data: "all"})
	if err != nil || res.Accepted != len(uuids) {
		t.Fatalf("bulk: %+v %v", res, err)
	}
	for i, r := range res.Results {
		if o, _ := slotmap.OrdinalOfID(r.ID); o != m.OwnerOf(mustUUID(t, uuids[i])) {
			t.Fatalf("result %d: id %d from pod %d", i, r.ID, o)
		}
	}
	for _, ph := range phones {
		if got := next(t, ph, wire.CmdCustom); string(got.Body) != "all" {
			t.Fatalf("got %q", got.Body)
		}
	}
	// Close the phone of a uuid homed on pod 2 attached to pod 0.
	u := uuids[6]
	phones[u].Close()
	nodetest.Eventually(t, 5*time.Second, func() error {
		c, err := pods[2].API.Client(ctx, u)
		if err != nil {
			return err
		}
		if c.Online {
			return errors.New("still online after its TCP connection closed")
		}
		return nil
	})
}

func mustUUID(t *testing.T, s string) wire.UUID {
	u, err := wire.ParseUUID(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestShardedIdempotencyKeys: a key names one push at its home, whichever
// pod the push and its retries enter at.
func TestShardedIdempotencyKeys(t *testing.T) {
	pods, m := startShards(t, 3)
	ctx := context.Background()
	u := uuidHomedOn(t, m, 1, "keys").String()
	first, err := pods[0].API.Push(ctx, api.PushRequest{UUID: u, Kind: "custom", Data: "once", Key: "k1"})
	if err != nil || first.Duplicate {
		t.Fatalf("first: %+v %v", first, err)
	}
	for i, p := range pods {
		again, err := p.API.Push(ctx, api.PushRequest{UUID: u, Kind: "custom", Data: "once", Key: "k1"})
		if err != nil || !again.Duplicate || again.ID != first.ID {
			t.Fatalf("retry at pod %d: %+v %v", i, again, err)
		}
	}
	for i, p := range pods {
		_, err := p.API.Push(ctx, api.PushRequest{UUID: u, Kind: "custom", Data: "ONCE", Key: "k1"})
		var se *api.StatusError
		if !errors.As(err, &se) || se.Code != http.StatusUnprocessableEntity || !strings.Contains(se.Message, "carried other") {
			t.Fatalf("other data with the same key at pod %d: %v", i, err)
		}
	}
	got, err := pods[2].API.GetPush(ctx, first.ID)
	if err != nil || got.Fate != "queued" {
		t.Fatalf("the first push after the refused reuses: %+v %v", got, err)
	}
}

// TestPeerTokenFile: with --peer-token-file, pods authenticate each other
// with that secret and not with the API token app servers hold.
func TestPeerTokenFile(t *testing.T) {
	dir := t.TempDir()
	secret := func(name, v string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	same, other := secret("peer-a", "peer-secret"), secret("peer-b", "another-secret")
	start := func(ordinal int, file string) *nodetest.Node {
		return nodetest.Start(t, func(c *node.Config) { c.PeerAddr, c.Ordinal, c.PeerTokenFile = "127.0.0.1:0", ordinal, file })
	}
	a, b, c := start(0, same), start(1, same), start(2, other)
	m, _ := slotmap.EvenSplit(3, 1, map[int]string{0: a.Shard().PeerAddr(), 1: b.Shard().PeerAddr(), 2: c.Shard().PeerAddr()})
	for _, p := range []*nodetest.Node{a, b, c} {
		if code, body := putMap(t, p, m); code != http.StatusOK {
			t.Fatalf("PUT: %d %s", code, body)
		}
	}
	nodetest.Eventually(t, 10*time.Second, func() error {
		for _, l := range a.Shard().Links() {
			if up := l.Up(); up != (l.PeerOrdinal() == 1) {
				return fmt.Errorf("link 0->%d up=%v (%s)", l.PeerOrdinal(), up, l.LastError())
			}
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	for _, l := range a.Shard().Links() {
		if l.PeerOrdinal() == 2 && (l.Up() || !strings.Contains(l.LastError(), "token")) {
			t.Fatalf("link to the pod with another peer secret: up=%v %q", l.Up(), l.LastError())
		}
	}
}
