package main

import (
	"math"
	"math/bits"
	"sort"
	"time"
)

// hist is a log-linear latency histogram in nanoseconds: values below 256
// are exact, larger ones fall in buckets 1/128 of their power of two wide
// (under 0.8% error). It is not safe for concurrent use: each goroutine
// keeps its own and they are merged at the end.
type hist struct {
	counts []uint64
	n      uint64
	sum    float64
	min    int64
	max    int64
}

const histSub = 128

func newHist() *hist { return &hist{counts: make([]uint64, 58*histSub), min: math.MaxInt64} }

func histIndex(v int64) int {
	if v < 2*histSub {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - 8 // v>>e is in [128, 256)
	return (e+1)*histSub + int(v>>e) - histSub
}

// histValue is the middle of bucket i.
func histValue(i int) int64 {
	if i < 2*histSub {
		return int64(i)
	}
	e := i/histSub - 1
	m := int64(i%histSub + histSub)
	return m<<e + (int64(1)<<e)/2
}

func (h *hist) add(d time.Duration) {
	v := int64(d)
	h.counts[histIndex(v)]++
	h.n++
	h.sum += float64(v)
	h.min = min(h.min, v)
	h.max = max(h.max, v)
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0..1); the maximum is exact.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return time.Duration(h.max)
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(max(histValue(i), h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *hist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// latencyMetrics adds name_p50_ms, _p99_ms, _p999_ms, _max_ms, _mean_ms
// and _samples.
func latencyMetrics(m map[string]float64, name string, h *hist) {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	m[name+"_samples"] = float64(h.n)
	if h.n == 0 {
		return
	}
	m[name+"_p50_ms"] = ms(h.quantile(0.50))
	m[name+"_p99_ms"] = ms(h.quantile(0.99))
	m[name+"_p999_ms"] = ms(h.quantile(0.999))
	m[name+"_max_ms"] = ms(h.quantile(1))
	m[name+"_mean_ms"] = ms(h.mean())
}

// median of a non-empty slice (the mean of the middle two when even).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
