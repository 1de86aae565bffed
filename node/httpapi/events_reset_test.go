package httpapi_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/ddpush/ddpush-operator/node/api"
)

// TestCursorPastTheEndOfTheLogIsAGap: a follower whose cursor is beyond
// the node's log (the node's store was moved aside or restored from an
// older copy) is told at once that it missed events and where the log
// ends, instead of waiting for sequence numbers the log will take a long
// time to reach, missing everything until then.
func TestCursorPastTheEndOfTheLogIsAGap(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	u := uuidFor("reset")
	if _, r := tn.push(api.PushRequest{UUID: u, Kind: api.KindGeneral}); r.code != http.StatusCreated {
		t.Fatalf("push: %s", r)
	}
	durable := tn.status().EventSeq
	evs := tn.events("after=1000&wait=1m")
	if !evs.Gap || evs.Next != durable || len(evs.Events) != 0 {
		t.Fatalf("cursor past the log's end (%d): %+v, want a gap and next %d", durable, evs, durable)
	}
	// Following from there works.
	if _, r := tn.push(api.PushRequest{UUID: u, Kind: api.KindGeneral}); r.code != http.StatusCreated {
		t.Fatalf("push: %s", r)
	}
	evs = tn.events(fmt.Sprintf("after=%d&wait=5s", durable))
	if evs.Gap || len(evs.Events) == 0 || evs.Events[0].Seq != durable+1 {
		t.Fatalf("events after the log's end: %+v", evs)
	}
}
