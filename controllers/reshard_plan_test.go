package controllers

import (
	"fmt"
	"testing"

	"github.com/ddpush/ddpush-operator/node/slotmap"
)

func testPeer(i int) string { return fmt.Sprintf("pod-%d.peers:9977", i) }

// runReshard plans and applies steps from cur until none is left, and
// checks what every resharding must keep: epochs go up by one per step,
// a batch moves at most reshardBatchSlots slots, each slot that must
// move moves once, straight to its final owner, and nothing else moves;
// pods leave the map only after they own nothing. It returns the end
// map and the steps' kinds.
func runReshard(t *testing.T, cur slotmap.Map, curPods, want int) (slotmap.Map, []reshardStepKind) {
	t.Helper()
	pods := max(curPods, want)
	start := cur
	if start.IsZero() {
		var err error
		if start, err = slotmap.EvenSplit(1, 1, peersOf(1, testPeer)); err != nil {
			t.Fatal(err)
		}
	}
	final, err := slotmap.Rebalance(start, want, start.Epoch()+1, peersOf(want, testPeer))
	if err != nil {
		t.Fatal(err)
	}
	mustMove := map[int]int{} // slot -> its final owner
	for _, mv := range slotmap.Diff(start, final) {
		for s := mv.From; s <= mv.To; s++ {
			mustMove[s] = mv.New
		}
	}
	total := len(mustMove)
	moved := map[int]bool{}
	var kinds []reshardStepKind
	for range 1000 {
		step, err := planReshard(cur, curPods, want, pods, testPeer)
		if err != nil {
			t.Fatalf("%d -> %d: %v", curPods, want, err)
		}
		if step.Kind == stepNone {
			break
		}
		kinds = append(kinds, step.Kind)
		if step.Map.Epoch() != cur.Epoch()+1 {
			t.Fatalf("%s step to epoch %d after epoch %d", step.Kind, step.Map.Epoch(), cur.Epoch())
		}
		if step.Remaining != total-len(moved) && step.Kind != stepFinal {
			t.Errorf("%s step: %d slots remaining, want %d", step.Kind, step.Remaining, total-len(moved))
		}
		diff := slotmap.Diff(cur, step.Map)
		if cur.IsZero() {
			diff = nil
		}
		switch step.Kind {
		case stepInstall, stepFinal:
			if len(diff) != 0 {
				t.Fatalf("%s step moves slots: %v", step.Kind, diff)
			}
		case stepMove:
			if len(diff) != 1 || diff[0] != step.Move {
				t.Fatalf("move %v, but the map changes %v", step.Move, diff)
			}
			if step.Move.Slots() > reshardBatchSlots {
				t.Fatalf("batch of %d slots", step.Move.Slots())
			}
			if step.ID != moveID(step.Map.Epoch(), step.Move.Old, step.Move.New) {
				t.Errorf("move id %q", step.ID)
			}
			if len(step.Map.Peers()) != pods {
				t.Errorf("a move's map names %d pods, want every one of the %d that exist", len(step.Map.Peers()), pods)
			}
			for s := step.Move.From; s <= step.Move.To; s++ {
				to, must := mustMove[s]
				if !must || moved[s] || to != step.Move.New {
					t.Fatalf("slot %d moves to %d (must move: %v, to %d; moved before: %v)", s, step.Move.New, must, to, moved[s])
				}
				moved[s] = true
			}
		}
		if step.Kind == stepFinal {
			for o := want; o < curPods; o++ {
				if n := cur.SlotCount(o); n != 0 {
					t.Fatalf("pod %d leaves the map owning %d slots", o, n)
				}
			}
		}
		cur, curPods = step.Map, len(step.Map.Peers())
	}
	if len(moved) != total {
		t.Errorf("%d slots moved, want %d", len(moved), total)
	}
	if curPods != want {
		t.Errorf("the end map names %d pods, want %d", curPods, want)
	}
	for o := range want {
		if n := cur.SlotCount(o); n != slotmap.NumSlots/want && n != slotmap.NumSlots/want+1 {
			t.Errorf("pod %d ends with %d slots", o, n)
		}
		if a, _ := cur.Peer(o); a != testPeer(o) {
			t.Errorf("pod %d's peer %q", o, a)
		}
	}
	return cur, kinds
}

func TestReshardPlanSequence(t *testing.T) {
	// 1 -> 3 -> 5 -> 2 -> 1, each from where the last ended.
	m, kinds := runReshard(t, slotmap.Map{}, 1, 3)
	if kinds[0] != stepInstall || kinds[len(kinds)-1] != stepMove {
		t.Errorf("1 -> 3: steps %v; want the map of pod 0 first, then moves", kinds)
	}
	if m.Epoch() != uint64(len(kinds)) {
		t.Errorf("1 -> 3 ends at epoch %d after %d steps from epoch 1", m.Epoch(), len(kinds))
	}
	if got := countKind(kinds, stepMove); got < 683/reshardBatchSlots {
		t.Errorf("1 -> 3 in %d moves: 683 slots move in batches of %d", got, reshardBatchSlots)
	}

	m, kinds = runReshard(t, m, 3, 5)
	if kinds[0] != stepInstall || countKind(kinds, stepInstall) != 1 || countKind(kinds, stepFinal) != 0 {
		t.Errorf("3 -> 5: steps %v; want one map naming the new pods, then moves", kinds)
	}

	m, kinds = runReshard(t, m, 5, 2)
	if countKind(kinds, stepInstall) != 0 || kinds[len(kinds)-1] != stepFinal || countKind(kinds, stepFinal) != 1 {
		t.Errorf("5 -> 2: steps %v; want moves, then the final map", kinds)
	}

	m, kinds = runReshard(t, m, 2, 1)
	if kinds[len(kinds)-1] != stepFinal || m.SlotCount(0) != slotmap.NumSlots {
		t.Errorf("2 -> 1: steps %v, pod 0 ends with %d slots", kinds, m.SlotCount(0))
	}

	// Nothing to do at the same size.
	if step, err := planReshard(m, 1, 1, 1, testPeer); err != nil || step.Kind != stepNone {
		t.Errorf("1 -> 1: %v, %v", step.Kind, err)
	}
	if step, err := planReshard(slotmap.Map{}, 1, 1, 1, testPeer); err != nil || step.Kind != stepNone {
		t.Errorf("1 -> 1 without a map: %v, %v", step.Kind, err)
	}
}

// A PushNode created with several pods has the even split: no move.
func TestReshardPlanEvenSplitHasNothingToDo(t *testing.T) {
	for _, n := range []int{2, 3, 7, 512} {
		m, err := slotmap.EvenSplit(n, 1, peersOf(n, testPeer))
		if err != nil {
			t.Fatal(err)
		}
		if step, err := planReshard(m, n, n, n, testPeer); err != nil || step.Kind != stepNone {
			t.Errorf("%d pods: %v, %v", n, step.Kind, err)
		}
	}
}

func TestReshardPlanRefusesMissingPods(t *testing.T) {
	m, _ := slotmap.EvenSplit(3, 1, peersOf(3, testPeer))
	if _, err := planReshard(m, 3, 5, 3, testPeer); err == nil {
		t.Error("planned onto pods that do not exist")
	}
}

func TestWithMoveSplitsRanges(t *testing.T) {
	m, _ := slotmap.EvenSplit(2, 4, peersOf(3, testPeer))
	got, err := withMove(m, slotmap.Move{From: 100, To: 163, Old: 0, New: 2}, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ranges(0) != "0-99,164-511" || got.Ranges(2) != "100-163" || got.Epoch() != 5 {
		t.Errorf("got %v", got)
	}
	if _, err := withMove(m, slotmap.Move{From: 500, To: 520, Old: 0, New: 2}, 5); err == nil {
		t.Error("moved slots of pod 1 as pod 0's")
	}
}

func TestParseSlotRange(t *testing.T) {
	for in, want := range map[string][2]int{"0-63": {0, 63}, "7": {7, 7}, "960-1023": {960, 1023}} {
		from, to, err := parseSlotRange(in)
		if err != nil || from != want[0] || to != want[1] {
			t.Errorf("%q: %d %d %v", in, from, to, err)
		}
	}
	for _, in := range []string{"", "a-b", "5-3", "1000-1024", "-1"} {
		if _, _, err := parseSlotRange(in); err == nil {
			t.Errorf("%q parsed", in)
		}
	}
}

func countKind(kinds []reshardStepKind, k reshardStepKind) int {
	n := 0
	for _, x := range kinds {
		if x == k {
			n++
		}
	}
	return n
}
