package tests

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
)

// A replica node stays dead past --replace-dead-after: each of its channels gets a new replica
// on the fourth node, recorded in the arbiter and in raft alike, so the replication factor is
// 3 again. Then a second original node dies: without the repair the channels that had both
// dead nodes would be left with one replica and no majority; with it every channel still takes
// writes and holds every acknowledged message exactly once.
func TestDeadReplicaIsReplacedAndASecondFailureLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := testcluster.Start(t, testcluster.Replicas(4), testcluster.ReplaceDeadAfter(2*time.Second))
	ctx := testutil.Context(t, 3*time.Minute)
	const channels = 40
	l := c.NewAckLedger(t, ctx, channels, "r")
	for j := range 3 {
		l.SendAll(fmt.Sprint("before-", j))
	}

	// The victim is the node holding the most replicas; the second victim, killed after the
	// repair, the node sharing the most channels with it.
	members := map[uint64]int{}
	for i := range channels {
		ch, ok := c.Arbiter(1).FSM().Channel(l.Name(i))
		require.True(t, ok)
		for _, r := range ch.Replicas {
			members[r]++
		}
	}
	victim := uint64(1)
	for n, k := range members {
		if k > members[victim] {
			victim = n
		}
	}
	shared := map[uint64]int{}
	for i := range channels {
		ch, _ := c.Arbiter(1).FSM().Channel(l.Name(i))
		if slices.Contains(ch.Replicas, victim) {
			for _, r := range ch.Replicas {
				if r != victim {
					shared[r]++
				}
			}
		}
	}
	second := uint64(0)
	for n, k := range shared {
		if second == 0 || k > shared[second] {
			second = n
		}
	}
	require.NotZero(t, second)
	require.Positive(t, shared[second], "some channel has both victims: the test would not need the repair otherwise")
	c.Stop(testcluster.KindReplica, victim)
	l.SendAll("degraded")

	// Every channel is repaired: three replicas, the victim not among them, in the arbiter and
	// in the leader's raft configuration.
	require.Eventually(t, func() bool {
		for i := range channels {
			ch, _ := c.Arbiter(1).FSM().Channel(l.Name(i))
			if len(ch.Replicas) != 3 || slices.Contains(ch.Replicas, victim) || ch.State != arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE {
				return false
			}
		}
		return true
	}, 90*time.Second, 50*time.Millisecond, "channels of dead node %d never got a new replica", victim)
	for i := range channels {
		ch, _ := c.Arbiter(1).FSM().Channel(l.Name(i))
		cl := replicav1.NewReplicaControlServiceClient(c.Dial(c.Addr(testcluster.KindReplica, ch.Leader)))
		resp, err := cl.GetGroupStatus(ctx, &replicav1.GetGroupStatusRequest{ChannelIds: []string{l.Name(i)}})
		require.NoError(t, err)
		st := resp.GetResults()[0].GetStatus()
		want := slices.Sorted(slices.Values(ch.Replicas))
		require.Equal(t, want, st.GetVoters(), "%s: raft voters match the arbiter's replica set", l.Name(i))
		require.Empty(t, st.GetLearners(), l.Name(i))
	}

	c.Stop(testcluster.KindReplica, second)
	l.SendAll("after")
	l.Verify()
}
