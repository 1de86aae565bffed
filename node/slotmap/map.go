package slotmap

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ddpush/ddpush-operator/node/wire"
)

// Map is a valid, immutable slot map. Copying a Map is cheap (it shares
// its tables) and safe for concurrent use.
type Map struct {
	c *compiled
}

type compiled struct {
	epoch  uint64
	owner  [NumSlots]uint16 // the per-packet lookup table
	ranges []Range          // canonical: ascending, same-owner neighbours merged
	peers  map[int]string
}

// New builds a Map from its parts; see Spec.Validate for the rules.
func New(epoch uint64, ranges []Range, peers map[int]string) (Map, error) {
	return Spec{Epoch: epoch, Ranges: ranges, Peers: peers}.Build()
}

// IsZero reports whether m is the zero Map (no map at all).
func (m Map) IsZero() bool { return m.c == nil }

// Epoch is the map's epoch; 0 for the zero Map.
func (m Map) Epoch() uint64 {
	if m.c == nil {
		return 0
	}
	return m.c.epoch
}

// Owner is the ordinal owning a slot. slot must be below NumSlots; m must
// not be the zero Map. It is one array read and never allocates.
func (m Map) Owner(slot uint16) int {
	return int(m.c.owner[slot])
}

// OwnerOf is the ordinal owning the slot of a uuid (its home).
func (m Map) OwnerOf(u wire.UUID) int {
	return int(m.c.owner[Slot(u)])
}

// Peer is the peer address of an ordinal.
func (m Map) Peer(ordinal int) (addr string, ok bool) {
	if m.c == nil {
		return "", false
	}
	addr, ok = m.c.peers[ordinal]
	return addr, ok
}

// Peers returns a copy of the ordinal -> address table.
func (m Map) Peers() map[int]string {
	out := make(map[int]string, m.peerCount())
	if m.c != nil {
		for o, a := range m.c.peers {
			out[o] = a
		}
	}
	return out
}

func (m Map) peerCount() int {
	if m.c == nil {
		return 0
	}
	return len(m.c.peers)
}

// Ordinals lists the ordinals that have a peer address, ascending.
func (m Map) Ordinals() []int {
	out := make([]int, 0, m.peerCount())
	if m.c != nil {
		for o := range m.c.peers {
			out = append(out, o)
		}
	}
	sort.Ints(out)
	return out
}

// Spec returns the map's parts, ranges in canonical form. The caller
// owns the result.
func (m Map) Spec() Spec {
	if m.c == nil {
		return Spec{}
	}
	return Spec{Epoch: m.c.epoch, Ranges: append([]Range(nil), m.c.ranges...), Peers: m.Peers()}
}

// SlotCount is the number of slots an ordinal owns.
func (m Map) SlotCount(ordinal int) int {
	n := 0
	if m.c != nil {
		for _, r := range m.c.ranges {
			if r.Ordinal == ordinal {
				n += r.To - r.From + 1
			}
		}
	}
	return n
}

// Ranges shows the slots of an ordinal for people: "0-341", or
// "0-99,512-611" when they are not contiguous, "" when it owns none.
func (m Map) Ranges(ordinal int) string {
	if m.c == nil {
		return ""
	}
	var b strings.Builder
	for _, r := range m.c.ranges {
		if r.Ordinal != ordinal {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.String())
	}
	return b.String()
}

// SameContent reports whether two maps give every slot the same owner and
// every ordinal the same address, whatever their epochs and however their
// ranges were written.
func (m Map) SameContent(o Map) bool {
	if m.c == nil || o.c == nil {
		return m.c == o.c
	}
	if m.c.owner != o.c.owner || len(m.c.peers) != len(o.c.peers) {
		return false
	}
	for ord, a := range m.c.peers {
		if b, ok := o.c.peers[ord]; !ok || a != b {
			return false
		}
	}
	return true
}

// Equal reports whether two maps have the same epoch and the same content.
// A node accepts a map whose epoch equals its own only if they are Equal.
func (m Map) Equal(o Map) bool {
	return m.Epoch() == o.Epoch() && m.SameContent(o)
}

// String is a one-line summary for logs: epoch and each ordinal's slots.
func (m Map) String() string {
	if m.c == nil {
		return "no slot map"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "epoch %d:", m.c.epoch)
	for _, o := range m.Ordinals() {
		fmt.Fprintf(&b, " %d=%s@%s", o, orDash(m.Ranges(o)), m.c.peers[o])
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// EvenSplit gives n ordinals (0..n-1) contiguous ranges whose sizes differ
// by at most one, the larger ones first: for n = 3, 0-341, 342-682 and
// 683-1023. peers must have an address for each of them.
func EvenSplit(n int, epoch uint64, peers map[int]string) (Map, error) {
	if err := checkCount(n); err != nil {
		return Map{}, err
	}
	q, r := NumSlots/n, NumSlots%n
	ranges := make([]Range, 0, n)
	from := 0
	for o := range n {
		size := q
		if o < r {
			size++
		}
		ranges = append(ranges, Range{From: from, To: from + size - 1, Ordinal: o})
		from += size
	}
	return New(epoch, ranges, peers)
}

func checkCount(n int) error {
	if n < 1 || n > MaxOrdinals {
		return fmt.Errorf("%w: %d ordinals; a slot map has 1 to %d", ErrInvalid, n, MaxOrdinals)
	}
	return nil
}
