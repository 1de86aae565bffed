package shard

import (
	"math"
	"sync"
	"time"

	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// frontClocks tell, for frames a front stamped with its own clock, how
// much later than the quickest of its recent frames one arrived here: the
// time it spent queued or in flight beyond the usual, which includes any
// time this process was stopped with the frame unread. Only differences
// of the same front's stamps are compared, so the pods' clocks need not
// agree.
type frontClocks struct {
	f [slotmap.MaxOrdinals]frontClock
}

// clockWindow is how long a smallest difference counts: the front's or
// this pod's clock may be stepped, and an old minimum would then judge
// every frame late (or none).
const clockWindow = 30 * time.Second

type frontClock struct {
	mu        sync.Mutex
	cur, prev int64 // smallest receipt-minus-stamp of the current and previous window
	start     int64 // when the current window began
	seen      bool
}

// lateness notes a frame of front ordinal stamped sent (the front's unix
// nanoseconds) that arrived at now (this pod's), and returns how much
// later it arrived than the quickest frame of the last window or two.
func (c *frontClocks) lateness(ordinal int, now, sent int64) time.Duration {
	if ordinal < 0 || ordinal >= len(c.f) || sent == 0 {
		return 0
	}
	f := &c.f[ordinal]
	d := now - sent
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.seen || now-f.start >= int64(clockWindow) {
		if f.seen {
			f.prev = f.cur
		} else {
			f.prev = math.MaxInt64
		}
		f.cur, f.start, f.seen = math.MaxInt64, now, true
	}
	f.cur = min(f.cur, d)
	return time.Duration(d - min(f.cur, f.prev))
}
