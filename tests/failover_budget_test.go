package tests

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
)

// A dead node's channels are re-elected in slices of at most FailoverBudget per channelctl: the
// arbiter never records more of them electing at once than the two channelctls' budgets allow,
// and every one of them still gets a new leader and keeps its data.
func TestFailoverIsSlicedByTheBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	const budget, channels = 10, 150
	c := testcluster.Start(t, testcluster.FailoverBudget(budget))
	ctx := testutil.Context(t, 3*time.Minute)
	l := c.NewAckLedger(t, ctx, channels, "s")
	l.SendAll("first")
	led := map[uint64]int{}
	for i := range channels {
		ch, _ := c.Arbiter(1).FSM().Channel(l.Name(i))
		led[ch.Leader]++
	}
	victim := uint64(1)
	for n, k := range led {
		if k > led[victim] {
			victim = n
		}
	}
	require.Greater(t, led[victim], 4*budget, "enough channels to need several slices")

	c.Stop(testcluster.KindReplica, victim)
	most := 0
	require.Eventually(t, func() bool {
		electing, moved := 0, 0
		for i := range channels {
			ch, _ := c.Arbiter(1).FSM().Channel(l.Name(i))
			switch {
			case ch.State == arbiterv1.ChannelState_CHANNEL_STATE_ELECTING:
				electing++
			case ch.State == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE && ch.Leader != victim:
				moved++
			}
		}
		most = max(most, electing)
		return moved == channels
	}, 2*time.Minute, time.Millisecond, "channels of node %d never all failed over", victim)
	require.LessOrEqual(t, most, 2*budget, "at most a budget of channels electing per channelctl")
	t.Logf("at most %d of %d channels electing at once", most, led[victim])
	l.SendAll("after")
	l.Verify()
}
