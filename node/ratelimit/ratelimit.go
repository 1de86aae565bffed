// Package ratelimit caps packets per source address with a fixed-size
// table of one-second windows. It never allocates and never grows, so a
// flood of spoofed sources costs the same memory as one: colliding
// sources share a budget, which only ever errs towards dropping.
package ratelimit

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
)

const slots = 1 << 16

// PerSource allows at most Rate packets per second from each source.
type PerSource struct {
	rate  uint32
	table [slots]atomic.Uint64 // window second << 32 | count
}

// New returns a limiter; rate 0 disables it (Allow always true).
func New(rate int) *PerSource {
	if rate < 0 {
		rate = 0
	}
	return &PerSource{rate: uint32(min(rate, 1<<31))}
}

// Allow counts one packet from addr at second now and reports whether it
// is within the rate.
func (l *PerSource) Allow(addr netip.Addr, now int64) bool {
	if l == nil || l.rate == 0 {
		return true
	}
	a := addr.As16()
	h := binary.LittleEndian.Uint64(a[:8])*0x9e3779b97f4a7c15 ^ binary.LittleEndian.Uint64(a[8:])*0xc2b2ae3d27d4eb4f
	s := &l.table[(h>>32^h)&(slots-1)]
	sec := uint64(uint32(now))
	for {
		old := s.Load()
		var next uint64
		if old>>32 != sec {
			next = sec<<32 | 1
		} else {
			if uint32(old) >= l.rate {
				return false
			}
			next = old + 1
		}
		if s.CompareAndSwap(old, next) {
			return true
		}
	}
}
