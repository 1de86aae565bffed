package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/ddpush/ddpush-operator/node/wire"
)

const (
	t0     = int64(1_700_000_000_000_000_000) // an arbitrary unix-ns instant
	second = int64(1_000_000_000)
	window = 60 * second // PROTOCOL.md: UDP-online if the last heartbeat is < 60 s old
)

var (
	uid   = wire.UUID{0xfa, 0x0f, 0xbc, 0x1d, 0xc4, 0x39, 0x2c, 0x39, 0x70, 0xe0, 0xe5, 0xc2, 0x0e, 0x5a, 0x0e, 0xe8}
	addrA = netip.MustParseAddrPort("192.0.2.1:40000")
	addrB = netip.MustParseAddrPort("192.0.2.1:40001")     // same host, new port (NAT rebinding)
	addrC = netip.MustParseAddrPort("198.51.100.7:40000")  // new host, same port
	addr6 = netip.MustParseAddrPort("[2001:db8::1]:40000") // IPv6
)

// fakeConn stands for a live TCP connection; the state package only
// stores it.
type fakeConn struct{ name string }

func newRecord() *Record { return &Record{UUID: uid} }

// snapshot deep-copies r so that a later comparison sees every change.
func snapshot(r *Record) Record {
	c := *r
	if r.Ext != nil {
		e := *r.Ext
		e.Classes = slices.Clone(e.Classes)
		e.Custom = bytes.Clone(e.Custom)
		c.Ext = &e
	}
	return c
}

func ev(id uint64, k Kind, f Fate, at int64) Event {
	return Event{PushID: id, UUID: uid, Kind: k, Fate: f, At: at}
}

func checkEvents(t *testing.T, got []Event, want ...Event) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("events:\n got %v\nwant %v", fmtEvents(got), fmtEvents(want))
	}
}

func fmtEvents(evs []Event) string {
	var b []byte
	for _, e := range evs {
		b = fmt.Appendf(b, "{#%d %s %s t0%+d} ", e.PushID, e.Kind, e.Fate, e.At-t0)
	}
	return string(b)
}

// push applies a push and fails the test on nothing: it is only setup.
func push(r *Record, now int64, id uint64, k Kind, bits uint64, payload string) []Event {
	var p []byte
	if k == Custom {
		p = []byte(payload)
	}
	_, _, _, evs := r.Push(now, window, id, k, bits, p, nil)
	return evs
}

// udpHeartbeat is a UDP heartbeat under the default policy.
func udpHeartbeat(r *Record, now int64, from netip.AddrPort) (Reply, []Event) {
	return r.Heartbeat(now, UDP, from, nil, PolicyNever, nil)
}

func TestHeartbeatZeroAnswerPolicy(t *testing.T) {
	type beat struct {
		from netip.AddrPort
		want bool // 0x00 expected
	}
	tests := []struct {
		policy Policy
		beats  []beat
	}{
		{PolicyNever, []beat{{addrA, false}, {addrA, false}, {addrB, false}, {addr6, false}}},
		{PolicyAlways, []beat{{addrA, true}, {addrA, true}, {addrB, true}, {addrB, true}}},
		{PolicyAddressChanged, []beat{
			{addrA, true},  // first heartbeat: no address known yet
			{addrA, false}, // same address
			{addrA, false},
			{addrB, true}, // port changed
			{addrB, false},
			{addrC, true}, // host changed, port the same
			{addr6, true}, // IPv4 to IPv6
			{addr6, false},
			{addrA, true}, // back again is a change too
		}},
	}
	for _, tt := range tests {
		t.Run(tt.policy.String(), func(t *testing.T) {
			r := newRecord()
			for i, b := range tt.beats {
				now := t0 + int64(i)*50*second
				rep, evs := r.Heartbeat(now, UDP, b.from, nil, tt.policy, nil)
				want := Reply{Heartbeat: b.want}
				if !reflect.DeepEqual(rep, want) {
					t.Errorf("heartbeat %d from %v: reply %+v, want %+v", i, b.from, rep, want)
				}
				if rep.Empty() == b.want {
					t.Errorf("heartbeat %d: Empty() = %v with Heartbeat %v", i, rep.Empty(), b.want)
				}
				if len(evs) != 0 {
					t.Errorf("heartbeat %d: events %v with nothing pending", i, evs)
				}
				if got, ok := r.Addr(); !ok || got != b.from {
					t.Errorf("heartbeat %d: Addr() = %v, %v; want %v", i, got, ok, b.from)
				}
				if r.LastSeen != now {
					t.Errorf("heartbeat %d: LastSeen = %d, want %d", i, r.LastSeen, now)
				}
				if r.Flags&FlagDirty == 0 {
					t.Errorf("heartbeat %d: record not marked dirty", i)
				}
				if r.Ext != nil {
					t.Errorf("heartbeat %d: idle UDP heartbeat allocated Ext", i)
				}
			}
		})
	}
}

// A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6; that is the
// same client at the same address, not an address change.
func TestHeartbeatMappedIPv4IsSameAddress(t *testing.T) {
	r := newRecord()
	r.Heartbeat(t0, UDP, addrA, nil, PolicyAddressChanged, nil)
	mapped := netip.AddrPortFrom(netip.AddrFrom16(addrA.Addr().As16()), addrA.Port())
	if !mapped.Addr().Is4In6() {
		t.Fatalf("test address %v is not IPv4-mapped", mapped)
	}
	rep, _ := r.Heartbeat(t0+second, UDP, mapped, nil, PolicyAddressChanged, nil)
	if rep.Heartbeat {
		t.Error("IPv4-mapped form of the same address counted as a change")
	}
	if got, _ := r.Addr(); got != addrA {
		t.Errorf("Addr() = %v, want the unmapped %v", got, addrA)
	}
}

func TestHeartbeatOverTCPNeverAnswersZeroAndRecordsNoAddress(t *testing.T) {
	for _, policy := range []Policy{PolicyNever, PolicyAlways, PolicyAddressChanged} {
		t.Run(policy.String(), func(t *testing.T) {
			conn := &fakeConn{"c1"}
			r := newRecord()
			for i := range 3 {
				rep, evs := r.Heartbeat(t0+int64(i), TCP, addrA, conn, policy, nil)
				if !rep.Empty() {
					t.Errorf("TCP heartbeat %d answered %+v", i, rep)
				}
				if len(evs) != 0 {
					t.Errorf("events %v", evs)
				}
			}
			if a, ok := r.Addr(); ok {
				t.Errorf("TCP heartbeat recorded address %v", a)
			}
			if r.Conn() != conn {
				t.Errorf("Conn() = %v, want the heartbeat's connection", r.Conn())
			}
			if r.LastSeen != t0+2 {
				t.Errorf("LastSeen = %d, want t0+2", r.LastSeen)
			}
		})
	}
}

// A client that moves from UDP to TCP keeps its last UDP address: a TCP
// heartbeat's from argument is ignored, not stored.
func TestHeartbeatOverTCPKeepsLastUDPAddress(t *testing.T) {
	r := newRecord()
	udpHeartbeat(r, t0, addrA)
	r.Heartbeat(t0+second, TCP, addrC, &fakeConn{}, PolicyAlways, nil)
	if a, ok := r.Addr(); !ok || a != addrA {
		t.Errorf("Addr() = %v, %v; want %v", a, ok, addrA)
	}
}

func TestHeartbeatTCPWithNilConnKeepsConnection(t *testing.T) {
	conn := &fakeConn{}
	r := newRecord()
	r.SetConn(conn)
	r.Heartbeat(t0, TCP, netip.AddrPort{}, nil, PolicyNever, nil)
	if r.Conn() != conn {
		t.Errorf("Conn() = %v after a TCP heartbeat without a conn", r.Conn())
	}
	r.SetConn(nil)
	if r.Conn() != nil {
		t.Error("SetConn(nil) did not detach")
	}
}

func TestHeartbeatSendsPendingInProtocolOrder(t *testing.T) {
	const mask = 0x0000_0000_0000_0105
	tests := []struct {
		name  string
		setup func(r *Record)
		want  Reply
		bytes []byte // Reply.Append(nil, 7)
	}{
		{"general", func(r *Record) { push(r, t0, 1, General, 0, "") },
			Reply{General: true},
			[]byte{1, 7, 0x10, 0, 0}},
		{"classified sends the whole mask", func(r *Record) {
			push(r, t0, 1, Classified, 0x0100, "")
			push(r, t0, 2, Classified, 0x0005, "")
		},
			Reply{Mask: mask},
			[]byte{1, 7, 0x11, 0, 8, 0, 0, 0, 0, 0, 0, 0x01, 0x05}},
		{"custom", func(r *Record) { push(r, t0, 1, Custom, 0, "hi") },
			Reply{Custom: []byte("hi")},
			[]byte{1, 7, 0x20, 0, 2, 'h', 'i'}},
		{"all three", func(r *Record) {
			// Pushed in the reverse of the protocol order: the reply
			// order must not depend on push order.
			push(r, t0, 1, Custom, 0, "hi")
			push(r, t0, 2, Classified, mask, "")
			push(r, t0, 3, General, 0, "")
		},
			Reply{General: true, Mask: mask, Custom: []byte("hi")},
			[]byte{
				1, 7, 0x10, 0, 0,
				1, 7, 0x11, 0, 8, 0, 0, 0, 0, 0, 0, 0x01, 0x05,
				1, 7, 0x20, 0, 2, 'h', 'i',
			}},
	}
	for _, tt := range tests {
		for _, policy := range []Policy{PolicyNever, PolicyAlways, PolicyAddressChanged} {
			for _, tr := range []Transport{UDP, TCP} {
				t.Run(fmt.Sprintf("%s/%s/%d", tt.name, policy, tr), func(t *testing.T) {
					r := newRecord()
					tt.setup(r)
					var conn any
					if tr == TCP {
						conn = &fakeConn{}
					}
					// A first-ever heartbeat is an address change, so
					// address-changed would want 0x00 if nothing were
					// pending: this checks pending messages suppress it.
					rep, _ := r.Heartbeat(t0+second, tr, addrA, conn, policy, nil)
					if !reflect.DeepEqual(rep, tt.want) {
						t.Errorf("reply %+v, want %+v", rep, tt.want)
					}
					if got := rep.Append(nil, 7); !bytes.Equal(got, tt.bytes) {
						t.Errorf("Append =\n% x\nwant\n% x", got, tt.bytes)
					}
				})
			}
		}
	}
}

// Retransmission is the heartbeat: whatever is not acked goes again on
// every heartbeat, but is reported Sent only once.
func TestHeartbeatRetransmitsButReportsSentOnce(t *testing.T) {
	r := newRecord()
	push(r, t0, 1, General, 0, "")
	push(r, t0, 2, Classified, 0b01, "")
	push(r, t0, 3, Classified, 0b10, "")
	push(r, t0, 4, Custom, 0, "payload")

	rep1, evs := udpHeartbeat(r, t0+10, addrA)
	checkEvents(t, evs,
		ev(1, General, Sent, t0+10),
		ev(2, Classified, Sent, t0+10),
		ev(3, Classified, Sent, t0+10),
		ev(4, Custom, Sent, t0+10))
	rep2, evs := udpHeartbeat(r, t0+20, addrA)
	checkEvents(t, evs)
	if !reflect.DeepEqual(rep1, rep2) {
		t.Errorf("second heartbeat reply %+v differs from first %+v", rep2, rep1)
	}
	want := Reply{General: true, Mask: 0b11, Custom: []byte("payload")}
	if !reflect.DeepEqual(rep2, want) {
		t.Errorf("reply %+v, want %+v", rep2, want)
	}

	// A push that arrives between heartbeats is reported on the next one,
	// and only it.
	r.LastSeen = t0 - window // offline, so the push is queued
	push(r, t0+25, 5, Classified, 0b100, "")
	_, evs = udpHeartbeat(r, t0+30, addrA)
	checkEvents(t, evs, ev(5, Classified, Sent, t0+30))
}

func TestHeartbeatAppendsToCallerEvents(t *testing.T) {
	r := newRecord()
	push(r, t0, 9, General, 0, "")
	prior := []Event{ev(1, Custom, Queued, 1)}
	_, evs := r.Heartbeat(t0+1, UDP, addrA, nil, PolicyNever, prior)
	checkEvents(t, evs, ev(1, Custom, Queued, 1), ev(9, General, Sent, t0+1))
}

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
			r.Heartbeat(t0, TCP, netip.AddrPort{}, &fakeConn{}, PolicyNever, nil)
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
		{"tcp connection", func(r *Record) { r.Heartbeat(t0, TCP, netip.AddrPort{}, conn, PolicyNever, nil) }, t0 + 10*window, false, true},
		{"tcp and recent udp", func(r *Record) {
			r.Heartbeat(t0, TCP, netip.AddrPort{}, conn, PolicyNever, nil)
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

func TestExpireReportsEveryPendingPush(t *testing.T) {
	r := newRecord()
	if evs := r.Expire(t0, nil); len(evs) != 0 {
		t.Errorf("idle record expired %v", evs)
	}
	push(r, t0, 1, General, 0, "")
	push(r, t0, 2, Classified, 0b01, "")
	push(r, t0, 3, Classified, 0b10, "")
	push(r, t0, 4, Custom, 0, "x")
	push(r, t0, 5, Classified, 0b100, "")
	r.Ack(t0, wire.CmdClassified, 0b100, nil) // 5 is done, not expired
	prior := []Event{ev(99, General, Queued, 0)}
	checkEvents(t, r.Expire(t0+secs(3600), prior),
		ev(99, General, Queued, 0),
		ev(1, General, Expired, t0+secs(3600)),
		ev(2, Classified, Expired, t0+secs(3600)),
		ev(3, Classified, Expired, t0+secs(3600)),
		ev(4, Custom, Expired, t0+secs(3600)))

	r2 := newRecord()
	push(r2, t0, 1, General, 0, "")
	r2.Ack(t0, wire.CmdGeneral, 0, nil)
	if evs := r2.Expire(t0, nil); len(evs) != 0 {
		t.Errorf("fully acked record expired %v", evs)
	}
}

func TestReplyAppend(t *testing.T) {
	tests := []struct {
		name  string
		rep   Reply
		appID byte
		want  []byte
	}{
		{"empty", Reply{}, 7, nil},
		{"heartbeat", Reply{Heartbeat: true}, 7, []byte{1, 7, 0x00, 0, 0}},
		{"general appId 0", Reply{General: true}, 0, []byte{1, 0, 0x10, 0, 0}},
		{"mask", Reply{Mask: 0x0102030405060708}, 255, []byte{1, 255, 0x11, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}},
		{"custom 256 bytes", Reply{Custom: bytes.Repeat([]byte{0xab}, 256)}, 1,
			append([]byte{1, 1, 0x20, 0x01, 0x00}, bytes.Repeat([]byte{0xab}, 256)...)},
		{"all", Reply{General: true, Mask: 1, Custom: []byte("z")}, 2, []byte{
			1, 2, 0x10, 0, 0,
			1, 2, 0x11, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1,
			1, 2, 0x20, 0, 1, 'z',
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.rep.Append(nil, tt.appID)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("Append =\n% x\nwant\n% x", got, tt.want)
			}
			if tt.rep.Empty() != (len(tt.want) == 0) {
				t.Errorf("Empty() = %v", tt.rep.Empty())
			}
			// Every message must be one a DDPush client accepts.
			for b := got; len(b) > 0; {
				n := wire.ServerFrameLen(b)
				var m wire.ServerMessage
				if n == 0 || n > len(b) || wire.DecodeServer(b[:n], &m) != nil {
					t.Fatalf("unparseable server message in % x", b)
				}
				b = b[n:]
			}
		})
	}
}

func TestHeartbeatIdleRecordDoesNotAllocate(t *testing.T) {
	for _, policy := range []Policy{PolicyNever, PolicyAlways, PolicyAddressChanged} {
		r := newRecord()
		udpHeartbeat(r, t0, addrA)
		evs := make([]Event, 0, 4)
		now := t0
		allocs := testing.AllocsPerRun(1000, func() {
			now++
			rep, e := r.Heartbeat(now, UDP, addrA, nil, policy, evs[:0])
			if len(e) != 0 || rep.General {
				panic("unexpected")
			}
		})
		if allocs != 0 {
			t.Errorf("%s: idle heartbeat allocates %v times", policy, allocs)
		}
		if r.Ext != nil {
			t.Errorf("%s: idle heartbeat created Ext", policy)
		}
	}
}

func TestNamesRoundTrip(t *testing.T) {
	for _, k := range []Kind{General, Classified, Custom} {
		if got, ok := ParseKind(k.String()); !ok || got != k {
			t.Errorf("ParseKind(%q) = %v, %v", k.String(), got, ok)
		}
		if KindOfCmd(k.Cmd()) != k {
			t.Errorf("KindOfCmd(%#x) != %v", k.Cmd(), k)
		}
	}
	for _, c := range []byte{wire.CmdHeartbeat, wire.CmdReset, 0x12} {
		if KindOfCmd(c) != 0 {
			t.Errorf("KindOfCmd(%#x) = %v, want 0", c, KindOfCmd(c))
		}
	}
	for f := Queued; f <= Expired; f++ {
		if got, ok := ParseFate(f.String()); !ok || got != f {
			t.Errorf("ParseFate(%q) = %v, %v", f.String(), got, ok)
		}
		if f.Terminal() != (f == Acknowledged || f == Superseded || f == Expired) {
			t.Errorf("%v.Terminal() = %v", f, f.Terminal())
		}
	}
	for _, p := range []Policy{PolicyNever, PolicyAlways, PolicyAddressChanged} {
		if got, ok := ParsePolicy(p.String()); !ok || got != p {
			t.Errorf("ParsePolicy(%q) = %v, %v", p.String(), got, ok)
		}
	}
	if p, ok := ParsePolicy("sa_changed"); !ok || p != PolicyAddressChanged {
		t.Error(`"sa_changed" (the Java server's name) not accepted`)
	}
	for _, s := range []string{"", "Never", "bogus"} {
		if _, ok := ParsePolicy(s); ok {
			t.Errorf("ParsePolicy(%q) accepted", s)
		}
	}
}

// ---- stored form ----

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
	r.Heartbeat(t0, TCP, netip.AddrPort{}, &fakeConn{}, PolicyNever, nil)
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
		rep, _ := r.Heartbeat(t0, UDP, addrA, nil, PolicyAddressChanged, nil)
		rep.Append(nil, 1)
		r.Ack(t0, wire.CmdClassified, ^uint64(0), nil)
		r.Push(t0, window, 1, Classified, 1, nil, nil)
	})
}
