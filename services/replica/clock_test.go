package replica

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a clock a test moves by hand (EngineConfig.Now and After): the engine's
// timed waits end only when the test says so, so their timing is tested without real time.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	c  chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), c: ch})
	return ch
}

// waiting is how many After channels have not fired yet.
func (c *fakeClock) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// next moves the clock to the earliest pending timer and fires every timer due by then.
func (c *fakeClock) next() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return
	}
	at := c.timers[0].at
	for _, t := range c.timers {
		if t.at.Before(at) {
			at = t.at
		}
	}
	c.now = at
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.c <- c.now
	}
	c.timers = kept
}

// blocked waits (polling, with a deadline) until something waits on the clock or done is
// closed, and reports which.
func (c *fakeClock) blocked(t *testing.T, done <-chan struct{}) (returned bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		select {
		case <-done:
			returned = true
			return true
		default:
			return c.waiting() > 0
		}
	}, 10*time.Second, time.Millisecond, "nothing waits on the engine's clock")
	return returned
}
