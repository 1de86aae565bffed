package slotmap

import (
	"fmt"
	"sort"
)

// Move is a run of consecutive slots that change owner between two maps.
type Move struct {
	From, To int // slots, inclusive
	Old, New int // ordinals
}

// Slots is the number of slots in the move.
func (mv Move) Slots() int { return mv.To - mv.From + 1 }

func (mv Move) String() string {
	return fmt.Sprintf("slots %s: %d -> %d", Range{From: mv.From, To: mv.To}, mv.Old, mv.New)
}

// ownerTable is a map's owners; the zero Map counts as ordinal 0 owning
// every slot (a PushNode of one pod without a map is pod 0).
func ownerTable(m Map) *[NumSlots]uint16 {
	if m.c == nil {
		return &[NumSlots]uint16{}
	}
	return &m.c.owner
}

// Diff lists the slots whose owner differs between old and new, as
// ascending runs. A zero Map counts as ordinal 0 owning every slot.
func Diff(old, new Map) []Move {
	a, b := ownerTable(old), ownerTable(new)
	var out []Move
	for slot := 0; slot < NumSlots; {
		if a[slot] == b[slot] {
			slot++
			continue
		}
		end := slot
		for end+1 < NumSlots && a[end+1] == a[slot] && b[end+1] == b[slot] {
			end++
		}
		out = append(out, Move{From: slot, To: end, Old: int(a[slot]), New: int(b[slot])})
		slot = end + 1
	}
	return out
}

// MovedSlots counts the slots in a list of moves.
func MovedSlots(moves []Move) int {
	n := 0
	for _, mv := range moves {
		n += mv.Slots()
	}
	return n
}

// Rebalance gives slots to ordinals 0..n-1 so that their counts differ by
// at most one, moving as few slots as possible from old: every slot whose
// owner stays (ordinal below n) and does not hold more than its new share
// keeps its owner. The larger shares go to the ordinals that already hold
// the most slots; an ordinal above its share gives up its highest slots,
// and the freed slots go, lowest first, to the ordinals below their share
// in ordinal order, so ranges stay as contiguous as they can. The result
// has the given epoch and peers (which need an address for every
// ordinal below n). A zero old Map counts as ordinal 0 owning every slot.
func Rebalance(old Map, n int, epoch uint64, peers map[int]string) (Map, error) {
	if err := checkCount(n); err != nil {
		return Map{}, err
	}
	prev := ownerTable(old)
	var count [MaxOrdinals]int
	for _, o := range prev {
		count[o]++
	}

	// The NumSlots%n larger shares go to the fullest ordinals: each one
	// then keeps one slot more than it would with the smaller share.
	q, r := NumSlots/n, NumSlots%n
	byCount := make([]int, n)
	for i := range byCount {
		byCount[i] = i
	}
	sort.SliceStable(byCount, func(i, j int) bool { return count[byCount[i]] > count[byCount[j]] })
	share := make([]int, n)
	for i, o := range byCount {
		share[o] = q
		if i < r {
			share[o]++
		}
	}

	var owner [NumSlots]uint16
	kept := make([]int, n)
	var free []int
	for slot, o := range prev {
		if int(o) < n && kept[o] < share[o] {
			owner[slot] = o
			kept[o]++
			continue
		}
		free = append(free, slot)
	}
	for o := 0; o < n; o++ {
		for ; kept[o] < share[o]; kept[o]++ {
			owner[free[0]] = uint16(o)
			free = free[1:]
		}
	}
	return Spec{Epoch: epoch, Ranges: rangesOf(&owner), Peers: peers}.Build()
}
