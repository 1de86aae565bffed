package ratelimit

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// exhaust spends addr's whole budget at second now and checks that the
// packet after it is refused.
func exhaust(t *testing.T, l *PerSource, addr netip.Addr, now int64) {
	t.Helper()
	for i := range l.rate {
		if !l.Allow(addr, now) {
			t.Fatalf("%s: packet %d of %d refused", addr, i+1, l.rate)
		}
	}
	if l.Allow(addr, now) {
		t.Fatalf("%s: packet %d allowed, over the rate of %d", addr, l.rate+1, l.rate)
	}
}

// variants are addresses that differ from base in exactly one bit, for
// every byte of the address (and both ends of each byte), so that a hash
// or index ignoring any byte shows.
func variants(base netip.Addr) []netip.Addr {
	var out []netip.Addr
	b := base.AsSlice()
	for i := range b {
		for _, bit := range []byte{0x01, 0x80} {
			v := append([]byte(nil), b...)
			v[i] ^= bit
			a, _ := netip.AddrFromSlice(v)
			out = append(out, a)
		}
	}
	return out
}

// Every address has its own budget: one source spending all of its own
// leaves every other address, whichever byte it differs in, untouched.
func TestDistinctAddressesHaveDistinctBudgets(t *testing.T) {
	l := New(3)
	now := int64(1_000_000)
	for _, base := range []netip.Addr{
		netip.MustParseAddr("100.64.7.9"),                 // a carrier-grade NAT address
		netip.MustParseAddr("2001:db8:aa:bb:cc:dd:ee:ff"), // IPv6
		netip.MustParseAddr("::ffff:203.0.113.77"),        // IPv4-mapped IPv6
	} {
		for _, v := range variants(base) {
			// A fresh second per pair: only these two are active in it.
			now++
			exhaust(t, l, base, now)
			exhaust(t, l, v, now)
			if l.Allow(base, now) {
				t.Fatalf("%s regained budget when %s spent its own", base, v)
			}
		}
	}
}

// The example of a carrier NAT pool: one busy sender in 100.64.0.0/16 at
// the limit must not silence any other address of that /16.
func TestOneSenderDoesNotSilenceItsNeighbours(t *testing.T) {
	l := New(1000)
	now := int64(7)
	busy := netip.MustParseAddr("100.64.0.1")
	exhaust(t, l, busy, now)
	refused := 0
	for i := range 1 << 16 {
		a := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
		if a == busy {
			continue
		}
		if !l.Allow(a, now) {
			refused++
		}
	}
	if refused > 0 {
		t.Fatalf("%d addresses of the busy sender's /16 were refused their first packet", refused)
	}
	if l.Allow(busy, now) {
		t.Fatal("the busy sender regained its budget while its neighbours sent")
	}
}

// An IPv4 address and its IPv4-mapped IPv6 form are one source: a dual
// stack socket reports either, and the budget must not double.
func TestIPv4AndMappedFormShareABudget(t *testing.T) {
	l := New(4)
	v4 := netip.MustParseAddr("198.51.100.20")
	mapped := netip.MustParseAddr("::ffff:198.51.100.20")
	for i := range 4 {
		a := v4
		if i%2 == 1 {
			a = mapped
		}
		if !l.Allow(a, 1) {
			t.Fatalf("packet %d refused", i+1)
		}
	}
	if l.Allow(v4, 1) || l.Allow(mapped, 1) {
		t.Fatal("the two forms of one address got two budgets")
	}
	// A zone names an interface, not another source.
	ll := netip.MustParseAddr("fe80::1")
	exhaust(t, l, ll, 2)
	if l.Allow(ll.WithZone("eth0"), 2) {
		t.Fatalf("%s got a budget apart from %s", ll.WithZone("eth0"), ll)
	}
}

func TestBudgetRenewsEverySecond(t *testing.T) {
	l := New(2)
	a := netip.MustParseAddr("192.0.2.1")
	exhaust(t, l, a, 10)
	exhaust(t, l, a, 11)
	// The window is the second, not the count: going back is a new window too.
	exhaust(t, l, a, 10)
}

func TestZeroRateDisables(t *testing.T) {
	var nilLimiter *PerSource
	for _, l := range []*PerSource{New(0), New(-5), nilLimiter} {
		for range 10_000 {
			if !l.Allow(netip.MustParseAddr("192.0.2.1"), 1) {
				t.Fatal("a disabled limiter refused a packet")
			}
		}
	}
}

// When more sources than a bucket holds are active in one second, the
// newcomers take the entries of those that sent least: the heavy sender
// keeps its count and stays refused, and every newcomer gets through.
func TestFullBucketKeepsTheHeavySender(t *testing.T) {
	l := New(50)
	heavy := netip.MustParseAddr("203.0.113.1")
	home := maphash.Comparable(l.seed, key(heavy)) & (buckets - 1)
	var same []netip.Addr
	for i := 0; len(same) < 5*ways; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if maphash.Comparable(l.seed, key(a))&(buckets-1) == home {
			same = append(same, a)
		}
	}
	exhaust(t, l, heavy, 5)
	for _, a := range same {
		if !l.Allow(a, 5) {
			t.Fatalf("newcomer %s refused its first packet", a)
		}
	}
	if l.Allow(heavy, 5) {
		t.Fatal("the heavy sender was evicted by light ones and regained its budget")
	}
}

// Concurrent packets from one source are counted exactly.
func TestConcurrentCountIsExact(t *testing.T) {
	l := New(1000)
	a := netip.MustParseAddr("2001:db8::7")
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				if l.Allow(a, 3) {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 1000 {
		t.Fatalf("%d of 4000 concurrent packets allowed, want exactly 1000", got)
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l := New(1 << 30)
	a := netip.MustParseAddr("2001:db8::1")
	if n := testing.AllocsPerRun(1000, func() { l.Allow(a, 1) }); n != 0 {
		t.Fatalf("Allow allocates %v times per call", n)
	}
}

func BenchmarkAllow(b *testing.B) {
	l := New(1 << 30)
	addrs := make([]netip.Addr, 4096)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{byte(i), byte(i >> 8), 7, 7})
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(addrs[i&4095], 1)
			i++
		}
	})
}
