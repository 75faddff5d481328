package replica

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// The control plane's timed waits (campaigns, transfers) run on the engine's clock.

// stalledHost elects nobody: after a campaign order the group stays in role with no leader,
// and a transfer never completes (this replica leads, handing over to transferee).
type stalledHost struct {
	scriptedHost
	role       raft.StateType
	transferee uint64

	mu     sync.Mutex
	orders int
}

func (h *stalledHost) Campaigns(_ context.Context, groups []uint64) (map[uint64]error, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.orders++
	return map[uint64]error{}, nil
}

func (h *stalledHost) ordered() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.orders
}

func (h *stalledHost) Statuses(_ context.Context, groups []uint64) (map[uint64]multiraft.Status, error) {
	out := map[uint64]multiraft.Status{}
	for _, g := range groups {
		out[g] = multiraft.Status{GroupID: g, NodeID: 1, Role: h.role, Term: 1}
	}
	return out, nil
}

func (h *stalledHost) Status(_ context.Context, g uint64) (multiraft.Status, error) {
	return multiraft.Status{GroupID: g, NodeID: 1, Role: raft.StateLeader, Leader: 1, Term: 1, LeadTransferee: h.transferee}, nil
}

func clockedEngine(t *testing.T, clk *fakeClock, h Proposer) *Engine {
	t.Helper()
	e := NewEngine(EngineConfig{NodeID: 1, Store: raftstore.NewMemory(), Dedup: chanlog.Config{Window: time.Hour, MaxIDs: 10},
		Now: clk.Now, After: clk.After})
	e.Attach(h, nil, nil)
	for _, err := range e.Load(context.Background(), []*replicav1.GroupSpec{
		{ChannelId: "c", GroupId: 100, Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}},
	}) {
		require.NoError(t, err)
	}
	return e
}

// A campaign that stalls with no leader is ordered again on the engine's clock: a replica
// that fell back to follower (its pre-vote refused or lost) at the first look 50 ms after the
// last order, one still (pre-)campaigning only after 300 ms, so that votes on their way are
// not cut off by a new term; the wait ends at its bound with the last status.
func TestCampaignReordersAStalledCampaignOnTheEngineClock(t *testing.T) {
	const wait = 700 * time.Millisecond
	for _, tc := range []struct {
		role  raft.StateType
		again time.Duration
	}{
		{raft.StateFollower, 50 * time.Millisecond},
		{raft.StatePreCandidate, 300 * time.Millisecond},
		{raft.StateCandidate, 300 * time.Millisecond},
	} {
		t.Run(tc.role.String(), func(t *testing.T) {
			clk := newFakeClock()
			h := &stalledHost{role: tc.role}
			e := clockedEngine(t, clk, h)
			start := clk.Now()
			done := make(chan struct{})
			var out []CampaignOutcome
			go func() {
				defer close(done)
				out = e.CampaignAndWait(context.Background(), []string{"c"}, wait)
			}()

			// After each look at the group (the engine then waits on the clock, or returned).
			seen, last := 0, start
			looked := func() {
				now := clk.Now()
				if n := h.ordered(); n > seen {
					require.Equal(t, seen+1, n, "one order per look at %v", now.Sub(start))
					if seen > 0 {
						require.GreaterOrEqual(t, now.Sub(last), tc.again, "ordered again too soon")
					}
					seen, last = n, now
				} else {
					require.Less(t, now.Sub(last), tc.again, "not ordered again %v after the last order", now.Sub(last))
				}
			}
			for !clk.blocked(t, done) {
				looked()
				clk.next()
			}
			looked()
			require.GreaterOrEqual(t, clk.Now().Sub(start), wait, "the wait ended before its bound")
			require.Equal(t, int(wait/tc.again)+1, seen, "orders in %v", wait)
			require.NoError(t, out[0].Err)
			require.NotNil(t, out[0].Status, "the last status is reported")
			require.Equal(t, uint64(0), out[0].Status.GetLeaderNodeId())
		})
	}
}

// A transfer that raft keeps running (the target never takes over) fails once the wait has
// passed on the engine's clock, and not before.
func TestTransferStillRunningFailsAtTheWaitOnTheEngineClock(t *testing.T) {
	const wait = 100 * time.Millisecond
	clk := newFakeClock()
	e := clockedEngine(t, clk, &stalledHost{transferee: 2})
	start := clk.Now()
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = e.TransferLeaderAndWait(context.Background(), "c", 2, wait)
	}()
	for !clk.blocked(t, done) {
		require.LessOrEqual(t, clk.Now().Sub(start), wait, "still waiting past the bound")
		clk.next()
	}
	require.Greater(t, clk.Now().Sub(start), wait)
	require.ErrorContains(t, err, "still running after 100ms")
}
