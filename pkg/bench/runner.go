package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"
)

// Clock is the runner's time source. Tests inject a virtual one so scheduling is
// deterministic.
type Clock interface {
	Now() time.Time
	// Sleep waits for d, or until ctx ends and then returns ctx.Err().
	Sleep(ctx context.Context, d time.Duration) error
}

// WallClock is the real clock.
type WallClock struct{}

// Now is time.Now.
func (WallClock) Now() time.Time { return time.Now() }

// Sleep waits for d or ctx.
func (WallClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Load says how operations are issued.
type Load struct {
	// Workers is the number of concurrent operations at most (producers).
	Workers int
	// Rate is the offered rate in operations per second. With a rate the load is open-loop:
	// operation i is due at start + i/Rate whatever happened to the others, and its latency
	// is measured from that intended time, so time spent waiting for a free worker counts.
	// Zero means closed-loop: each worker issues its next operation when the last returns,
	// and latency is measured from the actual start.
	Rate float64
	// Duration stops issuing operations (due) after this long; MaxOps after this many. At
	// least one must be set. Operations in flight at the end are waited for.
	Duration time.Duration
	MaxOps   int64
	// Clock is WallClock when nil.
	Clock Clock
}

// Done is what one successful operation achieved.
type Done struct {
	Msgs, Bytes int64
}

// Op performs operation number i (from 0) on the given worker.
type Op func(ctx context.Context, worker int, i int64) (Done, error)

// Live holds counters the runner updates as it goes, for a progress line.
type Live struct {
	Msgs, Errors atomic.Int64
}

// Stats is the outcome of a run.
type Stats struct {
	// Ops counts successful operations, Msgs and Bytes what they carried.
	Ops, Msgs, Bytes int64
	// Errors counts failed operations by gRPC code name.
	Errors map[string]int64
	// Latency holds one value (ns) per successful operation.
	Latency *Histogram
	// Elapsed runs from the start to the end of the last operation.
	Elapsed time.Duration
}

// ErrorCount is the number of failed operations.
func (s *Stats) ErrorCount() int64 {
	var n int64
	for _, c := range s.Errors {
		n += c
	}
	return n
}

// ErrorCode names an operation's error by its gRPC code (wrapped statuses included), or by the
// context error.
func ErrorCode(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "DeadlineExceeded"
	case errors.Is(err, context.Canceled):
		return "Canceled"
	}
	return status.Code(err).String()
}

type workerStats struct {
	ops, msgs, bytes int64
	errs             map[string]int64
	lat              *Histogram
}

// Run drives op according to load and returns the merged statistics. It returns ctx's error
// with the statistics gathered so far when ctx ends first; operations that fail because ctx
// ended are not counted.
func Run(ctx context.Context, load Load, live *Live, op Op) (*Stats, error) {
	if load.Workers <= 0 {
		return nil, fmt.Errorf("bench: %d workers", load.Workers)
	}
	if load.Duration <= 0 && load.MaxOps <= 0 {
		return nil, errors.New("bench: a load needs a duration or a number of operations")
	}
	if load.Rate < 0 {
		return nil, fmt.Errorf("bench: negative rate %v", load.Rate)
	}
	clk := load.Clock
	if clk == nil {
		clk = WallClock{}
	}
	if live == nil {
		live = &Live{}
	}
	start := clk.Now()
	end := start.Add(load.Duration)
	var next atomic.Int64
	per := make([]workerStats, load.Workers)
	var wg sync.WaitGroup
	for w := range load.Workers {
		ws := &per[w]
		ws.errs = map[string]int64{}
		ws.lat = NewHistogram()
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if load.MaxOps > 0 && i >= load.MaxOps {
					return
				}
				var from time.Time
				if load.Rate > 0 {
					from = start.Add(time.Duration(float64(i) * float64(time.Second) / load.Rate))
					if load.Duration > 0 && !from.Before(end) {
						return
					}
					if d := from.Sub(clk.Now()); d > 0 {
						if clk.Sleep(ctx, d) != nil {
							return
						}
					}
				} else {
					from = clk.Now()
					if load.Duration > 0 && !from.Before(end) {
						return
					}
				}
				done, err := op(ctx, w, i)
				lat := clk.Now().Sub(from)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					ws.errs[ErrorCode(err)]++
					live.Errors.Add(1)
					continue
				}
				ws.ops++
				ws.msgs += done.Msgs
				ws.bytes += done.Bytes
				ws.lat.RecordDuration(lat)
				live.Msgs.Add(done.Msgs)
			}
		})
	}
	wg.Wait()
	st := &Stats{Errors: map[string]int64{}, Latency: NewHistogram(), Elapsed: clk.Now().Sub(start)}
	for _, ws := range per {
		st.Ops += ws.ops
		st.Msgs += ws.msgs
		st.Bytes += ws.bytes
		st.Latency.Merge(ws.lat)
		for k, v := range ws.errs {
			st.Errors[k] += v
		}
	}
	return st, ctx.Err()
}
