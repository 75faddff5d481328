package wait

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWaitTakesOnlyTheResultAtItsIndex(t *testing.T) {
	r := New[string]()
	w := r.Register()
	defer w.Close()
	// A replayed entry of an earlier incarnation carrying the same id, at another index.
	r.Trigger(w.ID(), 2, "old")
	r.Trigger(w.ID(), 3, "mine")
	got, err := w.Wait(context.Background(), 3)
	require.NoError(t, err)
	require.Equal(t, "mine", got)
}

func TestWaitEndsWithTheContext(t *testing.T) {
	r := New[int]()
	w := r.Register()
	defer w.Close()
	r.Trigger(w.ID(), 7, 1) // not the index waited for
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := w.Wait(ctx, 8)
	require.ErrorIs(t, err, context.Canceled)
}

func TestTriggerNeverBlocksAndClosedWaitersGetNothing(t *testing.T) {
	r := New[int]()
	w := r.Register()
	for i := range 100 {
		r.Trigger(w.ID(), uint64(i), i) // far more than the buffer holds
	}
	w.Close()
	require.Zero(t, r.Pending())
	r.Trigger(w.ID(), 1, 1) // no waiter: dropped
}

// Ids of two incarnations (two registries) start at independent random points, and within one
// they never repeat.
func TestIdsDoNotRepeat(t *testing.T) {
	a, b := New[int](), New[int]()
	seen := map[uint64]bool{}
	for range 1000 {
		for _, r := range []*Registry[int]{a, b} {
			w := r.Register()
			require.False(t, seen[w.ID()], "id %d repeated", w.ID())
			seen[w.ID()] = true
			w.Close()
		}
	}
}
