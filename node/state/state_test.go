package state

import (
	"bytes"
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
	window = 60 * second // docs/protocol.md section 5: UDP-online if the last heartbeat is < 60 s old
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
	return r.Heartbeat(now, UDP, from, nil, PolicyNever, 0, nil)
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
				rep, evs := r.Heartbeat(now, UDP, b.from, nil, tt.policy, 0, nil)
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
	r.Heartbeat(t0, UDP, addrA, nil, PolicyAddressChanged, 0, nil)
	mapped := netip.AddrPortFrom(netip.AddrFrom16(addrA.Addr().As16()), addrA.Port())
	if !mapped.Addr().Is4In6() {
		t.Fatalf("test address %v is not IPv4-mapped", mapped)
	}
	rep, _ := r.Heartbeat(t0+second, UDP, mapped, nil, PolicyAddressChanged, 0, nil)
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
				rep, evs := r.Heartbeat(t0+int64(i), TCP, addrA, conn, policy, 0, nil)
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
	r.Heartbeat(t0+second, TCP, addrC, &fakeConn{}, PolicyAlways, 0, nil)
	if a, ok := r.Addr(); !ok || a != addrA {
		t.Errorf("Addr() = %v, %v; want %v", a, ok, addrA)
	}
}

func TestHeartbeatTCPWithNilConnKeepsConnection(t *testing.T) {
	conn := &fakeConn{}
	r := newRecord()
	r.SetConn(conn)
	r.Heartbeat(t0, TCP, netip.AddrPort{}, nil, PolicyNever, 0, nil)
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
					rep, _ := r.Heartbeat(t0+second, tr, addrA, conn, policy, 0, nil)
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
	_, evs := r.Heartbeat(t0+1, UDP, addrA, nil, PolicyNever, 0, prior)
	checkEvents(t, evs, ev(1, Custom, Queued, 1), ev(9, General, Sent, t0+1))
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
			rep, e := r.Heartbeat(now, UDP, addrA, nil, policy, 0, evs[:0])
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

// TestHeartbeatWritesBackOnlyMeaningfulChanges: with a step, a heartbeat
// makes the record dirty only for a new address, pushes it hands over, or
// a last-seen time that enters a new step; without one, always.
func TestHeartbeatWritesBackOnlyMeaningfulChanges(t *testing.T) {
	const step = 15 * second
	base := t0 - t0%step // the start of a step
	cases := []struct {
		name  string
		setup func(r *Record)
		now   int64
		tr    Transport
		from  netip.AddrPort
		step  int64
		dirty bool
	}{
		{"new record", func(r *Record) {}, base, UDP, addrA, step, true},
		{"same address, same step", func(r *Record) { udpHeartbeat(r, base, addrA) }, base + step - 1, UDP, addrA, step, false},
		{"same address, next step", func(r *Record) { udpHeartbeat(r, base+step-1, addrA) }, base + step, UDP, addrA, step, true},
		{"same address, many steps later", func(r *Record) { udpHeartbeat(r, base, addrA) }, base + 100*step, UDP, addrA, step, true},
		{"new port, same step", func(r *Record) { udpHeartbeat(r, base, addrA) }, base + 1, UDP, addrB, step, true},
		{"new host, same step", func(r *Record) { udpHeartbeat(r, base, addrA) }, base + 1, UDP, addrC, step, true},
		{"ipv6, same step", func(r *Record) { udpHeartbeat(r, base, addrA) }, base + 1, UDP, addr6, step, true},
		{"tcp, same step", func(r *Record) { udpHeartbeat(r, base, addrA) }, base + 1, TCP, netip.AddrPort{}, step, false},
		{"tcp, next step", func(r *Record) { udpHeartbeat(r, base, addrA) }, base + step, TCP, netip.AddrPort{}, step, true},
		{"queued push handed over, same step", func(r *Record) {
			udpHeartbeat(r, base, addrA)
			r.Push(base+window+1, window, 7, General, 0, nil, nil)
			r.Flags &^= FlagDirty
			r.LastSeen = base
		}, base + 2, UDP, addrA, step, true},
		{"push already sent, same step", func(r *Record) {
			udpHeartbeat(r, base, addrA)
			r.Push(base+1, window, 7, General, 0, nil, nil)
		}, base + 2, UDP, addrA, step, false},
		{"no step, same address", func(r *Record) { udpHeartbeat(r, base, addrA) }, base + 1, UDP, addrA, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRecord()
			tc.setup(r)
			r.Flags &^= FlagDirty
			var conn any
			if tc.tr == TCP {
				conn = &fakeConn{}
			}
			before := r.LastSeen
			r.Heartbeat(tc.now, tc.tr, tc.from, conn, PolicyNever, tc.step, nil)
			if got := r.Flags&FlagDirty != 0; got != tc.dirty {
				t.Errorf("dirty = %v, want %v", got, tc.dirty)
			}
			if lag := r.Flags&FlagSeenLag != 0; !tc.dirty && lag != (tc.now != before) {
				t.Errorf("seen-lag flag %v with the last-seen time moved from %d to %d and the record clean", lag, before, tc.now)
			}
			if r.LastSeen != tc.now {
				t.Errorf("last seen %d, want %d: the live time always moves", r.LastSeen, tc.now)
			}
		})
	}
}
