package arbiter

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// Issue 12, item 3: a registration's store id reaches the replicated state, channels record
// their replicas' stores, and compare-and-sets change them; all of it survives a restart.
func TestStoreIDsThroughTheAPI(t *testing.T) {
	m := startMembers(t, 1, longLeases)
	m.leader()
	c := m.client()
	for id := uint64(1); id <= 4; id++ {
		resp, err := c.RegisterNode(tctx(t), &arbiterv1.RegisterNodeRequest{NodeId: id, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA,
			Address: fmt.Sprintf("replica-%d:7600", id), StoreId: 0x1000 * id})
		require.NoError(t, err)
		require.Equal(t, 0x1000*id, resp.GetNode().GetStoreId())
	}
	_, err := c.RegisterNode(tctx(t), &arbiterv1.RegisterNodeRequest{NodeId: 9, Role: arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL, Address: "ctl:7500"})
	require.NoError(t, err)

	created, err := c.CreateChannel(tctx(t), &arbiterv1.CreateChannelRequest{ChannelId: "room", ReplicationFactor: 3})
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2, 3}, created.GetChannel().GetReplicaNodeIds())
	require.Equal(t, map[uint64]uint64{1: 0x1000, 2: 0x2000, 3: 0x3000}, created.GetChannel().GetReplicaStoreIds())

	// Node 3's disk was replaced: it registers with a new store, and a repair swaps it for 4.
	resp, err := c.RegisterNode(tctx(t), &arbiterv1.RegisterNodeRequest{NodeId: 3, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA,
		Address: "replica-3:7600", StoreId: 0x3333})
	require.NoError(t, err)
	require.Equal(t, uint64(0x3333), resp.GetNode().GetStoreId())
	cas, err := c.CompareAndSetChannels(tctx(t), &arbiterv1.CompareAndSetChannelsRequest{NodeId: 9, Changes: []*arbiterv1.ChannelChange{{
		ChannelId: "room", ExpectedEpoch: created.GetChannel().GetEpoch(),
		ReplicaNodeIds: []uint64{1, 2, 4}, ReplicaStoreIds: map[uint64]uint64{4: 0x4000},
	}}})
	require.NoError(t, err)
	require.True(t, cas.GetResults()[0].GetSucceeded(), cas.GetResults()[0].GetError())
	want := map[uint64]uint64{1: 0x1000, 2: 0x2000, 4: 0x4000}
	require.Equal(t, want, cas.GetResults()[0].GetChannel().GetReplicaStoreIds())

	check := func() {
		t.Helper()
		got, err := c.GetChannel(tctx(t), &arbiterv1.GetChannelRequest{ChannelId: "room"})
		require.NoError(t, err)
		require.Equal(t, want, got.GetChannel().GetReplicaStoreIds())
		st, err := c.GetClusterStatus(tctx(t), &arbiterv1.GetClusterStatusRequest{})
		require.NoError(t, err)
		stores := map[uint64]uint64{}
		for _, n := range st.GetNodes() {
			stores[n.GetNodeId()] = n.GetStoreId()
		}
		require.Equal(t, map[uint64]uint64{1: 0x1000, 2: 0x2000, 3: 0x3333, 4: 0x4000, 9: 0}, stores)
	}
	check()
	rev := m.svcs[1].FSM().Revision()
	m.stop(1)
	m.start(1)
	m.leader()
	require.Eventually(t, func() bool { return m.svcs[1].FSM().Revision() >= rev }, 15*time.Second, 5*time.Millisecond)
	check()
}
