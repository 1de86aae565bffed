package slotmap

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	a := mustSplit(t, 2, 1) // 0-511 -> 0, 512-1023 -> 1
	b := mustSplit(t, 3, 2) // 0-341, 342-682, 683-1023
	got := Diff(a, b)
	want := []Move{{342, 511, 0, 1}, {683, 1023, 1, 2}}
	if len(got) != len(want) {
		t.Fatalf("Diff = %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("Diff = %v, want %v", got, want)
		}
	}
	if n := MovedSlots(got); n != 170+341 {
		t.Fatalf("moved %d slots", n)
	}
	if got[0].String() != "slots 342-511: 0 -> 1" {
		t.Fatalf("String() = %q", got[0])
	}
	if d := Diff(a, a); len(d) != 0 {
		t.Fatalf("a map differs from itself: %v", d)
	}
	// Only the owners count: a new epoch or new addresses move nothing.
	c, _ := EvenSplit(2, 9, map[int]string{0: "x:1", 1: "y:1"})
	if d := Diff(a, c); len(d) != 0 {
		t.Fatalf("Diff across epochs: %v", d)
	}
	// No map is ordinal 0 owning everything.
	if d := Diff(Map{}, a); len(d) != 1 || d[0] != (Move{512, 1023, 0, 1}) {
		t.Fatalf("Diff(no map, 2) = %v", d)
	}
	// Every slot moving on its own is one run per slot at most.
	alt := make([]Range, NumSlots)
	for s := range alt {
		alt[s] = Range{s, s, s % 2}
	}
	m, err := New(1, alt, peersFor(2))
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(mustSplit(t, 1, 1), m); len(d) != 512 || MovedSlots(d) != 512 {
		t.Fatalf("alternating: %d moves, %d slots", len(d), MovedSlots(d))
	}
}

// counts is how many slots each ordinal owns; no map is ordinal 0
// owning everything.
func counts(m Map) [MaxOrdinals]int {
	var c [MaxOrdinals]int
	for _, o := range ownerTable(m) {
		c[o]++
	}
	return c
}

// fewestMoves is the least number of slots any even split of n ordinals
// must move away from old, found by trying every choice of which
// ordinals get the larger share (small n only).
func fewestMoves(old [MaxOrdinals]int, n int) int {
	q, r := NumSlots/n, NumSlots%n
	best := NumSlots + 1
	for mask := 0; mask < 1<<n; mask++ {
		if popcount(mask) != r {
			continue
		}
		moved := 0
		for o := range MaxOrdinals {
			share := 0
			if o < n {
				share = q
				if mask&(1<<o) != 0 {
					share++
				}
			}
			if old[o] > share {
				moved += old[o] - share
			}
		}
		best = min(best, moved)
	}
	return best
}

func popcount(x int) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

func checkRebalance(t *testing.T, old Map, n int) Map {
	t.Helper()
	m, err := Rebalance(old, n, old.Epoch()+1, peersFor(max(n, 12)))
	if err != nil {
		t.Fatalf("Rebalance(%s, %d): %v", old, n, err)
	}
	c := counts(m)
	q := NumSlots / n
	for o := range MaxOrdinals {
		if o < n && c[o] != q && c[o] != q+1 {
			t.Fatalf("n=%d: ordinal %d has %d slots", n, o, c[o])
		}
		if o >= n && c[o] != 0 {
			t.Fatalf("n=%d: ordinal %d still has %d slots", n, o, c[o])
		}
	}
	oldCount := counts(old)
	// Keeps every slot that can stay: an ordinal that ends with at least
	// as many slots as it had lost none of them...
	for s := range NumSlots {
		o := int(ownerTable(old)[s])
		if o < n && c[o] >= oldCount[o] && m.Owner(uint16(s)) != o {
			t.Fatalf("n=%d: slot %d left ordinal %d, which did not shrink", n, s, o)
		}
	}
	// ...and no even split moves fewer slots.
	if n <= 12 {
		moved := MovedSlots(Diff(old, m))
		if want := fewestMoves(oldCount, n); moved != want {
			t.Fatalf("n=%d from %s: moved %d slots, the fewest possible is %d", n, old, moved, want)
		}
	}
	return m
}

func TestRebalanceMovesTheFewest(t *testing.T) {
	// Scaling up and down from even splits.
	for _, from := range []int{1, 2, 3, 4, 5, 7, 12} {
		for _, to := range []int{1, 2, 3, 4, 5, 6, 8, 11, 12} {
			old := mustSplit(t, from, 1)
			m := checkRebalance(t, old, to)
			if from == to && len(Diff(old, m)) != 0 {
				t.Fatalf("rebalancing an even split of %d moved slots", from)
			}
			// Scaling up from an even split moves exactly what the new
			// ordinals receive.
			if to > from {
				want := 0
				for o := from; o < to; o++ {
					want += m.SlotCount(o)
				}
				if got := MovedSlots(Diff(old, m)); got != want {
					t.Fatalf("%d -> %d moved %d slots, the new ordinals got %d", from, to, got, want)
				}
			}
		}
	}
	// No map at all (one pod) to three.
	m := checkRebalance(t, Map{}, 3)
	if m.Ranges(0) != "0-341" || m.Ranges(1) != "342-682" || m.Ranges(2) != "683-1023" {
		t.Fatalf("1 -> 3 from no map: %s", m)
	}
	// Random lopsided maps with ordinals above n.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		k := 1 + rng.IntN(10)
		var ranges []Range
		for from := 0; from < NumSlots; {
			to := min(NumSlots-1, from+rng.IntN(200))
			ranges = append(ranges, Range{from, to, rng.IntN(k)})
			from = to + 1
		}
		old, err := New(uint64(i+1), ranges, peersFor(12))
		if err != nil {
			t.Fatal(err)
		}
		checkRebalance(t, old, 1+rng.IntN(11))
	}
	// Rebalancing twice changes nothing more.
	old := mustSplit(t, 5, 1)
	once := checkRebalance(t, old, 3)
	twice := checkRebalance(t, once, 3)
	if len(Diff(once, twice)) != 0 {
		t.Fatal("a balanced map was rebalanced again")
	}
}

func TestRebalanceBoundaries(t *testing.T) {
	old := mustSplit(t, 3, 1)
	m := checkRebalance(t, old, 512)
	for o := range 512 {
		if c := m.SlotCount(o); c != 2 {
			t.Fatalf("ordinal %d has %d slots", o, c)
		}
	}
	checkRebalance(t, m, 1)
	checkRebalance(t, m, 511)
	for _, n := range []int{0, -1, 513, 1023, 1024, 1025} {
		if _, err := Rebalance(old, n, 2, peersFor(600)); err == nil || !strings.Contains(err.Error(), "1 to 512") {
			t.Errorf("Rebalance to %d: %v", n, err)
		}
	}
	if _, err := Rebalance(old, 4, 2, peersFor(3)); err == nil || !strings.Contains(err.Error(), "ordinal 3 owns slots") {
		t.Errorf("missing peer: %v", err)
	}
	if _, err := Rebalance(old, 3, 0, peersFor(3)); err == nil || !strings.Contains(err.Error(), "epoch is 0") {
		t.Errorf("epoch 0: %v", err)
	}
}

func BenchmarkOwnerOf(b *testing.B) {
	m := mustSplit(b, 3, 1)
	u := uuidOf(0x12, 0x34)
	b.ReportAllocs()
	sum := 0
	for i := 0; i < b.N; i++ {
		u[1] = byte(i)
		sum += m.OwnerOf(u)
	}
	if sum < 0 {
		b.Fatal(sum)
	}
}

func BenchmarkRebalance(b *testing.B) {
	old := mustSplit(b, 7, 1)
	peers := peersFor(12)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Rebalance(old, 12, 2, peers); err != nil {
			b.Fatal(err)
		}
	}
}
