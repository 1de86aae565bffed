package shard

import (
	"testing"
	"time"
)

func TestFrontClockLateness(t *testing.T) {
	var c frontClocks
	const skew = int64(7 * time.Second) // the front's clock is 7 s behind
	at := func(now, sent time.Duration) time.Duration {
		return c.lateness(3, int64(now)+skew, int64(sent))
	}
	base := 100 * time.Second
	if got := at(base+time.Millisecond, base); got != 0 {
		t.Fatalf("first frame: %v", got)
	}
	if got := at(base+2*time.Second+time.Millisecond, base+2*time.Second); got != 0 {
		t.Fatalf("a frame as quick as the first: %v", got)
	}
	// A frame read 5 s after it was sent (this pod was stopped).
	if got := at(base+10*time.Second, base+5*time.Second); got < 4*time.Second || got > 5*time.Second {
		t.Fatalf("a frame held 5 s: %v", got)
	}
	// Other fronts are judged on their own.
	if got := c.lateness(4, int64(base), int64(base)-int64(time.Hour)); got != 0 {
		t.Fatalf("another front's first frame: %v", got)
	}
	// The front's clock is stepped 3 s forward: for up to two windows its
	// frames look 3 s early, never late; after that the minimum is new.
	for i := range 3 {
		now := base + time.Duration(i+1)*clockWindow
		if got := at(now, now+3*time.Second); got != 0 {
			t.Fatalf("after a clock step, window %d: %v", i, got)
		}
	}
	// Stepped back again by those 3 s: late by 3 s until the minimum of
	// the stepped clock ages out, two windows on.
	now := base + 10*clockWindow
	if got := at(now, now); got != 3*time.Second {
		t.Fatalf("just after a step back: %v", got)
	}
	at(now+clockWindow, now+clockWindow)
	if got := at(now+2*clockWindow, now+2*clockWindow); got != 0 {
		t.Fatalf("two windows after a step back: %v", got)
	}
	if got := c.lateness(-1, 1, 1); got != 0 {
		t.Fatalf("ordinal -1: %v", got)
	}
	if got := c.lateness(0, 5, 0); got != 0 {
		t.Fatalf("unstamped: %v", got)
	}
}
