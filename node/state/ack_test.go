package state

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	"github.com/ddpush/ddpush-operator/node/wire"
)

func TestAckGeneralClearsTheFlag(t *testing.T) {
	r := newRecord()
	push(r, t0, 1, General, 0, "")
	udpHeartbeat(r, t0+second, addrA)
	r.Flags &^= FlagDirty
	evs, changed := r.Ack(t0+2*second, wire.CmdGeneral, 0, nil)
	checkEvents(t, evs, ev(1, General, Acknowledged, t0+2*second))
	if !changed || r.Flags&FlagDirty == 0 {
		t.Errorf("changed = %v, dirty = %v; want both", changed, r.Flags&FlagDirty != 0)
	}
	if r.HasPending() || r.Ext.GeneralID != 0 || r.Ext.GeneralSent {
		t.Errorf("general still pending: %+v", *r.Ext)
	}
	if r.Ext.GeneralAt != t0 {
		t.Errorf("GeneralAt = %d, the time of the last push must survive the ack", r.Ext.GeneralAt)
	}
	if rep, _ := udpHeartbeat(r, t0+3*second, addrA); !rep.Empty() {
		t.Errorf("acked general resent: %+v", rep)
	}
	// A second ack of the same thing is a no-op.
	evs, changed = r.Ack(t0+4*second, wire.CmdGeneral, 0, nil)
	if changed || len(evs) != 0 {
		t.Errorf("repeated ack: changed %v, events %v", changed, evs)
	}
}

func TestAckClassifiedClearsExactlyTheAckedBits(t *testing.T) {
	r := newRecord()
	// Neither push covers the other, so both stay pending.
	push(r, t0, 1, Classified, 0b0011, "")
	push(r, t0, 2, Classified, 0b1100, "")
	push(r, t0, 3, Classified, 1<<63, "")
	if r.Ext.Mask != 0b1111|1<<63 {
		t.Fatalf("mask = %#x", r.Ext.Mask)
	}
	steps := []struct {
		ack      uint64
		wantMask uint64
		wantEvs  []Event
		changed  bool
	}{
		{0b0001, 0b1110 | 1<<63, nil, true},                                            // half of push 1
		{0b0001, 0b1110 | 1<<63, nil, false},                                           // already acked
		{0b1_0000, 0b1110 | 1<<63, nil, false},                                         // never pending
		{0b0110, 0b1000 | 1<<63, []Event{ev(1, Classified, Acknowledged, t0+4)}, true}, // rest of 1, half of 2
		{^uint64(0), 0, []Event{ev(2, Classified, Acknowledged, t0+5), ev(3, Classified, Acknowledged, t0+5)}, true},
	}
	for i, s := range steps {
		now := t0 + int64(i) + 1
		evs, changed := r.Ack(now, wire.CmdClassified, s.ack, nil)
		if r.Ext.Mask != s.wantMask {
			t.Errorf("step %d: ack %#b left mask %#x, want %#x", i, s.ack, r.Ext.Mask, s.wantMask)
		}
		if changed != s.changed {
			t.Errorf("step %d: changed = %v, want %v", i, changed, s.changed)
		}
		checkEvents(t, evs, s.wantEvs...)
	}
	if r.HasPending() || len(r.Ext.Classes) != 0 {
		t.Errorf("still pending after acking every bit: %+v", *r.Ext)
	}
	if r.Ext.MaskAt != t0 {
		t.Errorf("MaskAt = %d, want the last push time", r.Ext.MaskAt)
	}
}

// The reply to a heartbeat after a partial ack carries only what is left.
func TestPartialClassifiedAckShrinksTheResentMask(t *testing.T) {
	r := newRecord()
	push(r, t0, 1, Classified, 0xf0f0, "")
	r.Ack(t0+1, wire.CmdClassified, 0x00f0, nil)
	rep, _ := udpHeartbeat(r, t0+2, addrA)
	if rep.Mask != 0xf000 {
		t.Errorf("resent mask %#x, want 0xf000", rep.Mask)
	}
}

func TestAckCustomClearsThePayload(t *testing.T) {
	r := newRecord()
	push(r, t0, 4, Custom, 0, "hello")
	evs, changed := r.Ack(t0+1, wire.CmdCustom, 0, nil)
	checkEvents(t, evs, ev(4, Custom, Acknowledged, t0+1))
	if !changed || r.Ext.Custom != nil || r.Ext.CustomID != 0 || r.Ext.CustomSent {
		t.Errorf("changed %v, ext %+v", changed, *r.Ext)
	}
	if r.Ext.CustomAt != t0 {
		t.Errorf("CustomAt = %d, want t0", r.Ext.CustomAt)
	}
}

func TestAckTouchesOnlyItsKind(t *testing.T) {
	for _, cmd := range []byte{wire.CmdGeneral, wire.CmdClassified, wire.CmdCustom} {
		t.Run(fmt.Sprintf("%#x", cmd), func(t *testing.T) {
			r := newRecord()
			push(r, t0, 1, General, 0, "")
			push(r, t0, 2, Classified, 0b1, "")
			push(r, t0, 3, Custom, 0, "x")
			r.Ack(t0+1, cmd, ^uint64(0), nil)
			e := r.Ext
			if (e.GeneralID != 0) != (cmd != wire.CmdGeneral) ||
				(e.Mask != 0) != (cmd != wire.CmdClassified) ||
				(e.Custom != nil) != (cmd != wire.CmdCustom) {
				t.Errorf("ack %#x left general=%v mask=%#x custom=%q", cmd, e.GeneralID != 0, e.Mask, e.Custom)
			}
		})
	}
}

func TestAckWithNothingPendingChangesNothing(t *testing.T) {
	records := map[string]func() *Record{
		"idle, no Ext": func() *Record {
			r := newRecord()
			udpHeartbeat(r, t0, addrA)
			return r
		},
		"Ext with only a connection": func() *Record {
			r := newRecord()
			r.Heartbeat(t0, TCP, netip.AddrPort{}, &fakeConn{}, PolicyNever, 0, nil)
			return r
		},
		"everything acked": func() *Record {
			r := newRecord()
			push(r, t0, 1, General, 0, "")
			push(r, t0, 2, Classified, 0b1, "")
			push(r, t0, 3, Custom, 0, "x")
			r.Ack(t0, wire.CmdGeneral, 0, nil)
			r.Ack(t0, wire.CmdClassified, 0b1, nil)
			r.Ack(t0, wire.CmdCustom, 0, nil)
			return r
		},
	}
	for name, mk := range records {
		for _, cmd := range []byte{wire.CmdHeartbeat, wire.CmdGeneral, wire.CmdClassified, wire.CmdCustom, wire.CmdReset} {
			t.Run(fmt.Sprintf("%s/%#x", name, cmd), func(t *testing.T) {
				r := mk()
				r.Flags &^= FlagDirty
				before := snapshot(r)
				prior := []Event{ev(77, General, Queued, 1)}
				evs, changed := r.Ack(t0+secs(5), cmd, ^uint64(0), prior)
				if changed {
					t.Error("changed = true")
				}
				checkEvents(t, evs, prior...)
				if got := snapshot(r); !reflect.DeepEqual(got, before) {
					t.Errorf("record changed:\n got %+v\nwant %+v", got, before)
				}
			})
		}
	}
}

// secs converts seconds to the unix-ns durations the package works in.
func secs(s int64) int64 { return s * second }

func TestAckIsNotAHeartbeat(t *testing.T) {
	r := newRecord()
	udpHeartbeat(r, t0, addrA)
	push(r, t0, 1, General, 0, "")
	push(r, t0, 2, Classified, 1, "")
	push(r, t0, 3, Custom, 0, "x")
	for _, cmd := range []byte{wire.CmdGeneral, wire.CmdClassified, wire.CmdCustom} {
		r.Ack(t0+secs(30), cmd, 1, nil)
	}
	if r.LastSeen != t0 {
		t.Errorf("LastSeen = t0%+d after acks, want t0", r.LastSeen-t0)
	}
	if a, _ := r.Addr(); a != addrA {
		t.Errorf("Addr() = %v", a)
	}
}
