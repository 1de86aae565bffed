package slotmap

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ddpush/ddpush-operator/node/wire"
)

const (
	// NumSlots is the number of slots; it never changes, only their owners do.
	NumSlots = 1024
	// MaxOrdinals bounds the pods of one PushNode: ordinals are 0 to 511,
	// which keeps every push id below 2^53 (see IDBase).
	MaxOrdinals = 512
	// IDOrdinalShift is where a pod's ordinal sits in the push ids it hands
	// out: id = ordinal<<IDOrdinalShift | seq.
	IDOrdinalShift = 44
	// MaxIDSeq is the largest sequence number a pod may combine with its
	// IDBase before its ids would run into the next ordinal's.
	MaxIDSeq = 1<<IDOrdinalShift - 1
	// MaxEpoch is the largest slot map epoch: 2^53 - 1, which JSON
	// readers keep exactly.
	MaxEpoch = 1<<53 - 1
)

// Slot is the slot of a uuid: its first two bytes, big-endian, mod 1024.
// Uuids are md5 digests, so slots are evenly used.
func Slot(u wire.UUID) uint16 {
	return (uint16(u[0])<<8 | uint16(u[1])) % NumSlots
}

// IDBase is the first push id of the pod with this ordinal: ordinal 0 (and
// a node without a map) keeps the ids it always had. It panics on an
// ordinal outside 0..MaxOrdinals-1, which the node refuses at start-up.
func IDBase(ordinal int) uint64 {
	if ordinal < 0 || ordinal >= MaxOrdinals {
		panic(fmt.Sprintf("slotmap: IDBase of ordinal %d (ordinals are 0-%d)", ordinal, MaxOrdinals-1))
	}
	return uint64(ordinal) << IDOrdinalShift
}

// OrdinalOfID is the ordinal of the pod that handed out a push id. ok is
// false for an id no pod can have handed out (at or above 2^53).
func OrdinalOfID(id uint64) (ordinal int, ok bool) {
	o := id >> IDOrdinalShift
	if o >= MaxOrdinals {
		return 0, false
	}
	return int(o), true
}

// OrdinalFromPodName reads the ordinal a StatefulSet puts at the end of a
// pod's name ("pushnode-12" is 12). ok is false when the name does not end
// in "-N" with N a decimal number below MaxOrdinals written without
// leading zeros, or when nothing comes before the dash.
func OrdinalFromPodName(name string) (ordinal int, ok bool) {
	i := len(name)
	for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
		i--
	}
	digits := name[i:]
	if len(digits) == 0 || i < 2 || name[i-1] != '-' {
		return 0, false
	}
	if len(digits) > 1 && digits[0] == '0' {
		return 0, false
	}
	if len(digits) > 3 { // 512 and above; also keeps the loop from overflowing
		return 0, false
	}
	n := 0
	for _, c := range []byte(digits) {
		n = n*10 + int(c-'0')
	}
	if n >= MaxOrdinals {
		return 0, false
	}
	return n, true
}

// Set is a set of slots. The zero Set is empty.
type Set [NumSlots / 64]uint64

// Add puts slots from..to (inclusive) in s.
func (s *Set) Add(from, to int) {
	for i := from; i <= to; i++ {
		s[i>>6] |= 1 << (i & 63)
	}
}

// Has reports whether slot is in s.
func (s *Set) Has(slot uint16) bool { return s[slot>>6]&(1<<(slot&63)) != 0 }

// HasUUID reports whether u's slot is in s.
func (s *Set) HasUUID(u wire.UUID) bool { return s.Has(Slot(u)) }

// Len is the number of slots in s.
func (s *Set) Len() int {
	n := 0
	for _, w := range s {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}

// String writes s as ranges, e.g. "0-63,128".
func (s *Set) String() string {
	var b []byte
	for i := 0; i < NumSlots; {
		if !s.Has(uint16(i)) {
			i++
			continue
		}
		j := i
		for j+1 < NumSlots && s.Has(uint16(j+1)) {
			j++
		}
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, "%d", i)
		if j > i {
			b = fmt.Appendf(b, "-%d", j)
		}
		i = j + 1
	}
	return string(b)
}

// Gained is the set of slots that ordinal owns in next and not in prev
// (a zero prev counts as ordinal 0 owning every slot).
func Gained(prev, next Map, ordinal int) Set {
	var s Set
	a, b := ownerTable(prev), ownerTable(next)
	for i := range NumSlots {
		if int(b[i]) == ordinal && int(a[i]) != ordinal {
			s.Add(i, i)
		}
	}
	return s
}

// Lost is the set of slots that ordinal owns in prev and not in next.
func Lost(prev, next Map, ordinal int) Set { return Gained(next, prev, ordinal) }

// ParseSet reads what Set.String writes.
func ParseSet(s string) (Set, error) {
	var set Set
	if s == "" {
		return set, nil
	}
	for _, part := range strings.Split(s, ",") {
		r, err := parseRange(part)
		if err != nil {
			return set, err
		}
		set.Add(r[0], r[1])
	}
	return set, nil
}

func parseRange(s string) ([2]int, error) {
	a, b, found := strings.Cut(s, "-")
	from, err := strconv.Atoi(a)
	if err != nil || from < 0 || from >= NumSlots {
		return [2]int{}, fmt.Errorf("%w: slot %q is not a number from 0 to %d", ErrInvalid, a, NumSlots-1)
	}
	to := from
	if found {
		if to, err = strconv.Atoi(b); err != nil || to < from || to >= NumSlots {
			return [2]int{}, fmt.Errorf("%w: slot range %q must be from-to with from <= to <= %d", ErrInvalid, s, NumSlots-1)
		}
	}
	return [2]int{from, to}, nil
}
