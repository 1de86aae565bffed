package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/ddpush/ddpush-operator/node/wire"
)

// roundTripCases are records in every shape the store sees, built through
// the state machine where possible so that they are reachable states.
func roundTripCases() map[string]*Record {
	cases := map[string]*Record{}

	r := newRecord()
	r.LastSeen = t0
	cases["idle, no address"] = r

	r = newRecord()
	udpHeartbeat(r, t0, addrA)
	cases["idle, IPv4 address"] = r

	r = newRecord()
	udpHeartbeat(r, t0, addr6)
	cases["idle, IPv6 address"] = r

	r = newRecord()
	udpHeartbeat(r, -5, netip.MustParseAddrPort("[::ffff:10.0.0.1]:1"))
	cases["negative time, mapped address"] = r

	r = newRecord()
	udpHeartbeat(r, t0, addrA)
	push(r, t0+1, 1, General, 0, "")
	push(r, t0+2, 2, Classified, 0xdead_beef_0000_0001, "")
	push(r, t0+3, 3, Custom, 0, "custom payload")
	cases["every kind pending, sent"] = r

	r = newRecord()
	r.LastSeen = t0
	push(r, t0+1, 1<<40, General, 0, "")
	push(r, t0+2, 2, Classified, 0b1, "")
	push(r, t0+3, 1<<63, Custom, 0, string(bytes.Repeat([]byte{0, 0xff}, 250)))
	cases["every kind pending, queued, big ids"] = r

	r = newRecord()
	udpHeartbeat(r, t0, addr6)
	push(r, t0, 1, Classified, 0b0011, "")
	push(r, t0, 2, Classified, 0b1100, "")
	r.LastSeen = t0 - window // offline for the next one
	push(r, t0, 3, Classified, 1<<63, "")
	r.Ack(t0, wire.CmdClassified, 0b0001, nil)
	cases["several classified, mixed sent"] = r

	r = newRecord()
	udpHeartbeat(r, t0, addrA)
	push(r, t0, 1, General, 0, "")
	push(r, t0, 2, Custom, 0, "x")
	r.Ack(t0, wire.CmdGeneral, 0, nil)
	r.Ack(t0, wire.CmdCustom, 0, nil)
	cases["all acked, times kept"] = r

	r = newRecord()
	r.SetAddr(netip.MustParseAddrPort("[fe80::1]:65535"))
	r.Ext = &Ext{Mask: ^uint64(0), MaskAt: 1, Classes: []ClassPush{{ID: ^uint64(0), Bits: ^uint64(0), Sent: true}}}
	cases["extreme values"] = r

	r = newRecord()
	r.LastSeen = t0
	r.Ext = &Ext{Classes: make([]ClassPush, 64), Mask: ^uint64(0), MaskAt: t0}
	for i := range r.Ext.Classes {
		r.Ext.Classes[i] = ClassPush{ID: uint64(i + 1), Bits: 1 << i, Sent: i%2 == 0}
	}
	cases["64 classified pushes"] = r
	return cases
}

func TestRecordBinaryRoundTrip(t *testing.T) {
	for name, orig := range roundTripCases() {
		t.Run(name, func(t *testing.T) {
			orig.Flags |= FlagDirty | FlagInUse
			enc := orig.AppendBinary([]byte("prefix"))
			if string(enc[:6]) != "prefix" {
				t.Fatalf("AppendBinary overwrote dst")
			}
			enc = enc[6:]
			got := Record{UUID: orig.UUID, Flags: FlagInUse}
			if err := got.UnmarshalBinary(enc); err != nil {
				t.Fatalf("UnmarshalBinary(% x) = %v", enc, err)
			}
			want := snapshot(orig)
			// Neither the dirty mark nor the connection is stored; the
			// receiver's own slab flags are left alone.
			want.Flags = want.Flags&flagHasAddr | FlagInUse
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip:\n got %+v ext %+v\nwant %+v ext %+v", got, got.Ext, want, want.Ext)
			}
			ga, gok := got.Addr()
			wa, wok := orig.Addr()
			if ga != wa || gok != wok {
				t.Errorf("Addr() = %v %v, want %v %v", ga, gok, wa, wok)
			}
			if again := got.AppendBinary(nil); !bytes.Equal(again, enc) {
				t.Errorf("re-encoding differs:\n% x\n% x", again, enc)
			}
			// The payload is copied: the store may reuse its buffer.
			if got.Ext != nil && got.Ext.Custom != nil {
				for i := range enc {
					enc[i] = 0xee
				}
				if !bytes.Equal(got.Ext.Custom, orig.Ext.Custom) {
					t.Error("decoded payload aliases the input buffer")
				}
			}
		})
	}
}

// The connection does not survive a restart, so an Ext holding only a
// connection stores as an idle record.
func TestRecordBinaryDropsConnection(t *testing.T) {
	r := newRecord()
	r.Heartbeat(t0, TCP, netip.AddrPort{}, &fakeConn{}, PolicyNever, 0, nil)
	var got Record
	if err := got.UnmarshalBinary(r.AppendBinary(nil)); err != nil {
		t.Fatal(err)
	}
	if got.Ext != nil || got.LastSeen != t0 {
		t.Errorf("decoded %+v ext %+v", got, got.Ext)
	}
}

// The stored form is what existing databases hold; pin it so a change is a
// deliberate format bump, not an accident.
func TestRecordBinaryStoredForm(t *testing.T) {
	r := newRecord()
	udpHeartbeat(r, 150, addrA)
	want := []byte{
		1,          // format
		1,          // flags: has address
		0xac, 0x02, // zigzag varint 150
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1, // IPv4-mapped
		0x9c, 0x40, // port 40000
	}
	if got := r.AppendBinary(nil); !bytes.Equal(got, want) {
		t.Errorf("idle record stored as\n% x\nwant\n% x", got, want)
	}
	var idle Record
	idle.LastSeen = -1
	if got := idle.AppendBinary(nil); !bytes.Equal(got, []byte{1, 0, 0x01}) {
		t.Errorf("bare record stored as % x", got)
	}
}

func TestRecordUnmarshalRejectsCorrupt(t *testing.T) {
	for name, orig := range roundTripCases() {
		enc := orig.AppendBinary(nil)
		t.Run(name, func(t *testing.T) {
			for i := range len(enc) {
				var r Record
				if err := r.UnmarshalBinary(enc[:i]); err == nil {
					t.Errorf("truncated to %d of %d bytes: accepted", i, len(enc))
				}
			}
			var r Record
			if err := r.UnmarshalBinary(append(slices.Clone(enc), 0)); err == nil {
				t.Error("trailing byte accepted")
			}
			for _, v := range []byte{0, 2, 0xff} {
				bad := slices.Clone(enc)
				bad[0] = v
				if err := r.UnmarshalBinary(bad); err == nil {
					t.Errorf("format byte %d accepted", v)
				}
			}
		})
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"too many classified pushes", ext(func(b []byte) []byte {
			b = binary.AppendUvarint(b, 0) // GeneralID
			b = binary.AppendVarint(b, 0)  // GeneralAt
			b = append(b, 0, 0, 0, 0, 0, 0, 0, 1)
			b = binary.AppendVarint(b, 1) // MaskAt
			// 65 well-formed entries, so only the count can be the
			// reason to reject: no reachable state holds more than 64.
			b = binary.AppendUvarint(b, 65)
			for i := range 65 {
				b = binary.AppendUvarint(b, uint64(i+1))
				b = append(b, 0, 0, 0, 0, 0, 0, 0, 1, 0)
			}
			b = binary.AppendUvarint(b, 0) // CustomID
			return binary.AppendVarint(b, 0)
		}, 0)},
		{"huge class count", ext(func(b []byte) []byte {
			b = binary.AppendUvarint(b, 0)
			b = binary.AppendVarint(b, 0)
			b = append(b, 0, 0, 0, 0, 0, 0, 0, 1)
			b = binary.AppendVarint(b, 1)
			return binary.AppendUvarint(b, 1<<62)
		}, 0)},
		{"payload length above 64 KiB", ext(func(b []byte) []byte {
			b = binary.AppendUvarint(b, 0)
			b = binary.AppendVarint(b, 0)
			b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
			b = binary.AppendVarint(b, 0)
			b = binary.AppendUvarint(b, 0) // no classes
			b = binary.AppendUvarint(b, 1) // CustomID
			b = binary.AppendVarint(b, 1)  // CustomAt
			// The bytes are all there: only the bound can reject it.
			b = binary.AppendUvarint(b, 1<<16+1)
			return append(b, make([]byte, 1<<16+1)...)
		}, encHasCustom)},
		{"payload length beyond the input", ext(func(b []byte) []byte {
			b = binary.AppendUvarint(b, 0)
			b = binary.AppendVarint(b, 0)
			b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
			b = binary.AppendVarint(b, 0)
			b = binary.AppendUvarint(b, 0)
			b = binary.AppendUvarint(b, 1)
			b = binary.AppendVarint(b, 1)
			return append(binary.AppendUvarint(b, 10), "short"...)
		}, encHasCustom)},
		{"varint overflow", []byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"address cut", []byte{1, encHasAddr, 0, 1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Record
			if err := r.UnmarshalBinary(tt.in); err == nil {
				t.Errorf("UnmarshalBinary(% x) accepted: %+v", tt.in, r)
			}
		})
	}
}

// ext builds a stored record with an Ext section written by body.
func ext(body func([]byte) []byte, flags byte) []byte {
	b := []byte{recordFormat, encHasExt | flags}
	b = binary.AppendVarint(b, t0)
	return body(b)
}

// Decoding into a record that already holds state (a reused slab slot)
// must not leave any of the old state behind.
func TestRecordUnmarshalOverwritesReusedRecord(t *testing.T) {
	idle := newRecord()
	idle.LastSeen = t0
	enc := idle.AppendBinary(nil)

	r := newRecord()
	udpHeartbeat(r, 1, addr6)
	push(r, 1, 1, Custom, 0, "old")
	if err := r.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	if a, ok := r.Addr(); ok {
		t.Errorf("old address %v survived", a)
	}
	if r.Ext != nil || r.HasPending() || r.LastSeen != t0 {
		t.Errorf("old state survived: LastSeen t0%+d ext %+v", r.LastSeen-t0, r.Ext)
	}
}

func TestRecordUnmarshalErrorIsCorrupt(t *testing.T) {
	var r Record
	if err := r.UnmarshalBinary([]byte{1, 0}); !errors.Is(err, errCorrupt) {
		t.Errorf("err = %v, want errCorrupt", err)
	}
}

func FuzzRecordDecode(f *testing.F) {
	for _, r := range roundTripCases() {
		enc := r.AppendBinary(nil)
		f.Add(enc)
		f.Add(enc[:len(enc)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0xff, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		var r Record
		if err := r.UnmarshalBinary(in); err != nil {
			return
		}
		// Input may be non-canonical (overlong varints, unknown flag
		// bits), so it need not re-encode to itself, but its encoding
		// must be a fixed point.
		enc := r.AppendBinary(nil)
		var r2 Record
		if err := r2.UnmarshalBinary(enc); err != nil {
			t.Fatalf("re-encoding of an accepted record rejected: %v\n in % x\nenc % x", err, in, enc)
		}
		if enc2 := r2.AppendBinary(nil); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable:\n% x\n% x", enc, enc2)
		}
		if r.LastSeen != r2.LastSeen {
			t.Fatalf("LastSeen %d -> %d", r.LastSeen, r2.LastSeen)
		}
		a1, ok1 := r.Addr()
		a2, ok2 := r2.Addr()
		if a1 != a2 || ok1 != ok2 {
			t.Fatalf("address %v %v -> %v %v", a1, ok1, a2, ok2)
		}
		// A decoded record must be safe to drive: none of these may panic.
		var evs []Event
		r.Expire(t0, evs)
		rep, _ := r.Heartbeat(t0, UDP, addrA, nil, PolicyAddressChanged, 0, nil)
		rep.Append(nil, 1)
		r.Ack(t0, wire.CmdClassified, ^uint64(0), nil)
		r.Push(t0, window, 1, Classified, 1, nil, nil)
	})
}
