package slotmap

import (
	"fmt"
)

// The binary form, for the node's bbolt meta bucket:
//
//	version   1 byte, 1
//	epoch     uvarint
//	nranges   uvarint, 1..1024
//	ranges    nranges × (to uvarint, ordinal uvarint); each starts after
//	          the previous one's end, the first at 0
//	npeers    uvarint, 0..512
//	peers     npeers × (ordinal uvarint, len uvarint, address bytes),
//	          ordinals ascending
//
// Only the canonical form is accepted (shortest varints, neighbouring
// ranges of different ordinals, nothing after the last peer), so a
// stored map has exactly one encoding.

const binaryVersion = 1

// MarshalBinary encodes the map. The zero Map cannot be encoded.
func (m Map) MarshalBinary() ([]byte, error) {
	if m.c == nil {
		return nil, fmt.Errorf("%w: the zero Map has no binary form", ErrInvalid)
	}
	return m.AppendBinary(nil)
}

// AppendBinary appends the binary form of a non-zero map to dst.
func (m Map) AppendBinary(dst []byte) ([]byte, error) {
	if m.c == nil {
		return dst, fmt.Errorf("%w: the zero Map has no binary form", ErrInvalid)
	}
	dst = append(dst, binaryVersion)
	dst = appendUvarint(dst, m.c.epoch)
	dst = appendUvarint(dst, uint64(len(m.c.ranges)))
	for _, r := range m.c.ranges {
		dst = appendUvarint(dst, uint64(r.To))
		dst = appendUvarint(dst, uint64(r.Ordinal))
	}
	ords := m.Ordinals()
	dst = appendUvarint(dst, uint64(len(ords)))
	for _, o := range ords {
		a := m.c.peers[o]
		dst = appendUvarint(dst, uint64(o))
		dst = appendUvarint(dst, uint64(len(a)))
		dst = append(dst, a...)
	}
	return dst, nil
}

// UnmarshalBinary decodes and validates a map; on any error m is unchanged.
func (m *Map) UnmarshalBinary(data []byte) error {
	s, err := decodeBinary(data)
	if err != nil {
		return fmt.Errorf("%w: binary form: %v", ErrInvalid, err)
	}
	built, err := s.Build()
	if err != nil {
		return err
	}
	*m = built
	return nil
}

func decodeBinary(b []byte) (Spec, error) {
	var s Spec
	d := decoder{b: b}
	if len(b) == 0 {
		return s, fmt.Errorf("empty")
	}
	if v := d.byte(); v != binaryVersion {
		return s, fmt.Errorf("version %d; this node reads version %d", v, binaryVersion)
	}
	s.Epoch = d.uvarint("epoch")
	n := d.uvarint("range count")
	if d.err == nil && (n == 0 || n > NumSlots) {
		return s, fmt.Errorf("%d ranges; a map has 1 to %d", n, NumSlots)
	}
	from := 0
	for i := 0; d.err == nil && i < int(n); i++ {
		to := d.uvarint("range end")
		o := d.uvarint("range ordinal")
		if d.err != nil {
			break
		}
		if to < uint64(from) || to >= NumSlots {
			return s, fmt.Errorf("range %d ends at %d; it starts at %d and slots end at %d", i, to, from, NumSlots-1)
		}
		if o >= MaxOrdinals {
			return s, fmt.Errorf("range %d names ordinal %d; ordinals are 0-%d", i, o, MaxOrdinals-1)
		}
		if i > 0 && int(o) == s.Ranges[i-1].Ordinal {
			return s, fmt.Errorf("ranges %d and %d both belong to ordinal %d and touch (not canonical)", i-1, i, o)
		}
		s.Ranges = append(s.Ranges, Range{From: from, To: int(to), Ordinal: int(o)})
		from = int(to) + 1
	}
	np := d.uvarint("peer count")
	if d.err == nil && np > MaxOrdinals {
		return s, fmt.Errorf("%d peers; at most %d", np, MaxOrdinals)
	}
	if np > 0 {
		s.Peers = make(map[int]string, np)
	}
	prev := -1
	for i := 0; d.err == nil && i < int(np); i++ {
		o := d.uvarint("peer ordinal")
		l := d.uvarint("peer address length")
		if d.err != nil {
			break
		}
		if o >= MaxOrdinals || int(o) <= prev {
			return s, fmt.Errorf("peer %d has ordinal %d; ordinals must ascend and be below %d", i, o, MaxOrdinals)
		}
		if l == 0 || l > MaxAddrLen {
			return s, fmt.Errorf("peer %d's address is %d bytes; 1 to %d", o, l, MaxAddrLen)
		}
		a := d.bytes(int(l), "peer address")
		if d.err != nil {
			break
		}
		s.Peers[int(o)] = string(a)
		prev = int(o)
	}
	if d.err != nil {
		return s, d.err
	}
	if len(d.b) > 0 {
		return s, fmt.Errorf("%d bytes after the last peer", len(d.b))
	}
	return s, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// uvarint reads a canonical (shortest) unsigned varint.
func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	var x uint64
	for i := 0; i < 10; i++ {
		if i >= len(d.b) {
			d.err = fmt.Errorf("%s: truncated", what)
			return 0
		}
		c := d.b[i]
		if i == 9 && c > 1 {
			d.err = fmt.Errorf("%s: overflows 64 bits", what)
			return 0
		}
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				d.err = fmt.Errorf("%s: not in shortest form", what)
				return 0
			}
			d.b = d.b[i+1:]
			return x
		}
	}
	d.err = fmt.Errorf("%s: overflows 64 bits", what)
	return 0
}

func (d *decoder) bytes(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.err = fmt.Errorf("%s: truncated (%d of %d bytes)", what, len(d.b), n)
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func appendUvarint(dst []byte, x uint64) []byte {
	for x >= 0x80 {
		dst = append(dst, byte(x)|0x80)
		x >>= 7
	}
	return append(dst, byte(x))
}
