package peer

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/ddpush/ddpush-operator/node/wire"
)

var (
	udp4  = Route{Transport: UDP, Addr: netip.MustParseAddrPort("10.1.2.3:40001")}
	udp6  = Route{Transport: UDP, Addr: netip.MustParseAddrPort("[2001:db8::7]:9966")}
	udp46 = Route{Transport: UDP, Addr: netip.MustParseAddrPort("[::ffff:10.1.2.3]:1")}
	tcpR  = Route{Transport: TCP, ConnID: 0xfeedface12345678}
	raw21 = bytes.Repeat([]byte{0x5a}, 21)
	uuidA = wire.UUID{0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}
)

// sampleFrames is one of each frame type, some at their limits.
func sampleFrames() []struct {
	t Type
	f body
} {
	return []struct {
		t Type
		f body
	}{
		{TypeHello, &Hello{Version: 1, Ordinal: 511, Epoch: 7, Incarnation: 1 << 60}},
		{TypePhonePacket, &PhonePacket{Route: udp4, Arrival: 1_700_000_000_000_000_000, Raw: raw21}},
		{TypePhonePacket, &PhonePacket{Route: udp6, Arrival: -1, Raw: []byte{1}}},
		{TypePhonePacket, &PhonePacket{Route: udp46, Raw: bytes.Repeat([]byte{1}, MaxPhoneBytes)}},
		{TypePhonePacket, &PhonePacket{Route: tcpR, Raw: bytes.Repeat([]byte{7}, wire.MaxClientMessageLen)}},
		{TypeToPhone, &ToPhone{Route: tcpR, Bytes: []byte("hello phone")}},
		{TypeToPhone, &ToPhone{Route: udp4, Bytes: bytes.Repeat([]byte{2}, MaxToPhoneBytes)}},
		{TypeDetach, &Detach{ConnID: 9, UUIDs: []wire.UUID{uuidA, {}}}},
		{TypeDetach, &Detach{ConnID: 0, UUIDs: []wire.UUID{}}},
		{TypePushReq, &PushReq{Corr: 1, UUID: uuidA, Kind: 3, Bits: 0, Key: "relay/1/1", Payload: []byte("hi")}},
		{TypePushReq, &PushReq{Corr: 1<<64 - 1, UUID: uuidA, Kind: 2, Bits: 0xffff, Key: strings.Repeat("k", MaxKeyLen), Payload: []byte{}}},
		{TypePushReq, &PushReq{Corr: 2, Kind: 3, Key: "", Payload: bytes.Repeat([]byte{3}, MaxPayloadLen)}},
		{TypePushAns, &PushAns{Corr: 1, Status: PushAccepted, ID: 1<<44 | 5, Fate: 2, Duplicate: true, AcceptedAt: 123, Reason: ""}},
		{TypePushAns, &PushAns{Corr: 2, Status: PushRefused, Reason: strings.Repeat("r", MaxReasonLen)}},
		{TypePushAns, &PushAns{Corr: 3, Status: PushInvalid, Reason: "a general push carries no data"}},
		{TypeLookupReq, &LookupReq{Corr: 4, Body: []byte(`{"uuid":"00"}`)}},
		{TypeLookupAns, &LookupAns{Corr: 4, Code: 404, Body: []byte(`{"error":"no such client"}`)}},
		{TypeLookupAns, &LookupAns{Corr: 5, Code: 200, Body: []byte{}}},
	}
}

func newBody(t Type) body {
	switch t {
	case TypeHello:
		return &Hello{}
	case TypePhonePacket:
		return &PhonePacket{}
	case TypeToPhone:
		return &ToPhone{}
	case TypeDetach:
		return &Detach{}
	case TypePushReq:
		return &PushReq{}
	case TypePushAns:
		return &PushAns{}
	case TypeLookupReq:
		return &LookupReq{}
	case TypeLookupAns:
		return &LookupAns{}
	}
	return nil
}

func decodeBody(t Type, b []byte) (body, error) {
	f := newBody(t)
	if f == nil {
		return nil, nil
	}
	type decoder interface{ decode([]byte) error }
	return f, f.(decoder).decode(b)
}

func TestFramesRoundTrip(t *testing.T) {
	var batch []byte
	samples := sampleFrames()
	for _, s := range samples {
		if err := s.f.check(); err != nil {
			t.Fatalf("%s sample refused: %v", s.t, err)
		}
		before := len(batch)
		batch = appendFrame(batch, s.t, s.f)
		if got := len(batch) - before; got != frameLen(s.f.size()) {
			t.Fatalf("%s: frame is %d bytes, frameLen says %d", s.t, got, frameLen(s.f.size()))
		}
	}
	rest := batch
	for i, s := range samples {
		typ, b, r, err := nextFrame(rest)
		if err != nil || typ != s.t {
			t.Fatalf("frame %d: %s, %v; want %s", i, typ, err, s.t)
		}
		rest = r
		got, err := decodeBody(typ, b)
		if err != nil {
			t.Fatalf("frame %d (%s): %v", i, typ, err)
		}
		if !reflect.DeepEqual(got, s.f) {
			t.Fatalf("frame %d (%s):\n got %+v\nwant %+v", i, typ, got, s.f)
		}
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes left", len(rest))
	}
	// A relayed heartbeat is about 40 bytes on the wire.
	p := &PhonePacket{Route: udp4, Raw: raw21}
	if n := frameLen(p.size()); n < 35 || n > 45 {
		t.Fatalf("a 21-byte UDP phone packet frame is %d bytes", n)
	}
}

func TestFrameLimits(t *testing.T) {
	zoned := Route{Transport: UDP, Addr: netip.AddrPortFrom(netip.MustParseAddr("fe80::1%eth0"), 5)}
	for _, tt := range []struct {
		name string
		f    body
	}{
		{"empty phone packet", &PhonePacket{Route: udp4}},
		{"phone packet too long", &PhonePacket{Route: udp4, Raw: make([]byte, MaxPhoneBytes+1)}},
		{"no transport", &PhonePacket{Raw: raw21}},
		{"transport 3", &PhonePacket{Route: Route{Transport: 3}, Raw: raw21}},
		{"UDP without address", &PhonePacket{Route: Route{Transport: UDP}, Raw: raw21}},
		{"zoned address", &PhonePacket{Route: zoned, Raw: raw21}},
		{"empty to-phone", &ToPhone{Route: tcpR}},
		{"to-phone too long", &ToPhone{Route: tcpR, Bytes: make([]byte, MaxToPhoneBytes+1)}},
		{"key too long", &PushReq{Key: strings.Repeat("k", MaxKeyLen+1)}},
		{"payload too long", &PushReq{Payload: make([]byte, MaxPayloadLen+1)}},
		{"status 0", &PushAns{}},
		{"status 5", &PushAns{Status: PushKeyReused + 1}},
		{"reason too long", &PushAns{Status: PushRefused, Reason: strings.Repeat("r", MaxReasonLen+1)}},
		{"lookup too long", &LookupReq{Body: make([]byte, MaxLookupBody+1)}},
		{"lookup answer too long", &LookupAns{Body: make([]byte, MaxLookupBody+1)}},
		{"detach too long", &Detach{UUIDs: make([]wire.UUID, maxDetachUUIDs+1)}},
	} {
		if err := tt.f.check(); err == nil || !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: check = %v", tt.name, err)
		}
	}
	// The largest legal frames fit the largest frame body.
	for _, f := range []body{
		&Detach{UUIDs: make([]wire.UUID, maxDetachUUIDs)},
		&LookupAns{Body: make([]byte, MaxLookupBody)},
		&LookupReq{Body: make([]byte, MaxLookupBody)},
	} {
		if err := f.check(); err != nil || f.size() > MaxFrameBody {
			t.Errorf("%T at its limit: %v, %d bytes", f, err, f.size())
		}
	}
}

func TestDecodeRefusals(t *testing.T) {
	ok := appendFrame(nil, TypePhonePacket, &PhonePacket{Route: udp4, Raw: raw21})
	for _, tt := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"no length", []byte{2}, "truncated"},
		{"overlong length", []byte{2, 0x80, 0x00}, "shortest form"},
		{"huge length", []byte{2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, "overflows"},
		{"too big", append([]byte{2}, 0x81, 0x80, 0x10), "at most"},
		{"truncated body", ok[:len(ok)-1], "truncated to"},
	} {
		if _, _, _, err := nextFrame(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	for _, tt := range []struct {
		name string
		t    Type
		in   []byte
	}{
		{"short hello", TypeHello, make([]byte, helloLen-1)},
		{"long hello", TypeHello, make([]byte, helloLen+1)},
		{"route family 5", TypePhonePacket, []byte{1, 5, 1, 2, 3, 4, 0, 1}},
		{"route v4 truncated", TypePhonePacket, []byte{1, 4, 1, 2, 3}},
		{"route v6 truncated", TypePhonePacket, append([]byte{1, 6}, make([]byte, 17)...)},
		{"route TCP truncated", TypePhonePacket, []byte{2, 0, 0}},
		{"no arrival", TypePhonePacket, []byte{1, 4, 1, 2, 3, 4, 0, 1, 0}},
		{"no raw", TypePhonePacket, append([]byte{2}, make([]byte, 16)...)},
		{"raw too long", TypePhonePacket, append([]byte{2}, make([]byte, 16+MaxPhoneBytes+1)...)},
		{"to-phone empty", TypeToPhone, append([]byte{2}, make([]byte, 8)...)},
		{"detach partial uuid", TypeDetach, make([]byte, 8+15)},
		{"detach short", TypeDetach, make([]byte, 7)},
		{"push short", TypePushReq, make([]byte, 24)},
		{"push without budget", TypePushReq, make([]byte, 48)},
		{"push budget negative", TypePushReq, func() []byte { b := make([]byte, 50); b[41] = 0x80; return b }()},
		{"push key past end", TypePushReq, append(make([]byte, 49), 5, 'a')},
		{"push key overlong varint", TypePushReq, append(make([]byte, 49), 0x80, 0x00)},
		{"push key too long", TypePushReq, append(append(make([]byte, 49), 0x81, 0x08), make([]byte, 1025)...)},
		{"answer short", TypePushAns, make([]byte, pushAnsFixed-1)},
		{"answer status 0", TypePushAns, make([]byte, pushAnsFixed)},
		{"answer dup 2", TypePushAns, func() []byte { b := make([]byte, pushAnsFixed); b[8] = 1; b[18] = 2; return b }()},
		{"lookup short", TypeLookupReq, make([]byte, 7)},
		{"lookup answer short", TypeLookupAns, make([]byte, 9)},
	} {
		if _, err := decodeBody(tt.t, tt.in); err == nil || !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

// Whatever a batch holds, the decoder never panics, and every frame it
// accepts encodes back to exactly the bytes it came from.
func FuzzDecodeBatch(f *testing.F) {
	var all []byte
	for _, s := range sampleFrames() {
		if s.f.size() > 4096 {
			continue
		}
		one := appendFrame(nil, s.t, s.f)
		f.Add(one)
		all = append(all, one...)
	}
	f.Add(all)
	f.Add([]byte{9, 3, 1, 2, 3})        // an unknown type is skipped
	f.Add([]byte{2, 0x80, 0x00})        // overlong length
	f.Add([]byte{5, 40, 0, 0, 0, 0, 0}) // truncated
	f.Fuzz(func(t *testing.T, in []byte) {
		for len(in) > 0 {
			typ, b, rest, err := nextFrame(in)
			if err != nil {
				return
			}
			if hdr := appendHeader(nil, typ, len(b)); !bytes.Equal(hdr, in[:len(hdr)]) {
				t.Fatalf("header % x re-encodes as % x", in[:len(hdr)], hdr)
			}
			in = rest
			f, err := decodeBody(typ, b)
			if f == nil || err != nil {
				continue
			}
			if err := f.check(); err != nil {
				t.Fatalf("%s decoded but fails check: %v", typ, err)
			}
			if f.size() != len(b) {
				t.Fatalf("%s: size %d, body %d", typ, f.size(), len(b))
			}
			if out := f.appendBody(nil); !bytes.Equal(out, b) {
				t.Fatalf("%s re-encodes differently:\n in % x\nout % x", typ, b, out)
			}
		}
	})
}
