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
	"strconv"
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
	pods := make([]*nodetest.Node, n)
	peers := map[int]string{}
	for i := range pods {
		pods[i] = nodetest.Start(t, func(c *node.Config) {
			c.PeerAddr = "127.0.0.1:0"
			c.Ordinal = i
		})
		peers[i] = pods[i].Shard().PeerAddr()
	}
	m, err := slotmap.EvenSplit(n, 1, peers)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if code, body := putMap(t, p, m); code != http.StatusOK {
			t.Fatalf("PUT /v1/slotmap: %d %s", code, body)
		}
	}
	for _, p := range pods {
		for _, l := range p.Shard().Links() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := l.WaitUp(ctx); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
	}
	return pods, m
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
func uuidHomedOn(t *testing.T, m slotmap.Map, o int, salt string) wire.UUID {
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
