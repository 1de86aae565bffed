package controllers

import "testing"

func TestSettledCount(t *testing.T) {
	for _, c := range []struct{ recorded, read, want int64 }{
		{0, 0, 0},
		{0, 1, 1},       // the first phone is news
		{1, 0, 0},       // and so is the last one leaving
		{99, 100, 100},  // below 100 every change is written
		{100, 101, 100}, // 1% of 100: not yet
		{100, 102, 102}, // more than 1%
		{100, 99, 100},  // down by 1%: not yet
		{100, 98, 98},   // down by more
		{1000000, 1009999, 1000000},
		{1000000, 1010000, 1000000}, // exactly 1%
		{1000000, 1010001, 1010001},
		{1000000, 989999, 989999},
		{1000000, 0, 0}, // a pod back on an empty store
	} {
		if got := settledCount(c.recorded, c.read); got != c.want {
			t.Errorf("settledCount(%d, %d) = %d, want %d", c.recorded, c.read, got, c.want)
		}
	}
}
