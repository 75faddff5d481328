package bench

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: each power of two is split into 2^subBits linear
// buckets, so a reported value is within 1/2^subBits (0.8%) of the recorded one. Values below
// 2^subBits are exact.
const subBits = 7

const (
	subCount = 1 << subBits
	// nBuckets covers every non-negative int64.
	nBuckets = subCount + (63-subBits)*subCount
)

// Histogram records non-negative values (latencies in nanoseconds) in log-linear buckets, as
// HdrHistogram does: fixed memory (about 58 KiB) whatever the count, bounded relative error.
// Count, min, max and mean are exact. It is not safe for concurrent use: give each worker its
// own and Merge them.
type Histogram struct {
	counts     [nBuckets]uint64
	n          uint64
	sum        float64
	minV, maxV int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{minV: math.MaxInt64} }

func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - 1 - subBits
	return subCount + shift*subCount + int(uint64(v)>>shift) - subCount
}

// bucketHigh is the largest value that falls in bucket i.
func bucketHigh(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := (i - subCount) / subCount
	top := uint64(subCount + (i-subCount)%subCount)
	hi := (top+1)<<shift - 1
	if hi > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(hi)
}

// Record adds one value; a negative one counts as 0.
func (h *Histogram) Record(v int64) {
	v = max(v, 0)
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	h.minV = min(h.minV, v)
	h.maxV = max(h.maxV, v)
}

// RecordDuration adds a duration in nanoseconds.
func (h *Histogram) RecordDuration(d time.Duration) { h.Record(int64(d)) }

// Merge adds o's values to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.minV = min(h.minV, o.minV)
	h.maxV = max(h.maxV, o.maxV)
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Min is the smallest recorded value (0 when empty).
func (h *Histogram) Min() int64 {
	if h.n == 0 {
		return 0
	}
	return h.minV
}

// Max is the largest recorded value (0 when empty).
func (h *Histogram) Max() int64 { return h.maxV }

// Mean is the exact mean (0 when empty).
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Quantile returns the value at quantile q in [0, 1]: the smallest bucket bound at or above
// which lie a fraction q of the values, capped to the exact min and max. 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return h.maxV
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			return min(max(bucketHigh(i), h.minV), h.maxV)
		}
	}
	return h.maxV
}
