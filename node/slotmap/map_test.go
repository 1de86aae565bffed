package slotmap

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// peersFor gives ordinals 0..n-1 distinct loopback-style addresses.
func peersFor(n int) map[int]string {
	p := make(map[int]string, n)
	for o := range n {
		p[o] = fmt.Sprintf("10.0.%d.%d:9977", o/256, o%256)
	}
	return p
}

func mustSplit(t testing.TB, n int, epoch uint64) Map {
	t.Helper()
	m, err := EvenSplit(n, epoch, peersFor(n))
	if err != nil {
		t.Fatalf("EvenSplit(%d): %v", n, err)
	}
	return m
}

func TestEvenSplitSweep(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 100, 511, 512} {
		m := mustSplit(t, n, 1)
		q := NumSlots / n
		prevEnd := -1
		total := 0
		for o := range n {
			c := m.SlotCount(o)
			if c != q && c != q+1 {
				t.Fatalf("n=%d: ordinal %d has %d slots, want %d or %d", n, o, c, q, q+1)
			}
			total += c
			// contiguous and in ordinal order
			var from, to int
			if _, err := fmt.Sscanf(m.Ranges(o)+"-", "%d-%d", &from, &to); err != nil {
				// a single slot is written "5"
				if _, err := fmt.Sscanf(m.Ranges(o), "%d", &from); err != nil {
					t.Fatalf("n=%d: ordinal %d ranges %q", n, o, m.Ranges(o))
				}
				to = from
			}
			if strings.Contains(m.Ranges(o), ",") || from != prevEnd+1 {
				t.Fatalf("n=%d: ordinal %d has %q after slot %d", n, o, m.Ranges(o), prevEnd)
			}
			prevEnd = to
		}
		if total != NumSlots || prevEnd != NumSlots-1 {
			t.Fatalf("n=%d: %d slots, last %d", n, total, prevEnd)
		}
	}
	m := mustSplit(t, 3, 7)
	for o, want := range []string{"0-341", "342-682", "683-1023"} {
		if got := m.Ranges(o); got != want {
			t.Errorf("3 ordinals: ordinal %d has %q, want %q", o, got, want)
		}
	}
	if m.Ranges(3) != "" {
		t.Errorf("ordinal 3 owns %q in a 3-ordinal map", m.Ranges(3))
	}
	one := mustSplit(t, 1, 1)
	if one.Ranges(0) != "0-1023" {
		t.Errorf("1 ordinal: %q", one.Ranges(0))
	}
	all := mustSplit(t, 512, 1)
	if all.Ranges(0) != "0-1" || all.Ranges(511) != "1022-1023" {
		t.Errorf("512 ordinals: first %q last %q", all.Ranges(0), all.Ranges(511))
	}

	for _, n := range []int{-1, 0, 513, 1023, 1024, 1025} {
		_, err := EvenSplit(n, 1, peersFor(max(n, 0)))
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "1 to 512") {
			t.Errorf("EvenSplit(%d) = %v, want a refusal naming 1 to 512", n, err)
		}
	}
	if _, err := EvenSplit(3, 1, peersFor(2)); err == nil || !strings.Contains(err.Error(), "ordinal 2 owns slots 683-1023 but has no peer address") {
		t.Errorf("missing peer: %v", err)
	}
	if _, err := EvenSplit(3, 0, peersFor(3)); err == nil || !strings.Contains(err.Error(), "epoch is 0") {
		t.Errorf("epoch 0: %v", err)
	}
}

func TestOwnerAndOwnerOf(t *testing.T) {
	m := mustSplit(t, 3, 1)
	for slot, want := range map[uint16]int{0: 0, 341: 0, 342: 1, 682: 1, 683: 2, 1023: 2} {
		if got := m.Owner(slot); got != want {
			t.Errorf("Owner(%d) = %d, want %d", slot, got, want)
		}
	}
	for _, tt := range []struct {
		b0, b1 byte
		want   int
	}{{0x00, 0x00, 0}, {0xff, 0xff, 2}, {0x01, 0x56, 1}, {0x04, 0x00, 0}} {
		if got := m.OwnerOf(uuidOf(tt.b0, tt.b1)); got != tt.want {
			t.Errorf("OwnerOf(%02x%02x...) = %d, want %d", tt.b0, tt.b1, got, tt.want)
		}
	}
	u := uuidOf(0xab, 0xcd)
	if a := testing.AllocsPerRun(1000, func() { _ = m.OwnerOf(u); _ = m.Owner(1023) }); a != 0 {
		t.Fatalf("Owner/OwnerOf allocate %v times per call", a)
	}
	if a := testing.AllocsPerRun(100, func() { _ = Slot(u) }); a != 0 {
		t.Fatalf("Slot allocates %v times per call", a)
	}
}

func TestZeroMap(t *testing.T) {
	var z Map
	if !z.IsZero() || z.Epoch() != 0 || z.Ranges(0) != "" || z.SlotCount(0) != 0 || len(z.Peers()) != 0 || len(z.Ordinals()) != 0 {
		t.Fatal("the zero Map claims content")
	}
	if _, ok := z.Peer(0); ok {
		t.Fatal("the zero Map has a peer")
	}
	if !z.Equal(Map{}) || z.Equal(mustSplit(t, 1, 1)) || mustSplit(t, 1, 1).Equal(z) {
		t.Fatal("zero Map comparisons")
	}
	if z.String() != "no slot map" {
		t.Fatalf("String() = %q", z.String())
	}
	if _, err := z.MarshalBinary(); err == nil {
		t.Fatal("the zero Map encoded")
	}
}

func TestEqualAndSameContent(t *testing.T) {
	a := mustSplit(t, 3, 5)
	// The same ownership written as more, out-of-order ranges.
	b, err := New(5, []Range{
		{From: 683, To: 1023, Ordinal: 2}, {From: 0, To: 100, Ordinal: 0},
		{From: 342, To: 682, Ordinal: 1}, {From: 101, To: 341, Ordinal: 0},
	}, peersFor(3))
	if err != nil {
		t.Fatal(err)
	}
	if !a.Equal(b) || !a.SameContent(b) {
		t.Fatal("the same ownership written differently is not equal")
	}
	if got := b.Spec().Ranges; len(got) != 3 || got[0] != (Range{0, 341, 0}) {
		t.Fatalf("ranges are not canonical: %v", got)
	}
	c := mustSplit(t, 3, 6)
	if a.Equal(c) || !a.SameContent(c) {
		t.Fatal("epoch must count for Equal only")
	}
	moved := peersFor(3)
	moved[1] = "10.9.9.9:9977"
	d, err := EvenSplit(3, 5, moved)
	if err != nil {
		t.Fatal(err)
	}
	if a.Equal(d) || a.SameContent(d) {
		t.Fatal("a changed peer address is the same content")
	}
	extra := peersFor(4)
	e, err := EvenSplit(3, 5, extra)
	if err != nil {
		t.Fatal(err)
	}
	if a.SameContent(e) || e.SameContent(a) {
		t.Fatal("an extra peer is the same content")
	}
	f, err := New(5, []Range{{0, 340, 0}, {341, 682, 1}, {683, 1023, 2}}, peersFor(3))
	if err != nil {
		t.Fatal(err)
	}
	if a.SameContent(f) {
		t.Fatal("one slot moved is the same content")
	}
}

func TestMapIsImmutable(t *testing.T) {
	peers := peersFor(2)
	ranges := []Range{{0, 511, 0}, {512, 1023, 1}}
	m, err := New(1, ranges, peers)
	if err != nil {
		t.Fatal(err)
	}
	peers[0] = "changed:1"
	ranges[0].Ordinal = 1
	got := m.Peers()
	got[1] = "changed:2"
	s := m.Spec()
	s.Ranges[0].To = 5
	if a, _ := m.Peer(0); a != "10.0.0.0:9977" {
		t.Fatalf("peer 0 is %q", a)
	}
	if a, _ := m.Peer(1); a != "10.0.0.1:9977" {
		t.Fatalf("peer 1 is %q", a)
	}
	if m.Ranges(0) != "0-511" || m.Owner(0) != 0 {
		t.Fatalf("ranges changed: %q", m.Ranges(0))
	}
}

func TestRangesDisplay(t *testing.T) {
	m, err := New(1, []Range{{0, 99, 0}, {100, 100, 1}, {101, 511, 0}, {512, 1023, 1}}, peersFor(3))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Ranges(0); got != "0-99,101-511" {
		t.Errorf("ordinal 0: %q", got)
	}
	if got := m.Ranges(1); got != "100,512-1023" {
		t.Errorf("ordinal 1: %q", got)
	}
	if got := m.SlotCount(1); got != 513 {
		t.Errorf("ordinal 1 count %d", got)
	}
	if got, want := m.String(), "epoch 1: 0=0-99,101-511@10.0.0.0:9977 1=100,512-1023@10.0.0.1:9977 2=-@10.0.0.2:9977"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestValidateNamesTheProblem(t *testing.T) {
	p3 := peersFor(3)
	for _, tt := range []struct {
		name string
		spec Spec
		want []string
	}{
		{"gap", Spec{1, []Range{{0, 341, 0}, {401, 1023, 1}}, p3},
			[]string{"slots 342-400 are not covered by any range"}},
		{"gap of one at the end", Spec{1, []Range{{0, 1022, 0}}, p3},
			[]string{"slots 1023 are not covered"}},
		{"gap at the start", Spec{1, []Range{{1, 1023, 0}}, p3},
			[]string{"slots 0 are not covered"}},
		{"overlap", Spec{1, []Range{{0, 341, 0}, {300, 1023, 1}}, p3},
			[]string{"slots 300-341 are covered twice (ranges 0 and 1 overlap)"}},
		{"duplicate range", Spec{1, []Range{{0, 1023, 0}, {0, 1023, 0}}, p3},
			[]string{"slots 0-1023 are covered twice (ranges 0 and 1 overlap)"}},
		{"missing peer", Spec{1, []Range{{0, 511, 0}, {512, 1023, 5}}, p3},
			[]string{"ordinal 5 owns slots 512-1023 but has no peer address"}},
		{"missing peer, split ranges", Spec{1, []Range{{0, 9, 0}, {10, 19, 4}, {20, 1000, 0}, {1001, 1023, 4}}, p3},
			[]string{"ordinal 4 owns slots 10-19,1001-1023 but has no peer address"}},
		{"epoch zero", Spec{0, []Range{{0, 1023, 0}}, p3}, []string{"epoch is 0"}},
		{"no ranges", Spec{1, nil, p3}, []string{"no ranges: slots 0-1023 have no owner"}},
		{"reversed", Spec{1, []Range{{0, 1023, 0}, {500, 400, 1}}, p3}, []string{"range 1 starts at 500, after its end 400"}},
		{"past the end", Spec{1, []Range{{0, 1024, 0}}, p3}, []string{"range 0 (from 0 to 1024) goes outside slots 0-1023", "slots 0-1023 are not covered"}},
		{"negative", Spec{1, []Range{{-1, 1023, 0}}, p3}, []string{"range 0 (from -1 to 1023) goes outside"}},
		{"ordinal 512", Spec{1, []Range{{0, 1023, 512}}, map[int]string{512: "a:1"}},
			[]string{"range 0 (0-1023) names ordinal 512; ordinals are 0-511", "peer 512: ordinals are 0-511"}},
		{"negative ordinal", Spec{1, []Range{{0, 1023, -1}}, p3}, []string{"names ordinal -1"}},
		{"empty address", Spec{1, []Range{{0, 1023, 0}}, map[int]string{0: ""}}, []string{"peer 0: empty address"}},
		{"no port", Spec{1, []Range{{0, 1023, 0}}, map[int]string{0: "10.0.0.1"}}, []string{`peer 0: address "10.0.0.1" is not host:port`}},
		{"no host", Spec{1, []Range{{0, 1023, 0}}, map[int]string{0: ":9977"}}, []string{`peer 0: address ":9977" has no host`}},
		{"port 0", Spec{1, []Range{{0, 1023, 0}}, map[int]string{0: "h:0"}}, []string{"port must be a number from 1 to 65535"}},
		{"port 65536", Spec{1, []Range{{0, 1023, 0}}, map[int]string{0: "h:65536"}}, []string{"port must be"}},
		{"port name", Spec{1, []Range{{0, 1023, 0}}, map[int]string{0: "h:http"}}, []string{"port must be"}},
		{"long address", Spec{1, []Range{{0, 1023, 0}}, map[int]string{0: strings.Repeat("a", MaxAddrLen-5) + ":9977x"}}, []string{"bytes long; at most 300"}},
		{"shared address", Spec{1, []Range{{0, 511, 0}, {512, 1023, 1}}, map[int]string{0: "h:1", 1: "h:1"}},
			[]string{`peers 0 and 1 have the same address "h:1"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%v does not wrap ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if _, err := tt.spec.Build(); err == nil {
				t.Fatal("Build accepted what Validate refused")
			}
		})
	}
	// The longest address that is allowed, and IPv6.
	longName := strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", 61)
	for _, a := range []string{longName + ":65535", "[fd00::1]:9977", "pod-0.pushnode.ns.svc:9977", "10.0.0.7:9977", "my_host:1"} {
		if err := (Spec{1, []Range{{0, 1023, 0}}, map[int]string{0: a}}).Validate(); err != nil {
			t.Errorf("address %q refused: %v", a, err)
		}
	}
	// Hosts no resolver takes, and epochs past the largest.
	for _, a := range []string{"a b:1", longName + "b:1", "-a:1", "a-:1", "a..b:1", "a/b:1", "[fd00::1:1"} {
		if err := (Spec{1, []Range{{0, 1023, 0}}, map[int]string{0: a}}).Validate(); err == nil {
			t.Errorf("address %q accepted", a)
		}
	}
	for _, e := range []uint64{MaxEpoch + 1, ^uint64(0)} {
		if err := (Spec{e, []Range{{0, 1023, 0}}, map[int]string{0: "a:1"}}).Validate(); err == nil || !strings.Contains(err.Error(), "largest") {
			t.Errorf("epoch %d: %v", e, err)
		}
	}
	// A garbage map gets a readable error, not 1024 lines.
	var junk []Range
	for i := 0; i < 100; i++ {
		junk = append(junk, Range{i * 10, i*10 + 3, 600})
	}
	err := Spec{0, junk, nil}.Validate()
	if err == nil || !strings.Contains(err.Error(), "more") || len(err.Error()) > 2000 {
		t.Fatalf("garbage map error: %v", err)
	}
}
