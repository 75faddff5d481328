package tests

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// A replica node restarts after its channels failed over to the other two: it rejoins their
// groups, and ordered transfers (to caught-up targets only) spread the leaders over the three
// nodes again, with no acknowledged message lost on the way.
func TestLeadersSpreadAgainWhenANodeComesBack(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := startCluster(t, time.Hour)
	ctx := testCtx(t, 3*time.Minute)
	const channels = 60
	l := newAckLedger(t, c, ctx, channels, "b")
	l.sendAll("first")
	leaders := func() map[uint64]int {
		out := map[uint64]int{1: 0, 2: 0, 3: 0}
		for i := range channels {
			ch, _ := c.arbiter.FSM().Channel(l.name(i))
			out[ch.Leader]++
		}
		return out
	}
	victim := uint64(2)
	require.Positive(t, leaders()[victim])
	c.stopReplica(victim)
	l.sendAll("failed-over")
	require.Zero(t, leaders()[victim], "every channel failed over")

	c.startReplica(victim)
	require.Eventually(t, func() bool {
		l := leaders()
		lo, hi := channels, 0
		for _, k := range l {
			lo, hi = min(lo, k), max(hi, k)
		}
		// Each channelctl evens out its own slots' channels to within one; two of them, two.
		return hi-lo <= 2
	}, 60*time.Second, 50*time.Millisecond, "leaders never spread back over the returned node: %v", leaders())
	l.sendAll("balanced")
	l.verify()
}

// Draining a replica node moves every leader it holds to the other replicas, by ordered
// transfers, while the channels keep taking writes.
func TestDrainingNodeGivesItsLeadersAway(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := startCluster(t, time.Hour)
	ctx := testCtx(t, 2*time.Minute)
	const channels = 30
	l := newAckLedger(t, c, ctx, channels, "d")
	ledBy := func(node uint64) int {
		n := 0
		for i := range channels {
			if ch, _ := c.arbiter.FSM().Channel(l.name(i)); ch.Leader == node {
				n++
			}
		}
		return n
	}
	l.sendAll("first")
	drained := uint64(3)
	require.Positive(t, ledBy(drained))
	cl := arbiterv1.NewArbiterServiceClient(c.dial(c.arbiterAddr))
	_, err := cl.DrainNode(ctx, &arbiterv1.DrainNodeRequest{NodeId: drained})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return ledBy(drained) == 0 }, 60*time.Second, 50*time.Millisecond,
		"node %d still leads %d channels", drained, ledBy(drained))
	l.sendAll("drained")
	l.verify()
}
