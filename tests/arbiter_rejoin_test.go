package tests

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
)

// Issue 12, item 3, for the arbiter: kill -9 of an arbiter member, its data directory wiped,
// and a restart. The member comes back with a new store, rejoins the metadata group on
// probation, is re-added by the leader as a learner with that store, catches up and is a
// voter again (only then is it ready); it then holds the whole metadata, and with the old
// leader killed too, it and the third member elect a leader and the cluster goes on, losing
// no acknowledged message. Before, the member bootstrapped the group as if the cluster were
// new: the leader's first heartbeat failed its group (commit index beyond its log) and it
// never became ready.
func TestWipedArbiterMemberRejoins(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a cluster of processes")
	}
	c := testcluster.Start(t, testcluster.Processes(), testcluster.Arbiters(3), testcluster.Channelctls(1))
	ctx := testutil.Context(t, 5*time.Minute)
	l := c.NewAckLedger(t, ctx, 6, "arb")
	l.SendAll("before")

	leader := arbiterLeader(t, ctx, c, 0)
	victim := uint64(1)
	if victim == leader {
		victim = 2
	}
	before := memberState(t, ctx, c, victim)
	c.Kill(testcluster.KindArbiter, victim)
	require.NoError(t, os.RemoveAll(c.Dir(testcluster.KindArbiter, victim)))
	l.SendAll("away")
	c.Restart(testcluster.KindArbiter, victim) // waits for /readyz: a voter again, off probation

	after := memberState(t, ctx, c, victim)
	require.NotEqual(t, before.GetStoreId(), after.GetStoreId(), "a wiped directory makes a new store")
	require.True(t, after.GetLoaded())
	require.False(t, after.GetOnProbation())
	testutil.Eventually(t, time.Minute, func() error {
		want, err := clusterStatus(ctx, c, leader)
		if err != nil {
			return err
		}
		got, err := clusterStatus(ctx, c, victim)
		if err != nil {
			return err
		}
		if got.GetRevision() != want.GetRevision() || got.GetChannels() != want.GetChannels() || len(got.GetNodes()) != len(want.GetNodes()) {
			return fmt.Errorf("member %d at revision %d (%d channels, %d nodes), leader %d at %d (%d, %d)", victim, got.GetRevision(),
				got.GetChannels(), len(got.GetNodes()), leader, want.GetRevision(), want.GetChannels(), len(want.GetNodes()))
		}
		return nil
	})

	// The old leader goes too: the rejoined member's vote is needed to elect the next one.
	c.Kill(testcluster.KindArbiter, leader)
	next := arbiterLeader(t, ctx, c, leader)
	t.Logf("member %d rejoined; leader %d killed; member %d leads", victim, leader, next)
	l.SendAll("after")
	for i := range l.Len() {
		arb := arbiterv1.NewArbiterServiceClient(c.Dial(c.Addr(testcluster.KindArbiter, victim)))
		_, err := arb.GetChannel(ctx, &arbiterv1.GetChannelRequest{ChannelId: l.Name(i)})
		require.NoError(t, err, "member %d holds %s", victim, l.Name(i))
	}
	l.Verify()
}

// arbiterLeader waits until a running member other than not names a leader that is running
// and returns it.
func arbiterLeader(t *testing.T, ctx context.Context, c *testcluster.Cluster, not uint64) uint64 {
	t.Helper()
	var leader uint64
	testutil.Eventually(t, time.Minute, func() error {
		for _, id := range c.Running(testcluster.KindArbiter) {
			st, err := memberStateErr(ctx, c, id)
			if err == nil && st.GetLeaderId() != 0 && st.GetLeaderId() != not {
				leader = st.GetLeaderId()
				return nil
			}
		}
		return fmt.Errorf("no arbiter leader other than %d", not)
	})
	return leader
}

func memberState(t *testing.T, ctx context.Context, c *testcluster.Cluster, id uint64) *arbiterv1.GetMemberStateResponse {
	t.Helper()
	st, err := memberStateErr(ctx, c, id)
	require.NoError(t, err)
	return st
}

func memberStateErr(ctx context.Context, c *testcluster.Cluster, id uint64) (*arbiterv1.GetMemberStateResponse, error) {
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	arb := arbiterv1.NewArbiterServiceClient(c.Dial(c.Addr(testcluster.KindArbiter, id)))
	return arb.GetMemberState(actx, &arbiterv1.GetMemberStateRequest{})
}

func clusterStatus(ctx context.Context, c *testcluster.Cluster, id uint64) (*arbiterv1.GetClusterStatusResponse, error) {
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	arb := arbiterv1.NewArbiterServiceClient(c.Dial(c.Addr(testcluster.KindArbiter, id)))
	return arb.GetClusterStatus(actx, &arbiterv1.GetClusterStatusRequest{})
}
