package arbiterclient

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/internal/testutil"
)

// handClock is Config.After driven by the test: every wait asked for is recorded and ends
// when the test fires it.
type handClock struct {
	mu    sync.Mutex
	asked []time.Duration
	fire  chan time.Time
}

func (c *handClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = append(c.asked, d)
	return c.fire
}

func (c *handClock) waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.asked...)
}

// With no member able to answer, the client tries each member once per round (following the
// hints to the leader) and waits RetryBackoff on its clock before the next round; it succeeds
// in the first round after a leader answers. An hour's backoff costs the test nothing.
func TestRetriesRoundByRoundOnTheClientClock(t *testing.T) {
	const backoff = time.Hour
	fc := startCluster(t, 3)
	fc.setLeader(2)
	fc.members[2].srv.Stop() // the leader the others name is down
	clk := &handClock{fire: make(chan time.Time)}
	c, err := New(Config{Members: fc.addrs(), RetryBackoff: backoff, CallTimeout: 5 * time.Second, After: clk.After,
		Dial: func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })

	done := make(chan error, 1)
	go func() {
		_, err := c.CreateChannel(testutil.Context(t, 30*time.Second), &arbiterv1.CreateChannelRequest{ChannelId: "a"})
		done <- err
	}()
	for round := 1; round <= 2; round++ {
		require.Eventually(t, func() bool { return len(clk.waits()) == round }, 10*time.Second, time.Millisecond,
			"round %d ends in a wait on the client's clock", round)
		require.Equal(t, backoff, clk.waits()[round-1])
		require.Equal(t, int64(round), fc.members[0].calls.Load(), "member 0 once per round")
		require.Equal(t, int64(round), fc.members[1].calls.Load(), "member 1 once per round")
		select {
		case err := <-done:
			t.Fatalf("returned during the wait: %v", err)
		default:
		}
		if round == 2 {
			fc.setLeader(1) // a member that answers leads now
		}
		clk.fire <- time.Time{}
	}
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("no answer in the round after a leader answered")
	}
	require.Len(t, clk.waits(), 2, "no wait after the round that succeeded")
	require.Equal(t, fc.members[1].addr, c.Leader())
}
