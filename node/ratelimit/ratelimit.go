// Package ratelimit caps packets per source address with one-second
// windows kept in a fixed-size table. It never allocates and never grows,
// so a flood of spoofed sources costs the same memory as one.
//
// Every address has its own budget: the table stores the whole address
// next to its count and compares all 16 bytes, so two addresses share a
// budget only in the one case where they are the same address (an IPv4
// address and its IPv4-mapped IPv6 form). The table is set-associative:
// an address can sit in any of the few entries of its bucket, chosen by a
// hash keyed with a per-limiter random seed (a sender cannot aim at a
// victim's bucket). A bucket full of sources active in the current second
// gives up its least-used entry to a newcomer, so the heavy sender the
// limiter exists for keeps its count.
package ratelimit

import (
	"hash/maphash"
	"net/netip"
	"sync"
)

const (
	// ways is how many sources one bucket tracks at once.
	ways = 8
	// buckets × ways sources are tracked per second.
	buckets = 1 << 13
)

// entry is one source's window. count 0 marks a free entry.
type entry struct {
	addr   [16]byte
	window uint32 // the second this count belongs to
	count  uint32
}

type bucket struct {
	mu      sync.Mutex
	entries [ways]entry
}

// PerSource allows at most Rate packets per second from each source.
type PerSource struct {
	rate    uint32
	seed    maphash.Seed
	buckets []bucket
}

// New returns a limiter; rate 0 disables it (Allow always true).
func New(rate int) *PerSource {
	if rate <= 0 {
		return &PerSource{}
	}
	return &PerSource{rate: uint32(min(rate, 1<<31)), seed: maphash.MakeSeed(), buckets: make([]bucket, buckets)}
}

// key is the form of addr the table compares: its 16-byte IPv6 form, in
// which an IPv4 address and its IPv4-mapped form are equal. A zone (an
// interface name) does not make a different source.
func key(addr netip.Addr) [16]byte { return addr.As16() }

// Allow counts one packet from addr at second now and reports whether it
// is within the rate.
func (l *PerSource) Allow(addr netip.Addr, now int64) bool {
	if l == nil || l.rate == 0 {
		return true
	}
	k := key(addr)
	b := &l.buckets[maphash.Comparable(l.seed, k)&(buckets-1)]
	sec := uint32(now)
	b.mu.Lock()
	defer b.mu.Unlock()
	victim, victimScore := 0, uint64(1<<63)
	for i := range b.entries {
		e := &b.entries[i]
		if e.count != 0 && e.addr == k {
			switch {
			case e.window != sec:
				e.window, e.count = sec, 1
			case e.count >= l.rate:
				return false
			default:
				e.count++
			}
			return true
		}
		// A free or stale entry costs nothing to take; else the one that
		// sent least this second.
		score := uint64(0)
		if e.count != 0 && e.window == sec {
			score = 1 + uint64(e.count)
		}
		if score < victimScore {
			victim, victimScore = i, score
		}
	}
	b.entries[victim] = entry{addr: k, window: sec, count: 1}
	return true
}
