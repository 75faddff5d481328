package replica

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc/codes"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// orderHost records the orders that reach raft.
type orderHost struct {
	scriptedHost
	mu        sync.Mutex
	campaigns []uint64
	transfers []uint64
	unloads   []uint64
}

func (h *orderHost) Campaigns(_ context.Context, groups []uint64) (map[uint64]error, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.campaigns = append(h.campaigns, groups...)
	return map[uint64]error{}, nil
}

// Statuses shows a group led here once it was ordered to campaign, a follower before.
func (h *orderHost) Statuses(_ context.Context, groups []uint64) (map[uint64]multiraft.Status, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[uint64]multiraft.Status{}
	for _, g := range groups {
		out[g], _ = h.Status(context.Background(), g)
		if !slices.Contains(h.campaigns, g) {
			out[g] = multiraft.Status{GroupID: g, NodeID: 1, Role: raft.StateFollower}
		}
	}
	return out, nil
}

func (h *orderHost) TransferLeader(_ context.Context, group, _ uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.transfers = append(h.transfers, group)
	return nil
}

func (h *orderHost) UnloadGroup(_ context.Context, group uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unloads = append(h.unloads, group)
	return nil
}

// Issue 13, item 3: every order to a replica carries the channel's epoch, and one made under
// an older epoch than the replica has seen is refused before it reaches raft. Campaign orders
// carried an epoch that was ignored, and transfers and unloads carried none: a late campaign
// from a channelctl with a stale view could depose the leader recorded since.
func TestOrdersUnderAnOlderEpochAreRefused(t *testing.T) {
	store := raftstore.NewMemory()
	e := NewEngine(EngineConfig{NodeID: 1, Store: store, Dedup: chanlog.Config{Window: time.Hour, MaxIDs: 1000}})
	host := &orderHost{}
	e.Attach(host, nil, nil)
	h := &handler{e: e}
	ctx := context.Background()
	load := func(epoch uint64) {
		errs := e.Load(ctx, []*replicav1.GroupSpec{{ChannelId: "ch", GroupId: 7, Epoch: epoch,
			Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}}})
		require.NoError(t, errs[0])
	}
	load(5)
	stale := func(ge *replicav1.GroupError) {
		t.Helper()
		require.NotNil(t, ge)
		require.Equal(t, int32(codes.FailedPrecondition), ge.GetCode(), ge.GetMessage())
		require.Contains(t, ge.GetMessage(), "older epoch")
	}

	camp, err := h.Campaign(ctx, &replicav1.CampaignRequest{Orders: []*replicav1.CampaignOrder{{ChannelId: "ch", Epoch: 4}}})
	require.NoError(t, err)
	stale(camp.GetResults()[0].GetError())
	require.False(t, camp.GetResults()[0].GetLeader())
	tr, err := h.TransferLeader(ctx, &replicav1.TransferLeaderRequest{Transfers: []*replicav1.Transfer{{ChannelId: "ch", TargetNodeId: 2, Epoch: 3}}})
	require.NoError(t, err)
	stale(tr.GetResults()[0].GetError())
	un, err := h.UnloadGroups(ctx, &replicav1.UnloadGroupsRequest{ChannelIds: []string{"ch"}, Epochs: []uint64{4}})
	require.NoError(t, err)
	stale(un.GetResults()[0].GetError())
	host.mu.Lock()
	require.Empty(t, host.campaigns, "a stale campaign reached raft")
	require.Empty(t, host.transfers, "a stale transfer reached raft")
	require.Empty(t, host.unloads, "a stale unload reached raft")
	host.mu.Unlock()

	// An order under the current epoch goes through, and a newer one raises the fence.
	_, err = h.Campaign(ctx, &replicav1.CampaignRequest{Orders: []*replicav1.CampaignOrder{{ChannelId: "ch", Epoch: 6}}})
	require.NoError(t, err)
	host.mu.Lock()
	require.Equal(t, []uint64{7}, host.campaigns)
	host.mu.Unlock()
	require.ErrorIs(t, e.Fence("ch", 5), ErrStaleOrder)

	// After an unload, a reload under an older epoch (a channelctl with a stale view) does
	// not lower the fence the previous load stored.
	require.NoError(t, e.Fence("ch", 8))
	un, err = h.UnloadGroups(ctx, &replicav1.UnloadGroupsRequest{ChannelIds: []string{"ch"}, Epochs: []uint64{8}})
	require.NoError(t, err)
	require.Nil(t, un.GetResults()[0].GetError())
	load(9)
	un, err = h.UnloadGroups(ctx, &replicav1.UnloadGroupsRequest{ChannelIds: []string{"ch"}, Epochs: []uint64{9}})
	require.NoError(t, err)
	require.Nil(t, un.GetResults()[0].GetError())
	load(2)
	require.ErrorIs(t, e.Fence("ch", 8), ErrStaleOrder, "the fence came back from the stored spec")
}
