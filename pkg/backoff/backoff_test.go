package backoff

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Pauses lie between half the current delay and all of it, double up to the maximum, and
// respect a hint up to the maximum.
func TestNextDoublesWithJitterUpToTheMax(t *testing.T) {
	b := New(10*time.Millisecond, 80*time.Millisecond)
	for _, cur := range []time.Duration{10, 20, 40, 80, 80} {
		cur *= time.Millisecond
		d := b.Next(0)
		require.GreaterOrEqual(t, d, cur/2)
		require.LessOrEqual(t, d, cur)
	}
	require.Equal(t, 80*time.Millisecond, b.Next(time.Hour), "a hint above the maximum is capped")
	small := New(time.Millisecond, time.Second)
	require.GreaterOrEqual(t, small.Next(300*time.Millisecond), 300*time.Millisecond, "a hint below the maximum is kept")
}

// Pause refuses at once when the deadline leaves less than minLeft or ctx ended, and never
// sleeps past half of what the deadline leaves.
func TestPauseRespectsTheDeadlineAndContext(t *testing.T) {
	b := New(time.Hour, time.Hour)
	require.False(t, b.Pause(context.Background(), time.Now().Add(time.Millisecond), 0, 10*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.False(t, b.Pause(ctx, time.Time{}, 0, 0))
	// An hour's backoff against a deadline 40 ms away pauses 20 ms at most: it returns true
	// well before the test's own limit.
	done := make(chan bool, 1)
	go func() {
		done <- b.Pause(context.Background(), time.Now().Add(40*time.Millisecond), 0, time.Millisecond)
	}()
	select {
	case ok := <-done:
		require.True(t, ok)
	case <-time.After(30 * time.Second):
		t.Fatal("Pause slept past half the deadline")
	}
}
