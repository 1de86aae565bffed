package slotmap

import (
	"fmt"

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
