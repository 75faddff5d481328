package process

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWaitThenStop(t *testing.T) {
	boom := errors.New("raft host failed")
	stopped := 0
	stop := func(ctx context.Context) error {
		stopped++
		_, hasDeadline := ctx.Deadline()
		require.True(t, hasDeadline, "stop gets the grace as a deadline")
		return nil
	}
	errc := make(chan error, 1)
	errc <- boom
	require.ErrorIs(t, WaitThenStop(context.Background(), time.Second, errc, stop), boom)
	require.Equal(t, 1, stopped)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, WaitThenStop(ctx, time.Second, make(chan error), stop), "a cancelled context is a clean shutdown")
	require.Equal(t, 2, stopped)
}
