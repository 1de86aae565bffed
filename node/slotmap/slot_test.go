package slotmap

import (
	"crypto/md5"
	"testing"

	"github.com/ddpush/ddpush-operator/node/wire"
)

func uuidOf(b0, b1 byte) wire.UUID {
	var u wire.UUID
	u[0], u[1] = b0, b1
	for i := 2; i < len(u); i++ {
		u[i] = 0xa5 // the tail never matters
	}
	return u
}

func TestSlotBoundaries(t *testing.T) {
	for _, tt := range []struct {
		b0, b1 byte
		want   uint16
	}{
		{0x00, 0x00, 0},
		{0x00, 0x01, 1},
		{0x00, 0xff, 255},
		{0x03, 0xff, 1023},
		{0x04, 0x00, 0}, // 1024 wraps
		{0x04, 0x01, 1},
		{0x07, 0xff, 1023},
		{0xff, 0x00, 0xff00 % 1024},
		{0xff, 0xfe, 1022},
		{0xff, 0xff, 1023},
		{0x80, 0x00, 0},
	} {
		if got := Slot(uuidOf(tt.b0, tt.b1)); got != tt.want {
			t.Errorf("Slot(%02x %02x ...) = %d, want %d", tt.b0, tt.b1, got, tt.want)
		}
	}
	// Every two-byte prefix lands in range, and each slot gets exactly 64
	// of the 65536 prefixes: slots are even for md5 uuids.
	var per [NumSlots]int
	for p := 0; p < 1<<16; p++ {
		s := Slot(uuidOf(byte(p>>8), byte(p)))
		if s >= NumSlots {
			t.Fatalf("slot %d out of range", s)
		}
		per[s]++
	}
	for s, n := range per {
		if n != 64 {
			t.Fatalf("slot %d has %d prefixes, want 64", s, n)
		}
	}
	// The user id a DDPush client uses becomes md5(userId).
	u := wire.UUID(md5.Sum([]byte("10001")))
	if got, want := Slot(u), (uint16(u[0])<<8|uint16(u[1]))%1024; got != want {
		t.Fatalf("Slot(md5(10001)) = %d, want %d", got, want)
	}
}

func TestOrdinalFromPodName(t *testing.T) {
	for _, tt := range []struct {
		name string
		want int
		ok   bool
	}{
		{"pushnode-0", 0, true},
		{"name-12", 12, true},
		{"a-1", 1, true},
		{"my-push-node-511", 511, true},
		{"name-1-2", 2, true},
		{"name-512", 0, false},
		{"name-999", 0, false},
		{"name-1000", 0, false},
		{"name-99999999999999999999999", 0, false},
		{"name-012", 0, false},
		{"name-00", 0, false},
		{"name-", 0, false},
		{"name", 0, false},
		{"12", 0, false},
		{"-12", 0, false},
		{"", 0, false},
		{"-", 0, false},
		{"name-+1", 0, false},
		{"name--1", 1, true}, // only the "-N" suffix is read
		{"name-1a", 0, false},
		{"name_1", 0, false},
		{"name-١", 0, false}, // a non-ASCII digit
	} {
		got, ok := OrdinalFromPodName(tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("OrdinalFromPodName(%q) = %d, %v; want %d, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestPushIDPartition(t *testing.T) {
	if IDBase(0) != 0 {
		t.Fatalf("ordinal 0 must keep today's ids, got base %d", IDBase(0))
	}
	for _, o := range []int{0, 1, 2, 255, 510, 511} {
		base := IDBase(o)
		for _, seq := range []uint64{0, 1, 1 << 20, MaxIDSeq} {
			id := base | seq
			if id >= 1<<53 {
				t.Fatalf("ordinal %d seq %d: id %d is not JavaScript-safe", o, seq, id)
			}
			got, ok := OrdinalOfID(id)
			if !ok || got != o {
				t.Fatalf("OrdinalOfID(%d) = %d, %v; want %d", id, got, ok, o)
			}
		}
	}
	if _, ok := OrdinalOfID(1 << 53); ok {
		t.Fatal("an id of 2^53 was attributed to an ordinal")
	}
	if _, ok := OrdinalOfID(^uint64(0)); ok {
		t.Fatal("the largest id was attributed to an ordinal")
	}
	for _, bad := range []int{-1, MaxOrdinals, 1 << 20} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("IDBase(%d) did not panic", bad)
				}
			}()
			IDBase(bad)
		}()
	}
}
