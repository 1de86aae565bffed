package state

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The stored form of a record: a version byte, then fields in a fixed
// order with varints, so that an idle record costs about 30 bytes on disk.
const recordFormat = 1

const (
	encHasAddr = 1 << iota
	encHasExt
	encGeneralSent
	encCustomSent
	encHasCustom
)

// AppendBinary appends the stored form of r (without its uuid, which is
// the key, and without its connection, which does not survive a restart).
func (r *Record) AppendBinary(dst []byte) []byte {
	var f byte
	if r.Flags&flagHasAddr != 0 {
		f |= encHasAddr
	}
	e := r.Ext
	if e != nil && (e.GeneralAt != 0 || e.MaskAt != 0 || e.CustomAt != 0 || e.GeneralID != 0 || e.Mask != 0 || e.Custom != nil) {
		f |= encHasExt
		if e.GeneralSent {
			f |= encGeneralSent
		}
		if e.CustomSent {
			f |= encCustomSent
		}
		if e.Custom != nil {
			f |= encHasCustom
		}
	}
	dst = append(dst, recordFormat, f)
	dst = binary.AppendVarint(dst, r.LastSeen)
	if f&encHasAddr != 0 {
		dst = append(dst, r.ip[:]...)
		dst = binary.BigEndian.AppendUint16(dst, r.port)
	}
	if f&encHasExt == 0 {
		return dst
	}
	dst = binary.AppendUvarint(dst, e.GeneralID)
	dst = binary.AppendVarint(dst, e.GeneralAt)
	dst = binary.BigEndian.AppendUint64(dst, e.Mask)
	dst = binary.AppendVarint(dst, e.MaskAt)
	dst = binary.AppendUvarint(dst, uint64(len(e.Classes)))
	for _, c := range e.Classes {
		dst = binary.AppendUvarint(dst, c.ID)
		dst = binary.BigEndian.AppendUint64(dst, c.Bits)
		if c.Sent {
			dst = append(dst, 1)
		} else {
			dst = append(dst, 0)
		}
	}
	dst = binary.AppendUvarint(dst, e.CustomID)
	dst = binary.AppendVarint(dst, e.CustomAt)
	if e.Custom != nil {
		dst = binary.AppendUvarint(dst, uint64(len(e.Custom)))
		dst = append(dst, e.Custom...)
	}
	return dst
}

var errCorrupt = errors.New("corrupt record")

// UnmarshalBinary reads what AppendBinary wrote. The payload is copied, so
// b may be memory the store reuses.
func (r *Record) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	if v := d.byte(); v != recordFormat {
		return fmt.Errorf("record format %d: %w", v, errCorrupt)
	}
	f := d.byte()
	r.LastSeen = d.varint()
	r.Flags &^= flagHasAddr
	if f&encHasAddr != 0 {
		copy(r.ip[:], d.bytes(16))
		r.port = d.u16()
		r.Flags |= flagHasAddr
	}
	r.Ext = nil
	if f&encHasExt != 0 {
		e := &Ext{}
		e.GeneralID = d.uvarint()
		e.GeneralAt = d.varint()
		e.GeneralSent = f&encGeneralSent != 0
		e.Mask = d.u64()
		e.MaskAt = d.varint()
		n := d.uvarint()
		if n > 64 {
			return fmt.Errorf("%d classified pushes: %w", n, errCorrupt)
		}
		for range n {
			c := ClassPush{ID: d.uvarint(), Bits: d.u64(), Sent: d.byte() == 1}
			e.Classes = append(e.Classes, c)
		}
		e.CustomID = d.uvarint()
		e.CustomAt = d.varint()
		e.CustomSent = f&encCustomSent != 0
		if f&encHasCustom != 0 {
			n := d.uvarint()
			if n > 1<<16 {
				return fmt.Errorf("payload of %d bytes: %w", n, errCorrupt)
			}
			e.Custom = append([]byte{}, d.bytes(int(n))...)
		}
		r.Ext = e
	}
	if d.err || len(d.b) != 0 {
		return errCorrupt
	}
	return nil
}

type decoder struct {
	b   []byte
	err bool
}

func (d *decoder) bytes(n int) []byte {
	if d.err || len(d.b) < n {
		d.err = true
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte  { return d.bytes(1)[0] }
func (d *decoder) u16() uint16 { return binary.BigEndian.Uint16(d.bytes(2)) }
func (d *decoder) u64() uint64 { return binary.BigEndian.Uint64(d.bytes(8)) }

func (d *decoder) uvarint() uint64 {
	if d.err {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = true
		return 0
	}
	d.b = d.b[n:]
	return v
}
