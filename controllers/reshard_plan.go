package controllers

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// reshardBatchSlots bounds the slots of one move: a batch's handoff holds
// the writes of its slots, so a small batch keeps that pause short, and
// a failure redoes little.
const reshardBatchSlots = 64

// reshardStepKind is what a resharding does next.
type reshardStepKind int

const (
	// stepNone: the slots are where replicas want them and the map names
	// exactly the pods that stay.
	stepNone reshardStepKind = iota
	// stepInstall: every pod gets the same slots under a map that names
	// every pod that exists, so that the pods about to take slots are
	// known to all before any slot moves.
	stepInstall
	// stepMove: one batch of slots goes from one pod to another.
	stepMove
	// stepFinal: the drained pods leave the map; after it the StatefulSet
	// shrinks.
	stepFinal
)

func (k reshardStepKind) String() string {
	switch k {
	case stepInstall:
		return "install"
	case stepMove:
		return "move"
	case stepFinal:
		return "final"
	}
	return "none"
}

// reshardStep is the next step of a resharding.
type reshardStep struct {
	Kind reshardStepKind
	// Map is the map every pod holds after the step, at the next epoch.
	Map slotmap.Map
	// Move (stepMove) is the batch: slots From..To go from Old to New.
	Move slotmap.Move
	// ID names the move at its source.
	ID string
	// Remaining is the number of slots still to move, the batch included.
	Remaining int
}

// peersOf gives ordinals 0..n-1 their addresses from addr.
func peersOf(n int, addr func(int) string) map[int]string {
	out := make(map[int]string, n)
	for i := range n {
		out[i] = addr(i)
	}
	return out
}

// planReshard is the next step from the map the pods hold, cur (the zero
// Map when a single pod runs without one), naming curPods pods, towards
// want pods. pods is the number of pods that exist (at least want and
// curPods) and peer gives each ordinal its address. It moves only slots
// that must move (slotmap.Rebalance from cur), one batch at a time, the
// first run of slotmap.Diff first; pods leave the map only once they own
// nothing.
func planReshard(cur slotmap.Map, curPods, want, pods int, peer func(int) string) (reshardStep, error) {
	if want < 1 || pods < want || pods < curPods {
		return reshardStep{}, fmt.Errorf("plan from %d to %d pods with %d pods running: the pods must include both", curPods, want, pods)
	}
	next := cur.Epoch() + 1
	if cur.IsZero() {
		if want == 1 && pods == 1 {
			return reshardStep{}, nil
		}
		// One pod ran without a map, owning every slot: the map that says
		// so, naming every pod, comes first.
		m, err := slotmap.New(next, []slotmap.Range{{From: 0, To: slotmap.NumSlots - 1, Ordinal: 0}}, peersOf(pods, peer))
		if err != nil {
			return reshardStep{}, fmt.Errorf("the map of every slot at pod 0: %w", err)
		}
		return reshardStep{Kind: stepInstall, Map: m, Remaining: slotmap.MovedSlots(rebalanceMoves(m, want))}, nil
	}
	target, err := slotmap.Rebalance(cur, want, next, peersOf(want, peer))
	if err != nil {
		return reshardStep{}, fmt.Errorf("rebalance %d slots onto %d pods: %w", slotmap.NumSlots, want, err)
	}
	moves := slotmap.Diff(cur, target)
	remaining := slotmap.MovedSlots(moves)
	ranges := cur.Spec().Ranges
	switch {
	case len(moves) > 0 && curPods != pods:
		m, err := slotmap.New(next, ranges, peersOf(pods, peer))
		if err != nil {
			return reshardStep{}, fmt.Errorf("the map naming %d pods: %w", pods, err)
		}
		return reshardStep{Kind: stepInstall, Map: m, Remaining: remaining}, nil
	case len(moves) > 0:
		mv := moves[0]
		mv.To = min(mv.To, mv.From+reshardBatchSlots-1)
		m, err := withMove(cur, mv, next)
		if err != nil {
			return reshardStep{}, err
		}
		return reshardStep{Kind: stepMove, Map: m, Move: mv, ID: moveID(next, mv.Old, mv.New), Remaining: remaining}, nil
	case curPods > want:
		m, err := slotmap.New(next, ranges, peersOf(want, peer))
		if err != nil {
			return reshardStep{}, fmt.Errorf("the map without the pods from %d on: %w", want, err)
		}
		return reshardStep{Kind: stepFinal, Map: m}, nil
	}
	return reshardStep{}, nil
}

// rebalanceMoves lists the slots that must move for cur to be even
// between want pods.
func rebalanceMoves(cur slotmap.Map, want int) []slotmap.Move {
	peers := make(map[int]string, want)
	for i := range want {
		peers[i] = "p" + strconv.Itoa(i) + ":1"
	}
	target, err := slotmap.Rebalance(cur, want, cur.Epoch()+1, peers)
	if err != nil {
		return nil
	}
	return slotmap.Diff(cur, target)
}

// withMove is cur with the slots of mv given to mv.New, at epoch, with
// cur's peers.
func withMove(cur slotmap.Map, mv slotmap.Move, epoch uint64) (slotmap.Map, error) {
	var ranges []slotmap.Range
	for _, r := range cur.Spec().Ranges {
		if r.To < mv.From || r.From > mv.To {
			ranges = append(ranges, r)
			continue
		}
		if r.Ordinal != mv.Old {
			return slotmap.Map{}, fmt.Errorf("slots %s are not all at pod %d in slot map epoch %d", slotmap.Range{From: mv.From, To: mv.To}, mv.Old, cur.Epoch())
		}
		if r.From < mv.From {
			ranges = append(ranges, slotmap.Range{From: r.From, To: mv.From - 1, Ordinal: r.Ordinal})
		}
		ranges = append(ranges, slotmap.Range{From: max(r.From, mv.From), To: min(r.To, mv.To), Ordinal: mv.New})
		if r.To > mv.To {
			ranges = append(ranges, slotmap.Range{From: mv.To + 1, To: r.To, Ordinal: r.Ordinal})
		}
	}
	m, err := slotmap.New(epoch, ranges, cur.Peers())
	if err != nil {
		return slotmap.Map{}, fmt.Errorf("move slots %s from pod %d to pod %d: %w", slotmap.Range{From: mv.From, To: mv.To}, mv.Old, mv.New, err)
	}
	return m, nil
}

// moveID names the move that installs epoch: one move per epoch, so a
// retry of the same batch has the same name and another batch another.
func moveID(epoch uint64, from, to int) string {
	return fmt.Sprintf("e%d-%d-%d", epoch, from, to)
}

// parseSlotRange reads "a-b" or "a", as Range.String writes it.
func parseSlotRange(s string) (from, to int, err error) {
	a, b, found := strings.Cut(s, "-")
	if from, err = strconv.Atoi(a); err != nil {
		return 0, 0, fmt.Errorf("slot range %q: %w", s, err)
	}
	to = from
	if found {
		if to, err = strconv.Atoi(b); err != nil {
			return 0, 0, fmt.Errorf("slot range %q: %w", s, err)
		}
	}
	if from < 0 || to >= slotmap.NumSlots || from > to {
		return 0, 0, fmt.Errorf("slot range %q is not within 0-%d", s, slotmap.NumSlots-1)
	}
	return from, to, nil
}
