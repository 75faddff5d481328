package liveness

import (
	"math"
	"time"
)

// window is a ring of the most recent samples, in seconds. Mean and deviation are recomputed
// from the ring when asked (64 values), which avoids the drift of running sums.
type window struct {
	buf  []float64
	next int
	n    int
}

func newWindow(size int) window { return window{buf: make([]float64, size)} }

func (w *window) add(d time.Duration) {
	w.buf[w.next] = d.Seconds()
	w.next = (w.next + 1) % len(w.buf)
	w.n = min(w.n+1, len(w.buf))
}

func (w *window) reset() { w.next, w.n = 0, 0 }

// meanStd returns the mean and the population standard deviation, 0 when empty.
func (w *window) meanStd() (mean, std time.Duration) {
	if w.n == 0 {
		return 0, 0
	}
	var sum float64
	for _, v := range w.buf[:w.n] {
		sum += v
	}
	m := sum / float64(w.n)
	var sq float64
	for _, v := range w.buf[:w.n] {
		sq += (v - m) * (v - m)
	}
	return seconds(m), seconds(math.Sqrt(sq / float64(w.n)))
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Stats describes one node's heartbeat statistics, for metrics and debugging.
type Stats struct {
	Samples int
	// MeanGap and StdDevGap describe the time between heartbeat arrivals.
	MeanGap   time.Duration
	StdDevGap time.Duration
	// MeanLateness and StdDevLateness describe how much later than told heartbeats arrive
	// (negative: earlier).
	MeanLateness   time.Duration
	StdDevLateness time.Duration
	MeanRTT        time.Duration
	StdDevRTT      time.Duration
	// Interval is the interval the node is told now.
	Interval time.Duration
}

// phi is the phi-accrual suspicion level after elapsed without a heartbeat: -log10 of the
// probability, under a normal model of the gaps, that a gap lasts at least that long.
func phi(elapsed, mean, std time.Duration) float64 {
	z := (elapsed - mean).Seconds() / (std.Seconds() * math.Sqrt2)
	p := 0.5 * math.Erfc(z)
	if p < 1e-300 {
		return 300
	}
	return -math.Log10(p)
}
