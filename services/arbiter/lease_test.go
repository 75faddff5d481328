package arbiter

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/pkg/nodelease"
)

// fakeReplica heartbeats like a replica and reports which peers it can reach.
type fakeReplica struct {
	id      uint64
	keeper  *nodelease.Keeper
	cancel  context.CancelFunc
	done    chan struct{}
	reaches map[uint64]*atomic.Bool
}

func startFakeReplicas(t *testing.T, m *members, ids ...uint64) map[uint64]*fakeReplica {
	t.Helper()
	c := m.client()
	out := map[uint64]*fakeReplica{}
	for _, id := range ids {
		r := &fakeReplica{id: id, done: make(chan struct{}), reaches: map[uint64]*atomic.Bool{}}
		for _, p := range ids {
			if p != id {
				r.reaches[p] = &atomic.Bool{}
				r.reaches[p].Store(true)
			}
		}
		r.keeper = nodelease.New(nodelease.Config{Arbiter: c, NodeID: id, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA,
			Address: "replica:" + string(rune('0'+id)),
			Peers: func() []*arbiterv1.PeerReachability {
				var out []*arbiterv1.PeerReachability
				for p, ok := range r.reaches {
					out = append(out, &arbiterv1.PeerReachability{NodeId: p, Reachable: ok.Load()})
				}
				return out
			}})
		ctx, cancel := context.WithCancel(context.Background())
		r.cancel = cancel
		go func() {
			defer close(r.done)
			_ = r.keeper.Run(ctx)
		}()
		<-r.keeper.Registered()
		out[id] = r
	}
	t.Cleanup(func() {
		for _, r := range out {
			r.cancel()
			<-r.done
		}
	})
	// A channel on all three makes them peers of each other.
	_, err := c.CreateChannel(tctx(t), &arbiterv1.CreateChannelRequest{ChannelId: "shared", ReplicationFactor: uint32(len(ids))})
	require.NoError(t, err)
	return out
}

func nodeState(t *testing.T, m *members, id uint64) arbiterv1.NodeState {
	t.Helper()
	n, ok := m.svcs[m.leader()].FSM().Node(id)
	require.True(t, ok)
	return n.Liveness
}

func TestCrashedNodeIsDeclaredDeadAfterTTLPlusMarginNotBefore(t *testing.T) {
	m := startMembers(t, 1)
	m.leader()
	rs := startFakeReplicas(t, m, 1, 2, 3)
	cfg := m.svcs[1].cfg.Liveness

	rs[3].cancel() // node 3 stops heartbeating; its peers lose it too
	<-rs[3].done
	rs[1].reaches[3].Store(false)
	rs[2].reaches[3].Store(false)

	require.Eventually(t, func() bool { return nodeState(t, m, 3) == arbiterv1.NodeState_NODE_STATE_DEAD },
		10*time.Second, 5*time.Millisecond)
	// Judged on the leader's own records, not on when this test looked: the decision time
	// against the lease its last heartbeat gave (a wall-clock reading here would depend on how
	// long before the cancel that heartbeat was, and on scheduling).
	leader := m.svcs[m.leader()]
	n, ok := leader.FSM().Node(3)
	require.True(t, ok)
	expiry, ok := leader.tracker.Lease(3)
	require.True(t, ok)
	require.False(t, n.StateTime.Before(expiry.Add(cfg.DriftMargin)),
		"declared dead at %v, before the lease (until %v) plus the margin %v", n.StateTime, expiry, cfg.DriftMargin)
	require.Equal(t, arbiterv1.NodeState_NODE_STATE_ALIVE, nodeState(t, m, 1))
	require.Equal(t, arbiterv1.NodeState_NODE_STATE_ALIVE, nodeState(t, m, 2))
}

func TestNodeCutOffFromTheArbiterOnlyIsNeverDeclaredDead(t *testing.T) {
	m := startMembers(t, 1)
	m.leader()
	rs := startFakeReplicas(t, m, 1, 2, 3)
	cfg := m.svcs[1].cfg.Liveness
	rs[2].cancel() // the link to the arbiter breaks; peers still reach node 2
	<-rs[2].done
	require.Eventually(t, func() bool { return nodeState(t, m, 2) == arbiterv1.NodeState_NODE_STATE_SUSPECT },
		10*time.Second, 5*time.Millisecond)
	// Several times TTL + margin later it is still only suspect.
	deadline := time.Now().Add(4 * (cfg.LeaseTTL + cfg.DriftMargin))
	for time.Now().Before(deadline) {
		require.NotEqual(t, arbiterv1.NodeState_NODE_STATE_DEAD, nodeState(t, m, 2))
		time.Sleep(20 * time.Millisecond)
	}
}
