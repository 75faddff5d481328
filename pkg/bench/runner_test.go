package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeClock is virtual time: Sleep advances it at once.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.now = c.now.Add(d)
	}
	return ctx.Err()
}

// slowOp takes 10 ms of virtual time.
func slowOp(clk *fakeClock) Op {
	return func(ctx context.Context, _ int, _ int64) (Done, error) {
		return Done{Msgs: 1, Bytes: 10}, clk.Sleep(ctx, 10*time.Millisecond)
	}
}

// Offered 1000 ops/s to one worker whose operation takes 10 ms, operation i is due at i ms but
// starts only when operation i-1 is done, at 10·i ms: its latency from the intended time is
// 10 ms of service plus 9·i ms of queueing. A closed-loop measure would say 10 ms every time.
func TestOpenLoopMeasuresFromIntendedSendTime(t *testing.T) {
	clk := newFakeClock()
	st, err := Run(context.Background(), Load{Workers: 1, Rate: 1000, Duration: 10 * time.Millisecond, Clock: clk}, nil, slowOp(clk))
	require.NoError(t, err)
	require.Equal(t, int64(10), st.Ops)
	require.Equal(t, int64(10), st.Msgs)
	require.Equal(t, int64(100), st.Bytes)
	require.Equal(t, int64(10*time.Millisecond), st.Latency.Min())
	require.Equal(t, int64(91*time.Millisecond), st.Latency.Max()) // 10 + 9·9
	require.InDelta(t, float64(46*time.Millisecond), float64(st.Latency.Quantile(0.5)), float64(time.Millisecond))
	require.Equal(t, 100*time.Millisecond, st.Elapsed)

	// The same operation closed-loop: every latency is the service time alone.
	clk = newFakeClock()
	st, err = Run(context.Background(), Load{Workers: 1, Duration: 100 * time.Millisecond, Clock: clk}, nil, slowOp(clk))
	require.NoError(t, err)
	require.Equal(t, int64(10), st.Ops)
	require.Equal(t, int64(10*time.Millisecond), st.Latency.Max())
}

// A fast operation under an open loop waits for its slot: the run paces at the offered rate
// and latency is only the service time.
func TestOpenLoopPacesByTheClock(t *testing.T) {
	clk := newFakeClock()
	var mu sync.Mutex
	var starts []time.Duration
	t0 := clk.Now()
	op := func(ctx context.Context, _ int, _ int64) (Done, error) {
		mu.Lock()
		starts = append(starts, clk.Now().Sub(t0))
		mu.Unlock()
		return Done{Msgs: 1}, clk.Sleep(ctx, 100*time.Microsecond)
	}
	st, err := Run(context.Background(), Load{Workers: 1, Rate: 100, MaxOps: 5, Clock: clk}, nil, op)
	require.NoError(t, err)
	require.Equal(t, []time.Duration{0, 10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond, 40 * time.Millisecond}, starts)
	require.Equal(t, int64(100*time.Microsecond), st.Latency.Max())
}

func TestRunCountsErrorsByCodeAndStopsAtMaxOps(t *testing.T) {
	live := &Live{}
	op := func(_ context.Context, _ int, i int64) (Done, error) {
		switch i % 4 {
		case 0:
			return Done{}, fmt.Errorf("send: %w", status.Error(codes.Unavailable, "no leader"))
		case 1:
			return Done{}, errors.New("plain")
		}
		return Done{Msgs: 3, Bytes: 30}, nil
	}
	st, err := Run(context.Background(), Load{Workers: 4, MaxOps: 100}, live, op)
	require.NoError(t, err)
	require.Equal(t, int64(50), st.Ops)
	require.Equal(t, int64(150), st.Msgs)
	require.Equal(t, map[string]int64{"Unavailable": 25, "Unknown": 25}, st.Errors)
	require.Equal(t, int64(50), st.ErrorCount())
	require.Equal(t, int64(150), live.Msgs.Load())
	require.Equal(t, int64(50), live.Errors.Load())
	require.Equal(t, uint64(50), st.Latency.Count())
}

func TestRunRefusesAnUnboundedLoad(t *testing.T) {
	_, err := Run(context.Background(), Load{Workers: 1}, nil, nil)
	require.Error(t, err)
	_, err = Run(context.Background(), Load{MaxOps: 1}, nil, nil)
	require.Error(t, err)
}
