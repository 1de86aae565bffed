package slotmap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// MaxAddrLen bounds a peer address: a DNS name (253) plus a port.
const MaxAddrLen = 300

// Range gives the slots From..To (both inclusive) to an ordinal.
type Range struct {
	From    int `json:"from"`
	To      int `json:"to"`
	Ordinal int `json:"ordinal"`
}

func (r Range) String() string {
	if r.From == r.To {
		return strconv.Itoa(r.From)
	}
	return strconv.Itoa(r.From) + "-" + strconv.Itoa(r.To)
}

// Spec is a slot map as people and the operator write it. Unlike a Map it
// may be invalid; Validate says why, Build turns it into a Map.
type Spec struct {
	Epoch  uint64
	Ranges []Range
	// Peers maps an ordinal to the host:port of its pod's peer listener.
	// An ordinal may have a peer and no slots (a pod about to receive
	// slots, or one being drained).
	Peers map[int]string
}

// ErrInvalid is wrapped by every error Validate returns.
var ErrInvalid = errors.New("invalid slot map")

// InvalidError lists everything wrong with a Spec, in words.
type InvalidError struct {
	Problems []string
}

// maxProblems keeps an error about a garbage map readable.
const maxProblems = 8

func (e *InvalidError) Error() string {
	shown := e.Problems
	more := ""
	if len(shown) > maxProblems {
		more = fmt.Sprintf("; and %d more", len(shown)-maxProblems)
		shown = shown[:maxProblems]
	}
	return ErrInvalid.Error() + ": " + strings.Join(shown, "; ") + more
}

func (e *InvalidError) Unwrap() error { return ErrInvalid }

// Validate checks that the ranges cover slots 0..1023 exactly once, that
// ordinals are 0..511, that every ordinal owning slots has a peer address
// of the form host:port, that no two peers share an address, and that the
// epoch is at least 1. The error names each gap, overlap and missing peer.
func (s Spec) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	if s.Epoch == 0 {
		add("epoch is 0 (or missing); it must be at least 1")
	}
	if s.Epoch > MaxEpoch {
		// A pod refuses every older epoch: one near 2^64 would leave no
		// room for the next map, and JSON readers lose precision above
		// 2^53.
		add("epoch %d is above the largest, %d", s.Epoch, uint64(MaxEpoch))
	}
	if len(s.Ranges) == 0 {
		add("no ranges: slots 0-%d have no owner", NumSlots-1)
	}

	// cover[slot] counts the ranges holding a slot; first and second name
	// two of them so an overlap can be reported with both.
	var cover [NumSlots]uint16
	var first, second [NumSlots]int32
	owners := map[int][]Range{}
	for i, r := range s.Ranges {
		bad := false
		if r.From < 0 || r.To >= NumSlots || r.From >= NumSlots || r.To < 0 {
			add("range %d (from %d to %d) goes outside slots 0-%d", i, r.From, r.To, NumSlots-1)
			bad = true
		} else if r.From > r.To {
			add("range %d starts at %d, after its end %d", i, r.From, r.To)
			bad = true
		}
		if r.Ordinal < 0 || r.Ordinal >= MaxOrdinals {
			add("range %d (%d-%d) names ordinal %d; ordinals are 0-%d", i, r.From, r.To, r.Ordinal, MaxOrdinals-1)
			bad = true
		}
		if bad {
			continue
		}
		owners[r.Ordinal] = append(owners[r.Ordinal], r)
		for slot := r.From; slot <= r.To; slot++ {
			switch cover[slot] {
			case 0:
				first[slot] = int32(i)
			case 1:
				second[slot] = int32(i)
			}
			if cover[slot] < 2 {
				cover[slot]++
			}
		}
	}
	if len(s.Ranges) > 0 {
		for slot := 0; slot < NumSlots; {
			end := slot
			switch cover[slot] {
			case 0:
				for end+1 < NumSlots && cover[end+1] == 0 {
					end++
				}
				add("slots %s are not covered by any range", Range{From: slot, To: end})
			case 2:
				for end+1 < NumSlots && cover[end+1] == 2 && first[end+1] == first[slot] && second[end+1] == second[slot] {
					end++
				}
				add("slots %s are covered twice (ranges %d and %d overlap)", Range{From: slot, To: end}, first[slot], second[slot])
			}
			slot = end + 1
		}
	}

	ordinals := make([]int, 0, len(owners))
	for o := range owners {
		ordinals = append(ordinals, o)
	}
	sort.Ints(ordinals)
	for _, o := range ordinals {
		if _, ok := s.Peers[o]; !ok {
			add("ordinal %d owns slots %s but has no peer address", o, joinRanges(owners[o]))
		}
	}

	peerOrdinals := make([]int, 0, len(s.Peers))
	for o := range s.Peers {
		peerOrdinals = append(peerOrdinals, o)
	}
	sort.Ints(peerOrdinals)
	seen := map[string]int{}
	for _, o := range peerOrdinals {
		addr := s.Peers[o]
		if o < 0 || o >= MaxOrdinals {
			add("peer %d: ordinals are 0-%d", o, MaxOrdinals-1)
			continue
		}
		if msg := checkAddr(addr); msg != "" {
			add("peer %d: %s", o, msg)
			continue
		}
		if prev, dup := seen[addr]; dup {
			add("peers %d and %d have the same address %q", prev, o, addr)
			continue
		}
		seen[addr] = o
	}
	if len(p) > 0 {
		return &InvalidError{Problems: p}
	}
	return nil
}

// checkAddr says what is wrong with a peer address, or "".
func checkAddr(addr string) string {
	if addr == "" {
		return "empty address"
	}
	if len(addr) > MaxAddrLen {
		return fmt.Sprintf("address is %d bytes long; at most %d", len(addr), MaxAddrLen)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("address %q is not host:port", addr)
	}
	if host == "" {
		return fmt.Sprintf("address %q has no host", addr)
	}
	if _, err := netip.ParseAddr(host); err != nil && !validHostname(host) {
		return fmt.Sprintf("address %q: host is neither an IP address nor a DNS name", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port[0] == '+' {
		return fmt.Sprintf("address %q: port must be a number from 1 to 65535", addr)
	}
	return ""
}

// validHostname reports whether h is a DNS name: dot-separated labels of
// letters, digits and inner hyphens (underscores allowed, as some
// resolvers do), each 1-63 bytes.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(h, "."), ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func joinRanges(rs []Range) string {
	sort.Slice(rs, func(i, j int) bool { return rs[i].From < rs[j].From })
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// Build validates the spec and compiles it into a Map.
func (s Spec) Build() (Map, error) {
	if err := s.Validate(); err != nil {
		return Map{}, err
	}
	c := &compiled{epoch: s.Epoch, peers: make(map[int]string, len(s.Peers))}
	for _, r := range s.Ranges {
		for slot := r.From; slot <= r.To; slot++ {
			c.owner[slot] = uint16(r.Ordinal)
		}
	}
	for o, a := range s.Peers {
		c.peers[o] = a
	}
	c.ranges = rangesOf(&c.owner)
	return Map{c: c}, nil
}

// rangesOf is the canonical list of ranges of an owner table: ascending,
// adjacent ranges of the same ordinal merged.
func rangesOf(owner *[NumSlots]uint16) []Range {
	var rs []Range
	for slot := 0; slot < NumSlots; {
		end := slot
		for end+1 < NumSlots && owner[end+1] == owner[slot] {
			end++
		}
		rs = append(rs, Range{From: slot, To: end, Ordinal: int(owner[slot])})
		slot = end + 1
	}
	return rs
}
