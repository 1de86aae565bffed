package node_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// TestMoveRequestsRefusedClearly sends every kind of wrong move request
// and checks the answer names the problem and nothing moved.
func TestMoveRequestsRefusedClearly(t *testing.T) {
	pods := make([]*nodetest.Node, 3)
	peers := map[int]string{}
	for i := range pods {
		pods[i] = nodetest.Start(t, func(c *node.Config) { c.PeerAddr, c.Ordinal = "127.0.0.1:0", i })
		peers[i] = pods[i].Shard().PeerAddr()
	}
	m1, _ := slotmap.New(1, []slotmap.Range{{From: 0, To: 511, Ordinal: 0}, {From: 512, To: 1023, Ordinal: 1}}, peers)
	nodetest.PutSlotMap(t, m1, pods...)
	ctx := context.Background()
	url1 := "http://" + pods[1].HTTPAddr().String()
	good, _ := slotmap.New(2, []slotmap.Range{{From: 0, To: 99, Ordinal: 1}, {From: 100, To: 511, Ordinal: 0}, {From: 512, To: 1023, Ordinal: 1}}, peers)
	others, _ := slotmap.New(2, []slotmap.Range{{From: 0, To: 511, Ordinal: 0}, {From: 512, To: 600, Ordinal: 2}, {From: 601, To: 1023, Ordinal: 1}}, peers)
	twoTargets, _ := slotmap.New(2, []slotmap.Range{{From: 0, To: 9, Ordinal: 1}, {From: 10, To: 19, Ordinal: 2}, {From: 20, To: 511, Ordinal: 0}, {From: 512, To: 1023, Ordinal: 1}}, peers)
	noPeer := api.FromMap(good)
	delete(noPeer.Peers, "1")
	old := api.FromMap(good)
	old.Epoch = 1
	cases := []struct {
		name string
		req  api.MoveRequest
		code int
		want string
	}{
		{"empty id", api.MoveRequest{Map: api.FromMap(good), Target: 1, TargetURL: url1}, 400, "move id"},
		{"id with a slash", api.MoveRequest{ID: "a/b", Map: api.FromMap(good), Target: 1, TargetURL: url1}, 400, "move id"},
		{"long id", api.MoveRequest{ID: strings.Repeat("a", 129), Map: api.FromMap(good), Target: 1, TargetURL: url1}, 400, "move id"},
		{"no map", api.MoveRequest{ID: "m", Target: 1, TargetURL: url1}, 400, "map"},
		{"target is self", api.MoveRequest{ID: "m", Map: api.FromMap(good), Target: 0, TargetURL: url1}, 400, "another pod"},
		{"target out of range", api.MoveRequest{ID: "m", Map: api.FromMap(good), Target: 512, TargetURL: url1}, 400, "ordinal"},
		{"no peer for the target", api.MoveRequest{ID: "m", Map: noPeer, Target: 1, TargetURL: url1}, 400, "peer"},
		{"old epoch", api.MoveRequest{ID: "m", Map: old, Target: 1, TargetURL: url1}, 409, "epoch"},
		{"gives nothing away", api.MoveRequest{ID: "m", Map: api.FromMap(others), Target: 1, TargetURL: url1}, 400, "none of this pod's slots"},
		{"two targets", api.MoveRequest{ID: "m", Map: api.FromMap(twoTargets), Target: 1, TargetURL: url1}, 400, "one source and one target"},
		{"bad target url", api.MoveRequest{ID: "m", Map: api.FromMap(good), Target: 1, TargetURL: "pod-1:8080"}, 400, "targetURL"},
	}
	for _, tc := range cases {
		_, err := pods[0].API.StartMove(ctx, tc.req)
		var se *api.StatusError
		if !errors.As(err, &se) || se.Code != tc.code || !strings.Contains(se.Message, tc.want) {
			t.Errorf("%s: %v; want %d saying %q", tc.name, err, tc.code, tc.want)
		}
	}
	// Malformed bodies.
	for _, body := range []string{"", "{", `{"id":"m","map":{},"target":1,"targetURL":"http://x"}`, `{"id":"m","bogus":1}`} {
		code, msg := httpDo(t, pods[0], http.MethodPost, api.PathMoves, []byte(body))
		if code != http.StatusBadRequest {
			t.Errorf("body %q: %d %s", body, code, msg)
		}
	}
	if _, err := pods[0].API.GetMove(ctx, "nothing"); !isStatus(err, http.StatusNotFound) {
		t.Errorf("GET of an unknown move: %v", err)
	}

	// Pod-to-pod calls that do not fit the target's state.
	e := &api.MoveEntries{Source: 0, Target: 1, Slots: "512-520", First: true}
	if err := pods[1].API.SendMoveEntries(ctx, "x", e); !isStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), "belongs to pod 1") {
		t.Errorf("entries of slots the target owns: %v", err)
	}
	e = &api.MoveEntries{Source: 0, Target: 2, Slots: "0-9", First: true}
	if err := pods[1].API.SendMoveEntries(ctx, "x", e); !isStatus(err, http.StatusConflict) {
		t.Errorf("entries for another target: %v", err)
	}
	e = &api.MoveEntries{Source: 0, Target: 1, Slots: "0-9"}
	if err := pods[1].API.SendMoveEntries(ctx, "x", e); !isStatus(err, http.StatusConflict) {
		t.Errorf("entries without a first batch: %v", err)
	}
	e = &api.MoveEntries{Source: 0, Target: 1, Slots: "0-9", First: true, Records: []api.EntryKV{{K: []byte{1, 2}, V: []byte{1}}}}
	if err := pods[1].API.SendMoveEntries(ctx, "x", e); !isStatus(err, http.StatusBadRequest) {
		t.Errorf("a record with a short key: %v", err)
	}
	if _, err := pods[1].API.CommitMove(ctx, "unknown", api.MoveCommit{Map: api.FromMap(good)}); !isStatus(err, http.StatusConflict) {
		t.Errorf("commit of an unknown move: %v", err)
	}

	// Nothing moved, and a PUT cannot move slots either.
	for i, p := range pods {
		sm, err := p.API.SlotMap(ctx)
		if err != nil || sm.Epoch != 1 {
			t.Errorf("pod %d holds epoch %d (%v) after refused moves", i, sm.Epoch, err)
		}
	}
	if _, err := pods[0].API.PutSlotMap(ctx, good); !isStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), "slot move") {
		t.Errorf("PUT of a map that moves pod 0's slots: %v", err)
	}
	// A pod not concerned by a move takes its map once it is done.
	if _, err := pods[2].API.PutSlotMap(ctx, good); err != nil {
		t.Errorf("PUT of a map that moves other pods' slots: %v", err)
	}

	// A whole node takes no moves.
	whole := nodetest.Start(t, nil)
	if _, err := whole.API.StartMove(ctx, api.MoveRequest{ID: "m", Map: api.FromMap(good), Target: 1, TargetURL: url1}); !isStatus(err, http.StatusConflict) {
		t.Errorf("a move at a node without --peer-addr: %v", err)
	}
}

func isStatus(err error, code int) bool {
	var se *api.StatusError
	return errors.As(err, &se) && se.Code == code
}
