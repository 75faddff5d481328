package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// Free disk space (issue 17 item 4; etcd's NOSPACE alarm is the anchor). A replica whose data
// directory's file system has less than a watermark free refuses appends with ErrNoSpace
// (ResourceExhausted with a retry delay: the client backs off and the operator frees space or
// moves channels), keeps serving reads and subscriptions, and takes appends again by itself
// once the space is back. Refusing before the disk is full is what keeps a full disk from
// failing raft's writes, which would stop the process and make it crash-loop on restart.
//
// Raft traffic is not refused: followers must keep appending what their leaders commit (a
// quorum acknowledged it already), and entries of groups led elsewhere are bounded by those
// leaders' own watermarks. The margin between the watermark and a full disk absorbs them.

// ErrNoSpace: the replica's disk is below its free-space watermark.
var ErrNoSpace = errors.New("disk space below the watermark: appends refused until space is freed")

// spaceCheckEvery bounds how often the free space is measured; appends in between use the last
// measure.
const spaceCheckEvery = time.Second

// SpaceGuard measures a file system's free space and says whether appends may go on.
type SpaceGuard struct {
	// Free returns the bytes available to this process on the data directory's file system.
	free   func() (uint64, error)
	min    uint64 // refuse below this
	resume uint64 // take appends again at or above this (min plus a quarter, against flapping)
	now    func() time.Time
	log    *slog.Logger
	// Check runs on every append: the verdict and the time of the last measure are read
	// without the lock, which only a measure (once per spaceCheckEvery) and a refusal take.
	checkedAt atomic.Int64 // unix nanoseconds of the last measure; 0: none yet
	low       atomic.Bool
	mu        sync.Mutex
	last      uint64
}

// NewSpaceGuard builds a guard refusing appends below minFree bytes, measuring with free
// (statfsFree for a directory). now and log may be nil.
func NewSpaceGuard(free func() (uint64, error), minFree uint64, now func() time.Time, log *slog.Logger) *SpaceGuard {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SpaceGuard{free: free, min: minFree, resume: minFree + minFree/4, now: now, log: log}
}

// Check returns ErrNoSpace (wrapped with the figures) while space is low.
func (g *SpaceGuard) Check() error {
	if g == nil || g.min == 0 {
		return nil
	}
	if now := g.now(); g.checkedAt.Load() == 0 || now.UnixNano()-g.checkedAt.Load() >= int64(spaceCheckEvery) {
		g.measure(now)
	}
	if !g.low.Load() {
		return nil
	}
	g.mu.Lock()
	last := g.last
	g.mu.Unlock()
	return fmt.Errorf("%w (%d bytes free, %d wanted; appends resume at %d)", ErrNoSpace, last, g.min, g.resume)
}

// measure takes a new measure, unless a concurrent Check took one since the caller looked.
func (g *SpaceGuard) measure(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if at := g.checkedAt.Load(); at != 0 && now.UnixNano()-at < int64(spaceCheckEvery) {
		return
	}
	g.checkedAt.Store(now.UnixNano())
	free, err := g.free()
	if err != nil {
		// Unknown is not low: a failing measure must not stop a healthy replica.
		g.log.Warn("measure free disk space", "err", err)
		return
	}
	g.last = free
	switch low := g.low.Load(); {
	case !low && free < g.min:
		g.low.Store(true)
		g.log.Error("disk space below the watermark: refusing appends", "free_bytes", free, "min_free_bytes", g.min)
	case low && free >= g.resume:
		g.low.Store(false)
		g.log.Warn("disk space back above the watermark: taking appends again", "free_bytes", free)
	}
}

// register reports the last measure and the alarm as gauges.
func (g *SpaceGuard) register(m metric.Meter) error {
	free, err := m.Int64ObservableGauge("triarch.replica.disk_free_bytes",
		metric.WithDescription("bytes free on the data directory's file system at the last check"), metric.WithUnit("By"))
	if err != nil {
		return err
	}
	alarm, err := m.Int64ObservableGauge("triarch.replica.nospace",
		metric.WithDescription("1 while free disk space is below --min-free-space and appends are refused"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		g.mu.Lock()
		defer g.mu.Unlock()
		o.ObserveInt64(free, int64(min(g.last, 1<<62)))
		var v int64
		if g.low.Load() {
			v = 1
		}
		o.ObserveInt64(alarm, v)
		return nil
	}, free, alarm)
	return err
}
