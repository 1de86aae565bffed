package slotmap

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const exampleJSON = `{"epoch": 7,
 "ranges": [{"from": 0, "to": 341, "ordinal": 0}, {"from": 342, "to": 682, "ordinal": 1}, {"from": 683, "to": 1023, "ordinal": 2}],
 "peers": {"0": "10.0.0.7:9977", "1": "10.0.0.8:9977", "2": "10.0.0.9:9977"}}`

func TestJSONExample(t *testing.T) {
	var m Map
	if err := json.Unmarshal([]byte(exampleJSON), &m); err != nil {
		t.Fatal(err)
	}
	if m.Epoch() != 7 || m.Ranges(1) != "342-682" || m.OwnerOf(uuidOf(0xff, 0xff)) != 2 {
		t.Fatalf("decoded %s", m)
	}
	if a, _ := m.Peer(1); a != "10.0.0.8:9977" {
		t.Fatalf("peer 1 = %q", a)
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"epoch":7,"ranges":[{"from":0,"to":341,"ordinal":0},{"from":342,"to":682,"ordinal":1},{"from":683,"to":1023,"ordinal":2}],"peers":{"0":"10.0.0.7:9977","1":"10.0.0.8:9977","2":"10.0.0.9:9977"}}`
	if string(out) != want {
		t.Fatalf("encoded\n%s\nwant\n%s", out, want)
	}
	// Peers come out in ordinal order, not string order ("10" < "2").
	big := mustSplit(t, 12, 3)
	out, _ = json.Marshal(big)
	if i2, i10 := bytes.Index(out, []byte(`"2":`)), bytes.Index(out, []byte(`"10":`)); i2 < 0 || i10 < i2 {
		t.Fatalf("peers not in ordinal order: %s", out)
	}
	// A document with more fields (GET /v1/slotmap adds "self") reads back.
	var again Map
	if err := json.Unmarshal([]byte(`{"self": 1, `+exampleJSON[1:]), &again); err != nil || !again.Equal(m) {
		t.Fatalf("with self: %v", err)
	}
	// Inside another document; the zero Map is null.
	var wrap struct {
		Map  Map `json:"map"`
		None Map `json:"none"`
	}
	wrap.Map = m
	out, _ = json.Marshal(wrap)
	if !bytes.Contains(out, []byte(`"none":null`)) {
		t.Fatalf("zero Map: %s", out)
	}
	var back struct {
		Map  Map `json:"map"`
		None Map `json:"none"`
	}
	if err := json.Unmarshal(out, &back); err != nil || !back.Map.Equal(m) || !back.None.IsZero() {
		t.Fatalf("reading back %s: %v", out, err)
	}
	kept := m
	if err := json.Unmarshal([]byte(" null "), &kept); err != nil || !kept.Equal(m) {
		t.Fatalf("null changed the map: %v", err)
	}
}

func TestJSONRefusals(t *testing.T) {
	good := mustSplit(t, 2, 9)
	for _, tt := range []struct{ in, want string }{
		{`{"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"0":"h:1"}}`, "epoch is missing"},
		{`{"epoch":0,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"0":"h:1"}}`, "epoch is 0"},
		{`{"epoch":-1,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"0":"h:1"}}`, "epoch -1 is not a whole number"},
		{`{"epoch":1.5,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"0":"h:1"}}`, "epoch 1.5 is not a whole number"},
		{`{"epoch":18446744073709551616,"ranges":[],"peers":{}}`, "epoch 18446744073709551616 is not a whole number"},
		{`{"epoch":1,"ranges":[{"to":1023,"ordinal":0}],"peers":{"0":"h:1"}}`, "range 0: from is missing"},
		{`{"epoch":1,"ranges":[{"from":0,"ordinal":0}],"peers":{"0":"h:1"}}`, "range 0: to is missing"},
		{`{"epoch":1,"ranges":[{"from":0,"to":1023}],"peers":{"0":"h:1"}}`, "range 0: ordinal is missing"},
		{`{"epoch":1,"ranges":[{"from":0,"to":1e3,"ordinal":0}],"peers":{"0":"h:1"}}`, "range 0: to 1e3 is not a whole number"},
		{`{"epoch":1,"ranges":[{"from":0,"to":99999999999,"ordinal":0}],"peers":{"0":"h:1"}}`, "is not a whole number"},
		{`{"epoch":1,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"00":"h:1"}}`, `key "00" is not an ordinal`},
		{`{"epoch":1,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"x":"h:1"}}`, `key "x" is not an ordinal`},
		{`{"epoch":1,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"512":"h:1"}}`, `key "512" is not an ordinal`},
		{`{"epoch":1,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"-1":"h:1"}}`, `key "-1" is not an ordinal`},
		{`{"epoch":1,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"0":null}}`, "peer 0: address is null"},
		{`{"epoch":1,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"0":5}}`, "invalid slot map"},
		{`{"epoch":1,"ranges":[{"from":0,"to":1023,"ordinal":0}]}`, "ordinal 0 owns slots 0-1023 but has no peer address"},
		{`{"epoch":1,"ranges":[{"from":0,"to":500,"ordinal":0}],"peers":{"0":"h:1"}}`, "slots 501-1023 are not covered"},
		{`{}`, "epoch is missing"},
		{`[]`, "invalid slot map"},
		{`{"epoch":1`, "invalid slot map"},
		{``, "invalid slot map"},
	} {
		m := good
		err := m.UnmarshalJSON([]byte(tt.in))
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s:\n got %v\nwant %q", tt.in, err, tt.want)
		}
		if !m.Equal(good) {
			t.Errorf("%s: a refused document changed the map", tt.in)
		}
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	maps := []Map{mustSplit(t, 1, 1), mustSplit(t, 3, 7), mustSplit(t, 512, 1<<40), mustSplit(t, 2, MaxEpoch)}
	r, err := Rebalance(mustSplit(t, 3, 1), 5, 2, peersFor(7)) // non-contiguous ranges, peers without slots
	if err != nil {
		t.Fatal(err)
	}
	maps = append(maps, r)
	for _, m := range maps {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Map
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if !got.Equal(m) {
			t.Fatalf("round trip changed %s into %s", m, got)
		}
		again, _ := got.MarshalBinary()
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs")
		}
	}
	// Compact: three ordinals with IPv4 peers take a few dozen bytes.
	b, _ := mustSplit(t, 3, 7).MarshalBinary()
	if len(b) > 60 {
		t.Fatalf("3-ordinal map is %d bytes", len(b))
	}
	t.Logf("3-ordinal map: %d bytes binary", len(b))
}

func TestBinaryRefusals(t *testing.T) {
	good := mustSplit(t, 2, 9)
	valid, _ := mustSplit(t, 2, 5).MarshalBinary()
	// valid = 01 05 02 ff03 00 ff07 01 02 00 0d "10.0.0.0:9977" 01 0d "10.0.0.1:9977"
	cut := func(n int) []byte { return append([]byte(nil), valid[:n]...) }
	with := func(i int, v ...byte) []byte {
		b := append([]byte(nil), valid[:i]...)
		b = append(b, v...)
		return append(b, valid[i+len(v):]...)
	}
	for _, tt := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"version 2", with(0, 2), "version 2"},
		{"truncated epoch", cut(1), "epoch: truncated"},
		{"epoch 0", with(1, 0), "epoch is 0"},
		{"overlong varint", []byte{1, 0x85, 0x00}, "epoch: not in shortest form"},
		{"overflow", []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, "overflows 64 bits"},
		{"no ranges", []byte{1, 5, 0}, "0 ranges"},
		{"too many ranges", []byte{1, 5, 0x81, 0x08}, "1025 ranges"},
		{"range past the end", []byte{1, 5, 1, 0x80, 0x08, 0}, "ends at 1024"},
		{"range backwards", []byte{1, 5, 2, 10, 0, 5, 1}, "range 1 ends at 5; it starts at 11"},
		{"ordinal 512", []byte{1, 5, 1, 0xff, 0x07, 0x80, 0x04}, "ordinal 512"},
		{"not merged", []byte{1, 5, 2, 10, 0, 0xff, 0x07, 0, 1, 0, 3, 'h', ':', '1'}, "both belong to ordinal 0"},
		{"short coverage", []byte{1, 5, 1, 10, 0, 1, 0, 3, 'h', ':', '1'}, "slots 11-1023 are not covered"},
		{"missing peer", []byte{1, 5, 1, 0xff, 0x07, 0, 0}, "ordinal 0 owns slots 0-1023 but has no peer address"},
		{"peers descending", []byte{1, 5, 1, 0xff, 0x07, 0, 2, 1, 3, 'h', ':', '2', 0, 3, 'h', ':', '1'}, "ordinals must ascend"},
		{"empty address", []byte{1, 5, 1, 0xff, 0x07, 0, 1, 0, 0}, "0 bytes"},
		{"truncated address", []byte{1, 5, 1, 0xff, 0x07, 0, 1, 0, 3, 'h', ':'}, "truncated (2 of 3 bytes)"},
		{"bad address", []byte{1, 5, 1, 0xff, 0x07, 0, 1, 0, 3, 'h', '-', '1'}, "is not host:port"},
		{"trailing byte", append(cut(len(valid)), 0), "1 bytes after the last peer"},
		{"too many peers", []byte{1, 5, 1, 0xff, 0x07, 0, 0x81, 0x04}, "513 peers"},
	} {
		m := good
		err := m.UnmarshalBinary(tt.in)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
		if !m.Equal(good) {
			t.Errorf("%s: a refused encoding changed the map", tt.name)
		}
	}
	for n := 0; n < len(valid); n++ {
		var m Map
		if err := m.UnmarshalBinary(valid[:n]); err == nil {
			t.Fatalf("a %d-byte prefix decoded", n)
		}
	}
}
