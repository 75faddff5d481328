package replica

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// campaignHost wins every campaign at once except for the groups in refuse.
type campaignHost struct {
	scriptedHost
	refuse map[uint64]bool
}

func (h *campaignHost) Campaigns(_ context.Context, groups []uint64) (map[uint64]error, error) {
	out := map[uint64]error{}
	for _, g := range groups {
		if h.refuse[g] {
			out[g] = fmt.Errorf("group %d: %w", g, multiraft.ErrCampaignIgnored)
		}
	}
	return out, nil
}

func (h *campaignHost) Statuses(_ context.Context, groups []uint64) (map[uint64]multiraft.Status, error) {
	out := map[uint64]multiraft.Status{}
	for _, g := range groups {
		out[g] = multiraft.Status{GroupID: g, NodeID: 1, Role: raft.StateLeader, Leader: 1, Term: 2}
	}
	return out, nil
}

// Regression (review): one group whose campaign order failed made every group after it in the
// batch report the same failure, though their orders went out and they won.
func TestCampaignAndWaitFailsOnlyTheGroupsThatFailed(t *testing.T) {
	e := NewEngine(EngineConfig{NodeID: 1, Store: raftstore.NewMemory(), Dedup: chanlog.Config{Window: time.Hour, MaxIDs: 10}})
	e.Attach(&campaignHost{refuse: map[uint64]bool{101: true}}, nil, nil)
	var specs []*replicav1.GroupSpec
	var ids []string
	for i := range 20 {
		id := fmt.Sprintf("c%d", i)
		ids = append(ids, id)
		specs = append(specs, &replicav1.GroupSpec{ChannelId: id, GroupId: uint64(100 + i),
			Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}})
	}
	for _, err := range e.Load(context.Background(), specs) {
		require.NoError(t, err)
	}
	out := e.CampaignAndWait(context.Background(), ids, time.Second)
	for i, o := range out {
		if i == 1 {
			require.ErrorIs(t, o.Err, multiraft.ErrCampaignIgnored)
			continue
		}
		require.NoError(t, o.Err, ids[i])
		require.Equal(t, replicav1.Role_ROLE_LEADER, o.Status.GetRole(), ids[i])
	}
}
