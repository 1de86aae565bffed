package state

import (
	"bytes"
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	"github.com/ddpush/ddpush-operator/node/wire"
)

func TestPushGeneralTwiceSupersedesTheFirst(t *testing.T) {
	r := newRecord()
	checkEvents(t, push(r, t0, 1, General, 0, ""), ev(1, General, Queued, t0))
	checkEvents(t, push(r, t0+1, 2, General, 0, ""),
		ev(1, General, Superseded, t0+1),
		ev(2, General, Queued, t0+1))
	if r.Ext.GeneralID != 2 || r.Ext.GeneralAt != t0+1 {
		t.Errorf("GeneralID %d GeneralAt t0%+d", r.Ext.GeneralID, r.Ext.GeneralAt-t0)
	}
	evs, _ := r.Ack(t0+2, wire.CmdGeneral, 0, nil)
	checkEvents(t, evs, ev(2, General, Acknowledged, t0+2))
}

func TestPushCustomReplacesThePayload(t *testing.T) {
	r := newRecord()
	push(r, t0, 1, Custom, 0, "old")
	checkEvents(t, push(r, t0+1, 2, Custom, 0, "new"),
		ev(1, Custom, Superseded, t0+1),
		ev(2, Custom, Queued, t0+1))
	rep, _ := udpHeartbeat(r, t0+2, addrA)
	if string(rep.Custom) != "new" {
		t.Errorf("heartbeat sends %q, want only the latest payload", rep.Custom)
	}
	if r.Ext.CustomID != 2 || r.Ext.CustomAt != t0+1 {
		t.Errorf("CustomID %d CustomAt t0%+d", r.Ext.CustomID, r.Ext.CustomAt-t0)
	}
}

// The caller hands the payload over; the record must keep that very slice,
// not a copy, and must not write into it.
func TestPushCustomKeepsPayloadUnmodified(t *testing.T) {
	r := newRecord()
	p := []byte("payload")
	r.Push(t0, window, 1, Custom, 0, p, nil)
	if &r.Ext.Custom[0] != &p[0] {
		t.Error("payload copied: Push documents taking ownership, a copy is a wasted allocation per push")
	}
	r.Ack(t0+1, wire.CmdCustom, 0, nil)
	if string(p) != "payload" {
		t.Errorf("payload mutated to %q", p)
	}
}

func TestPushClassifiedORsBits(t *testing.T) {
	r := newRecord()
	push(r, t0, 1, Classified, 0b0101, "")
	push(r, t0+1, 2, Classified, 0b0110, "")
	if r.Ext.Mask != 0b0111 {
		t.Errorf("mask = %#b, want 0b111", r.Ext.Mask)
	}
	if r.Ext.MaskAt != t0+1 {
		t.Errorf("MaskAt = t0%+d", r.Ext.MaskAt-t0)
	}
}

func TestPushClassifiedSupersession(t *testing.T) {
	type op struct {
		ack  bool // an ack of bits instead of a push
		id   uint64
		bits uint64
		want []Fate // fates of the listed ids, in event order
		ids  []uint64
	}
	tests := []struct {
		name        string
		ops         []op
		wantPending map[uint64]uint64 // id -> unacked bits left
	}{
		{"same bits supersede", []op{
			{id: 1, bits: 0b11, ids: []uint64{1}, want: []Fate{Queued}},
			{id: 2, bits: 0b11, ids: []uint64{1, 2}, want: []Fate{Superseded, Queued}},
		}, map[uint64]uint64{2: 0b11}},
		{"superset supersedes", []op{
			{id: 1, bits: 0b01, ids: []uint64{1}, want: []Fate{Queued}},
			{id: 2, bits: 0b11, ids: []uint64{1, 2}, want: []Fate{Superseded, Queued}},
		}, map[uint64]uint64{2: 0b11}},
		{"subset does not supersede", []op{
			{id: 1, bits: 0b11, ids: []uint64{1}, want: []Fate{Queued}},
			{id: 2, bits: 0b01, ids: []uint64{2}, want: []Fate{Queued}},
		}, map[uint64]uint64{1: 0b11, 2: 0b01}},
		{"disjoint does not supersede", []op{
			{id: 1, bits: 0b01, ids: []uint64{1}, want: []Fate{Queued}},
			{id: 2, bits: 0b10, ids: []uint64{2}, want: []Fate{Queued}},
		}, map[uint64]uint64{1: 0b01, 2: 0b10}},
		{"covering only the remaining bits supersedes", []op{
			{id: 1, bits: 0b11, ids: []uint64{1}, want: []Fate{Queued}},
			{ack: true, bits: 0b01},
			{id: 2, bits: 0b10, ids: []uint64{1, 2}, want: []Fate{Superseded, Queued}},
		}, map[uint64]uint64{2: 0b10}},
		{"one push supersedes several", []op{
			{id: 1, bits: 0b001, ids: []uint64{1}, want: []Fate{Queued}},
			{id: 2, bits: 0b010, ids: []uint64{2}, want: []Fate{Queued}},
			{id: 3, bits: 0b100, ids: []uint64{3}, want: []Fate{Queued}},
			{id: 4, bits: 0b011, ids: []uint64{1, 2, 4}, want: []Fate{Superseded, Superseded, Queued}},
		}, map[uint64]uint64{3: 0b100, 4: 0b011}},
		{"overlap: each acked only when all its bits are", []op{
			{id: 1, bits: 0b011, ids: []uint64{1}, want: []Fate{Queued}},
			{id: 2, bits: 0b110, ids: []uint64{2}, want: []Fate{Queued}},
			{ack: true, bits: 0b010}, // shared bit: completes neither
			{ack: true, bits: 0b001, ids: []uint64{1}, want: []Fate{Acknowledged}},
			{ack: true, bits: 0b100, ids: []uint64{2}, want: []Fate{Acknowledged}},
		}, map[uint64]uint64{}},
		{"one ack completes both", []op{
			{id: 1, bits: 0b011, ids: []uint64{1}, want: []Fate{Queued}},
			{id: 2, bits: 0b110, ids: []uint64{2}, want: []Fate{Queued}},
			{ack: true, bits: 0b111, ids: []uint64{1, 2}, want: []Fate{Acknowledged, Acknowledged}},
		}, map[uint64]uint64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRecord()
			for i, o := range tt.ops {
				now := t0 + int64(i)
				var evs []Event
				if o.ack {
					evs, _ = r.Ack(now, wire.CmdClassified, o.bits, nil)
				} else {
					evs = push(r, now, o.id, Classified, o.bits, "")
				}
				var want []Event
				for j, id := range o.ids {
					want = append(want, ev(id, Classified, o.want[j], now))
				}
				checkEvents(t, evs, want...)
			}
			got := map[uint64]uint64{}
			var union uint64
			for _, c := range r.Ext.Classes {
				got[c.ID] = c.Bits
				union |= c.Bits
			}
			if !reflect.DeepEqual(got, tt.wantPending) {
				t.Errorf("pending classified pushes %v, want %v", got, tt.wantPending)
			}
			// Superseding removes a push, never its bits: the client
			// must still be told about every unacked bit.
			if union != r.Ext.Mask {
				t.Errorf("pending pushes cover %#b, mask is %#b", union, r.Ext.Mask)
			}
		})
	}
}

// Each push covers at least one bit no later push covers, so no more than
// 64 classified pushes can be pending at once.
func TestClassifiedPendingListIsBounded(t *testing.T) {
	r := newRecord()
	for i := range 1000 {
		push(r, t0+int64(i), uint64(i+1), Classified, 1<<(i%64), "")
	}
	if n := len(r.Ext.Classes); n != 64 {
		t.Errorf("%d pending classified pushes, want 64", n)
	}
	push(r, t0+1000, 5000, Classified, ^uint64(0), "")
	if n := len(r.Ext.Classes); n != 1 {
		t.Errorf("%d pending after an all-bits push, want 1", n)
	}
}

func TestPushClassifiedZeroBitsIsAcknowledgedAtOnce(t *testing.T) {
	for _, online := range []bool{false, true} {
		t.Run(fmt.Sprintf("online=%v", online), func(t *testing.T) {
			r := newRecord()
			if online {
				udpHeartbeat(r, t0, addrA)
				r.SetConn(&fakeConn{})
			}
			push(r, t0, 1, Classified, 0b1, "")
			before := snapshot(r)
			rep, udp, tcp, evs := r.Push(t0+1, window, 2, Classified, 0, nil, nil)
			checkEvents(t, evs, ev(2, Classified, Acknowledged, t0+1))
			if !rep.Empty() || udp || tcp {
				t.Errorf("zero-bit push sends %+v udp=%v tcp=%v", rep, udp, tcp)
			}
			if r.Ext.Mask != before.Ext.Mask || !reflect.DeepEqual(r.Ext.Classes, before.Ext.Classes) {
				t.Errorf("pending changed: mask %#b classes %v, was %#b %v", r.Ext.Mask, r.Ext.Classes, before.Ext.Mask, before.Ext.Classes)
			}
			// It must not supersede the pending push either (its zero
			// bits trivially "cover" nothing).
			evs, _ = r.Ack(t0+2, wire.CmdClassified, 0b1, nil)
			checkEvents(t, evs, ev(1, Classified, Acknowledged, t0+2))
		})
	}
}

func TestPushOnlineOffline(t *testing.T) {
	conn := &fakeConn{}
	tests := []struct {
		name     string
		setup    func(r *Record)
		now      int64
		udp, tcp bool
	}{
		{"never seen", func(r *Record) {}, t0, false, false},
		// A record created by a push has LastSeen but no address: it
		// must not count as online.
		{"created by a push", func(r *Record) { r.LastSeen = t0 }, t0, false, false},
		{"heartbeat just now", func(r *Record) { udpHeartbeat(r, t0, addrA) }, t0, true, false},
		{"heartbeat window-1ns ago", func(r *Record) { udpHeartbeat(r, t0, addrA) }, t0 + window - 1, true, false},
		{"heartbeat exactly window ago", func(r *Record) { udpHeartbeat(r, t0, addrA) }, t0 + window, false, false},
		{"heartbeat long ago", func(r *Record) { udpHeartbeat(r, t0, addrA) }, t0 + 10*window, false, false},
		{"tcp connection", func(r *Record) { r.Heartbeat(t0, TCP, netip.AddrPort{}, conn, PolicyNever, 0, nil) }, t0 + 10*window, false, true},
		{"tcp and recent udp", func(r *Record) {
			r.Heartbeat(t0, TCP, netip.AddrPort{}, conn, PolicyNever, 0, nil)
			udpHeartbeat(r, t0, addrA)
		}, t0 + second, true, true},
	}
	kinds := []struct {
		kind  Kind
		bits  uint64
		data  string
		wire  []byte // Reply.Append(nil, 0) when online
		reply Reply
	}{
		{General, 0, "", []byte{1, 0, 0x10, 0, 0}, Reply{General: true}},
		{Classified, 0x8000_0000_0000_0001, "", []byte{1, 0, 0x11, 0, 8, 0x80, 0, 0, 0, 0, 0, 0, 0x01}, Reply{Mask: 0x8000_0000_0000_0001}},
		{Custom, 0, "msg", []byte{1, 0, 0x20, 0, 3, 'm', 's', 'g'}, Reply{Custom: []byte("msg")}},
	}
	for _, tt := range tests {
		for _, k := range kinds {
			t.Run(tt.name+"/"+k.kind.String(), func(t *testing.T) {
				r := newRecord()
				tt.setup(r)
				if got := r.Online(tt.now, window); got != (tt.udp || tt.tcp) {
					t.Errorf("Online = %v", got)
				}
				var payload []byte
				if k.kind == Custom {
					payload = []byte(k.data)
				}
				rep, udp, tcp, evs := r.Push(tt.now, window, 10, k.kind, k.bits, payload, nil)
				if udp != tt.udp || tcp != tt.tcp {
					t.Errorf("udp, tcp = %v, %v; want %v, %v", udp, tcp, tt.udp, tt.tcp)
				}
				online := tt.udp || tt.tcp
				if online {
					checkEvents(t, evs, ev(10, k.kind, Sent, tt.now))
					if !reflect.DeepEqual(rep, k.reply) {
						t.Errorf("reply %+v, want %+v", rep, k.reply)
					}
					if got := rep.Append(nil, 0); !bytes.Equal(got, k.wire) {
						t.Errorf("instant push =\n% x\nwant\n% x", got, k.wire)
					}
				} else {
					checkEvents(t, evs, ev(10, k.kind, Queued, tt.now))
					if !rep.Empty() {
						t.Errorf("offline push replied %+v", rep)
					}
				}
				if !r.HasPending() {
					t.Error("pushed message not pending")
				}
				if r.Flags&FlagDirty == 0 {
					t.Error("push did not mark the record dirty")
				}
				// Sent or not, it waits for the ack and goes out on the
				// next heartbeat; only a queued one is reported Sent then.
				_, evs = udpHeartbeat(r, tt.now+1, addrA)
				if online {
					checkEvents(t, evs)
				} else {
					checkEvents(t, evs, ev(10, k.kind, Sent, tt.now+1))
				}
			})
		}
	}
}

// An instant push sends the kind that was pushed; other kinds queued while
// the client was offline wait for the heartbeat, and are not reported Sent.
func TestPushOnlineSendsOnlyItsKindExceptClassified(t *testing.T) {
	r := newRecord()
	push(r, t0, 1, Custom, 0, "queued") // offline
	push(r, t0, 2, Classified, 0b01, "")
	udpHeartbeat(r, t0+1, addrA) // now online; 1 and 2 were Sent here
	r.Ext.CustomSent = false     // pretend they were not, to see what the push marks
	r.Ext.Classes[0].Sent = false
	rep, _, _, evs := r.Push(t0+2, window, 3, General, 0, nil, nil)
	if !reflect.DeepEqual(rep, Reply{General: true}) {
		t.Errorf("general push replied %+v", rep)
	}
	checkEvents(t, evs, ev(3, General, Sent, t0+2))

	// A classified push's instant 0x11 carries the whole mask, so the
	// older classified push travels with it and is Sent now.
	rep, _, _, evs = r.Push(t0+3, window, 4, Classified, 0b10, nil, nil)
	if !reflect.DeepEqual(rep, Reply{Mask: 0b11}) {
		t.Errorf("classified push replied %+v", rep)
	}
	checkEvents(t, evs, ev(2, Classified, Sent, t0+3), ev(4, Classified, Sent, t0+3))
}
