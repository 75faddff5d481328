package tests

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
)

// A replica node restarts after its channels failed over to the other two: it rejoins their
// groups, and ordered transfers (to caught-up targets only) spread the leaders over the three
// nodes again, with no acknowledged message lost on the way.
func TestLeadersSpreadAgainWhenANodeComesBack(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := testcluster.Start(t)
	ctx := testutil.Context(t, 3*time.Minute)
	const channels = 60
	l := c.NewAckLedger(t, ctx, channels, "b")
	l.SendAll("first")
	leaders := func() map[uint64]int {
		out := map[uint64]int{1: 0, 2: 0, 3: 0}
		for i := range channels {
			ch, _ := c.Arbiter(1).FSM().Channel(l.Name(i))
			out[ch.Leader]++
		}
		return out
	}
	victim := uint64(2)
	require.Positive(t, leaders()[victim])
	c.Stop(testcluster.KindReplica, victim)
	l.SendAll("failed-over")
	require.Zero(t, leaders()[victim], "every channel failed over")

	c.Restart(testcluster.KindReplica, victim)
	require.Eventually(t, func() bool {
		l := leaders()
		lo, hi := channels, 0
		for _, k := range l {
			lo, hi = min(lo, k), max(hi, k)
		}
		// Each channelctl evens out its own slots' channels to within one; two of them, two.
		return hi-lo <= 2
	}, 60*time.Second, 50*time.Millisecond, "leaders never spread back over the returned node: %v", leaders())
	l.SendAll("balanced")
	l.Verify()
}

// Draining a replica node moves every leader it holds to the other replicas, by ordered
// transfers, while the channels keep taking writes.
func TestDrainingNodeGivesItsLeadersAway(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := testcluster.Start(t)
	ctx := testutil.Context(t, 2*time.Minute)
	const channels = 30
	l := c.NewAckLedger(t, ctx, channels, "d")
	ledBy := func(node uint64) int {
		n := 0
		for i := range channels {
			if ch, _ := c.Arbiter(1).FSM().Channel(l.Name(i)); ch.Leader == node {
				n++
			}
		}
		return n
	}
	l.SendAll("first")
	drained := uint64(3)
	require.Positive(t, ledBy(drained))
	cl := arbiterv1.NewArbiterServiceClient(c.Dial(c.Addr(testcluster.KindArbiter, 1)))
	_, err := cl.DrainNode(ctx, &arbiterv1.DrainNodeRequest{NodeId: drained})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return ledBy(drained) == 0 }, 60*time.Second, 50*time.Millisecond,
		"node %d still leads %d channels", drained, ledBy(drained))
	l.SendAll("drained")
	l.Verify()
}
