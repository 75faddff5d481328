package tests

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
)

// Issue 12, "done when": kill -9 of one replica under load, its data directory wiped, and a
// restart. The node comes back with a new store; every channel it held takes it back as a
// learner, catches it up and promotes it (recording the new store), and no acknowledged
// message is lost or duplicated. Before store identity, the node loaded every group as a
// voter with an empty log: raft panicked on the leader's first heartbeat and the node's
// empty votes could have elected a lagging replica.
func TestWipedReplicaRejoinsAsLearnerAndLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a cluster of processes")
	}
	c := testcluster.Start(t, testcluster.Processes(), testcluster.Channelctls(1))
	ctx := testutil.Context(t, 5*time.Minute)
	const channels = 12
	l := c.NewAckLedger(t, ctx, channels, "wipe")
	l.SendAll("before")

	arb := arbiterv1.NewArbiterServiceClient(c.Dial(c.Addr(testcluster.KindArbiter, 1)))
	const victim = 3
	oldStore := nodeStore(t, ctx, arb, victim)
	require.NotZero(t, oldStore, "replica %d registered no store id", victim)
	for i := range channels {
		ch := channelRecord(t, ctx, arb, l.Name(i))
		require.Equal(t, oldStore, ch.GetReplicaStoreIds()[victim], "%s records the store of node %d", l.Name(i), victim)
	}

	// Writers keep going through the whole fault; each message keeps its id until acked (a
	// writer is stopped between messages, never in the middle of one, which would leave a
	// message committed but not acknowledged).
	var (
		stop  atomic.Bool
		wg    sync.WaitGroup
		mu    sync.Mutex
		acked = make([]map[uint64]string, channels)
		errs  []error
	)
	for i := range acked {
		acked[i] = map[uint64]string{}
	}
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				i := (2*n + w) % channels
				id := fmt.Sprintf("%s-load-%d-%d", l.Name(i), w, n)
				seq, err := c.Send(ctx, l.Name(i), id)
				mu.Lock()
				if err == nil {
					acked[i][seq] = id
				} else {
					errs = append(errs, err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}

	total := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range acked {
			n += len(a)
		}
		return n
	}
	c.Kill(testcluster.KindReplica, victim)
	require.NoError(t, os.RemoveAll(c.Dir(testcluster.KindReplica, victim)))
	// Entries the victim never held in any store, which it must catch up on.
	atKill := total()
	testutil.Eventually(t, time.Minute, func() error {
		if n := total(); n < atKill+100 {
			return fmt.Errorf("%d messages acknowledged since the kill", n-atKill)
		}
		return nil
	})
	c.Restart(testcluster.KindReplica, victim)

	var newStore uint64
	testutil.Eventually(t, 3*time.Minute, func() error {
		newStore = nodeStore(t, ctx, arb, victim)
		if newStore == oldStore {
			return fmt.Errorf("node %d still registered with its old store", victim)
		}
		return nil
	})
	// Every channel records the new store, and its leader's raft configuration has the node
	// back as a voter, no learner left.
	testutil.Eventually(t, 3*time.Minute, func() error {
		for i := range channels {
			ch := channelRecord(t, ctx, arb, l.Name(i))
			if got := ch.GetReplicaStoreIds()[victim]; got != newStore {
				return fmt.Errorf("%s records store %x for node %d, want %x", l.Name(i), got, victim, newStore)
			}
			st, err := groupStatus(ctx, c, ch.GetLeaderNodeId(), l.Name(i))
			if err != nil {
				return err
			}
			if !slices.Contains(st.GetVoters(), victim) || len(st.GetLearners()) > 0 {
				return fmt.Errorf("%s: leader %d has voters %v, learners %v", l.Name(i), ch.GetLeaderNodeId(), st.GetVoters(), st.GetLearners())
			}
		}
		return nil
	})
	stop.Store(true)
	wg.Wait()
	require.Empty(t, errs, "sends failed while the cluster had a majority")
	t.Logf("%d messages acknowledged under load", total())

	l.SendAll("after")
	for i := range channels {
		mu.Lock()
		for seq, id := range acked[i] {
			l.Record(i, seq, id)
		}
		mu.Unlock()
	}
	l.Verify()
	// The rejoined node holds each channel's whole log, not just a place in the configuration.
	for i := range channels {
		ch := channelRecord(t, ctx, arb, l.Name(i))
		lead, err := groupStatus(ctx, c, ch.GetLeaderNodeId(), l.Name(i))
		require.NoError(t, err)
		testutil.Eventually(t, time.Minute, func() error {
			st, err := groupStatus(ctx, c, victim, l.Name(i))
			if err != nil {
				return err
			}
			if st.GetStoreId() != newStore || st.GetLastSeq() < lead.GetLastSeq() {
				return fmt.Errorf("%s on node %d: store %x, last seq %d; leader at %d", l.Name(i), victim, st.GetStoreId(), st.GetLastSeq(), lead.GetLastSeq())
			}
			return nil
		})
	}
}

func nodeStore(t *testing.T, ctx context.Context, arb arbiterv1.ArbiterServiceClient, node uint64) uint64 {
	t.Helper()
	resp, err := arb.GetClusterStatus(ctx, &arbiterv1.GetClusterStatusRequest{})
	require.NoError(t, err)
	for _, n := range resp.GetNodes() {
		if n.GetNodeId() == node && n.GetRole() == arbiterv1.NodeRole_NODE_ROLE_REPLICA {
			return n.GetStoreId()
		}
	}
	return 0
}

func channelRecord(t *testing.T, ctx context.Context, arb arbiterv1.ArbiterServiceClient, id string) *arbiterv1.Channel {
	t.Helper()
	resp, err := arb.GetChannel(ctx, &arbiterv1.GetChannelRequest{ChannelId: id})
	require.NoError(t, err)
	return resp.GetChannel()
}

func groupStatus(ctx context.Context, c *testcluster.Cluster, node uint64, channel string) (*replicav1.GroupStatus, error) {
	if node == 0 {
		return nil, fmt.Errorf("%s has no leader recorded", channel)
	}
	cl := replicav1.NewReplicaControlServiceClient(c.Dial(c.Addr(testcluster.KindReplica, node)))
	resp, err := cl.GetGroupStatus(ctx, &replicav1.GetGroupStatusRequest{ChannelIds: []string{channel}})
	if err != nil {
		return nil, err
	}
	r := resp.GetResults()[0]
	if r.GetError() != nil {
		return nil, fmt.Errorf("%s on node %d: %s", channel, node, r.GetError().GetMessage())
	}
	return r.GetStatus(), nil
}
