package gateway

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"google.golang.org/grpc/status"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// aheadClock is real time plus an offset a test moves forward (RouterConfig.Now must keep
// real time's pace: the router sets the deadlines it derives on contexts).
type aheadClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *aheadClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *aheadClock) jump(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// A subscription's stream that stayed open for more than half of DefaultTimeout, even without
// a message, worked: its break starts a new outage with a fresh budget of attempts. One that
// broke at once spends an attempt, and MaxAttempts of those end the subscription. Measured on
// the router's clock, so no test waits half a timeout.
func TestRouterSubscribeBudgetRenewsAfterAStreamThatLasted(t *testing.T) {
	const maxAttempts, streams = 3, 10
	for _, lasted := range []bool{true, false} {
		c := newFakeCluster()
		c.setLeader("a", 1)
		clk := &aheadClock{}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var mu sync.Mutex
		opened := 0
		c.subscribeFn = func(context.Context, string, *replicav1.SubscribeRequest) <-chan streamItem {
			mu.Lock()
			defer mu.Unlock()
			opened++
			if opened == streams {
				cancel()
			}
			if lasted {
				clk.jump(31 * time.Minute) // the stream stayed open, silent, for 31 minutes
			}
			ch := make(chan streamItem, 1)
			ch <- streamItem{err: status.Error(codes.Unavailable, "stream broke")}
			close(ch)
			return ch
		}
		r := c.router(t, RouterConfig{DefaultTimeout: time.Hour, MaxAttempts: maxAttempts, Now: clk.Now})
		err := r.Subscribe(ctx, "a", 1, Subscription{Deliver: func([]*triarchv1.Message) error { return nil }})
		mu.Lock()
		got := opened
		mu.Unlock()
		if lasted {
			require.Equal(t, streams, got, "streams opened before the caller ended the subscription")
			require.NotEqual(t, codes.Unavailable, status.Code(err), "gave up: %v", err)
		} else {
			require.Equal(t, maxAttempts, got, "streams opened before giving up")
			requireUnavailableWithRetry(t, err)
		}
	}
}
