package slotmap

import (
	"bytes"
	"encoding/json"
	"testing"
)

func seedMaps(f *testing.F) []Map {
	var out []Map
	for _, n := range []int{1, 2, 3, 17, 512} {
		m, err := EvenSplit(n, uint64(n), peersFor(n))
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, m)
	}
	r, err := Rebalance(out[2], 5, 9, peersFor(6))
	if err != nil {
		f.Fatal(err)
	}
	return append(out, r)
}

// Whatever the binary decoder accepts is a valid map whose canonical
// encoding is exactly the input.
func FuzzMapBinary(f *testing.F) {
	for _, m := range seedMaps(f) {
		b, _ := m.MarshalBinary()
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{1, 5, 1, 0xff, 0x07, 0, 1, 0, 3, 'h', ':', '1'})
	f.Add([]byte{1, 0x85, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		var m Map
		if err := m.UnmarshalBinary(in); err != nil {
			if !m.IsZero() {
				t.Fatal("a refused input left a map behind")
			}
			return
		}
		if err := m.Spec().Validate(); err != nil {
			t.Fatalf("decoded an invalid map: %v", err)
		}
		out, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("re-encoding differs:\n in % x\nout % x", in, out)
		}
	})
}

// Whatever the JSON decoder accepts is a valid map that survives a trip
// through both encodings unchanged.
func FuzzMapJSON(f *testing.F) {
	for _, m := range seedMaps(f) {
		b, _ := json.Marshal(m)
		f.Add(b)
	}
	f.Add([]byte(exampleJSON))
	f.Add([]byte(`{"epoch":1,"ranges":[{"from":0,"to":1023,"ordinal":0}],"peers":{"0":"h:1"}}`))
	f.Add([]byte(`{"epoch":1,"ranges":[{"from":0,"to":500,"ordinal":0},{"from":400,"to":1023,"ordinal":1}],"peers":{"0":"h:1","1":"h:2"}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var m Map
		if err := json.Unmarshal(in, &m); err != nil {
			if !m.IsZero() {
				t.Fatal("a refused input left a map behind")
			}
			return
		}
		if m.IsZero() {
			return // JSON null leaves the Map as it was
		}
		if err := m.Spec().Validate(); err != nil {
			t.Fatalf("decoded an invalid map: %v", err)
		}
		j, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var fromJSON Map
		if err := json.Unmarshal(j, &fromJSON); err != nil || !fromJSON.Equal(m) {
			t.Fatalf("JSON round trip: %v\n%s", err, j)
		}
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var fromBinary Map
		if err := fromBinary.UnmarshalBinary(b); err != nil || !fromBinary.Equal(m) {
			t.Fatalf("binary round trip: %v", err)
		}
	})
}
