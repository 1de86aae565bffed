package slotmap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
)

// The JSON form, as on the HTTP API:
//
//	{"epoch": 7,
//	 "ranges": [{"from": 0, "to": 341, "ordinal": 0}, ...],
//	 "peers": {"0": "10.0.0.7:9977", ...}}
//
// Peers are written in ordinal order. Unknown fields are ignored, so a
// document that carries more (GET /v1/slotmap adds "self") reads back.

// MarshalJSON writes the spec as it is (valid or not).
func (s Spec) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"epoch":`)
	b.WriteString(strconv.FormatUint(s.Epoch, 10))
	b.WriteString(`,"ranges":[`)
	for i, r := range s.Ranges {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"from":%d,"to":%d,"ordinal":%d}`, r.From, r.To, r.Ordinal)
	}
	b.WriteString(`],"peers":{`)
	ords := make([]int, 0, len(s.Peers))
	for o := range s.Peers {
		ords = append(ords, o)
	}
	sort.Ints(ords)
	for i, o := range ords {
		if i > 0 {
			b.WriteByte(',')
		}
		addr, err := json.Marshal(s.Peers[o])
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, `"%d":%s`, o, addr)
	}
	b.WriteString(`}}`)
	return b.Bytes(), nil
}

type specJSON struct {
	Epoch  *json.Number       `json:"epoch"`
	Ranges []rangeJSON        `json:"ranges"`
	Peers  map[string]*string `json:"peers"`
}

type rangeJSON struct {
	From    *json.Number `json:"from"`
	To      *json.Number `json:"to"`
	Ordinal *json.Number `json:"ordinal"`
}

// UnmarshalJSON reads the JSON form without validating it; see
// Map.UnmarshalJSON for the validating reader. Numbers that are missing,
// fractional, negative or out of range are errors that name the field.
// JSON null leaves s as it is, as encoding/json does for other types.
func (s *Spec) UnmarshalJSON(data []byte) error {
	if string(bytes.TrimSpace(data)) == "null" {
		return nil
	}
	var in specJSON
	if err := json.Unmarshal(data, &in); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var out Spec
	if in.Epoch == nil {
		return fmt.Errorf("%w: epoch is missing", ErrInvalid)
	}
	e, err := strconv.ParseUint(in.Epoch.String(), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: epoch %s is not a whole number from 1 to %d", ErrInvalid, in.Epoch.String(), uint64(math.MaxUint64))
	}
	out.Epoch = e
	for i, r := range in.Ranges {
		var rr Range
		for _, f := range []struct {
			name string
			in   *json.Number
			out  *int
		}{{"from", r.From, &rr.From}, {"to", r.To, &rr.To}, {"ordinal", r.Ordinal, &rr.Ordinal}} {
			if f.in == nil {
				return fmt.Errorf("%w: range %d: %s is missing", ErrInvalid, i, f.name)
			}
			// Anything that is not a small whole number is out of range;
			// Validate reports the bounds.
			n, err := strconv.ParseInt(f.in.String(), 10, 32)
			if err != nil {
				return fmt.Errorf("%w: range %d: %s %s is not a whole number", ErrInvalid, i, f.name, f.in.String())
			}
			*f.out = int(n)
		}
		out.Ranges = append(out.Ranges, rr)
	}
	if len(in.Peers) > 0 {
		out.Peers = make(map[int]string, len(in.Peers))
	}
	for k, v := range in.Peers {
		o, ok := parseOrdinalKey(k)
		if !ok {
			return fmt.Errorf("%w: peers: key %q is not an ordinal (0-%d, no leading zeros)", ErrInvalid, k, MaxOrdinals-1)
		}
		if v == nil {
			return fmt.Errorf("%w: peer %d: address is null", ErrInvalid, o)
		}
		out.Peers[o] = *v
	}
	*s = out
	return nil
}

func parseOrdinalKey(k string) (int, bool) {
	if k == "" || len(k) > 3 || (len(k) > 1 && k[0] == '0') {
		return 0, false
	}
	n := 0
	for _, c := range []byte(k) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n >= MaxOrdinals {
		return 0, false
	}
	return n, true
}

// MarshalJSON writes the map with canonical ranges. The zero Map is null.
func (m Map) MarshalJSON() ([]byte, error) {
	if m.c == nil {
		return []byte("null"), nil
	}
	return m.Spec().MarshalJSON()
}

// UnmarshalJSON reads and validates a map; on any error m is unchanged.
// JSON null leaves m as it is (so a caller taking a map from a request
// body must still refuse the zero Map).
func (m *Map) UnmarshalJSON(data []byte) error {
	if string(bytes.TrimSpace(data)) == "null" {
		return nil
	}
	var s Spec
	if err := s.UnmarshalJSON(data); err != nil {
		return err
	}
	built, err := s.Build()
	if err != nil {
		return err
	}
	*m = built
	return nil
}
