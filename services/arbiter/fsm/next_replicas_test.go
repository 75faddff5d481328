package fsm

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// Issue 13, item 5: a repair's claim names the set raft's configuration moves to
// (next_replica_node_ids) before raft changes; the record that sets the replica set clears it,
// and so does an explicit clear. Members only in next carry no load, and the leader may be one
// of them (raft may already have elected it).
func TestCompareAndSetNextReplicas(t *testing.T) {
	f, owner := storeFixture(t) // room on 1,2,3; 4 dead, 5 alive

	r := cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1,
		NextReplicaNodeIds: []uint64{1, 2, 5}}).Results[0]
	require.True(t, r.Succeeded, r.Err)
	require.Equal(t, []uint64{1, 2, 3}, r.Channel.Replicas)
	require.Equal(t, []uint64{1, 2, 5}, r.Channel.NextReplicas)
	require.Equal(t, []uint64{1, 2, 5}, r.Proto().GetChannel().GetNextReplicaNodeIds())
	got, _ := f.Channel("room")
	require.Equal(t, []uint64{1, 2, 5}, got.NextReplicas)
	require.Equal(t, []uint64{1, 2, 5}, got.Proto().GetNextReplicaNodeIds())
	loads := map[uint64]uint64{}
	for _, n := range f.Nodes() {
		loads[n.ID] = n.Channels
	}
	require.Equal(t, uint64(0), loads[5], "a member only in next carries no load yet")

	// Changes that say nothing about replicas keep next; the leader may be a member of next
	// only (raft elected it in the configuration the record has not caught up with).
	r = cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2,
		LeaderNodeId: ptr[uint64](5), State: ptr(electing)}).Results[0]
	require.True(t, r.Succeeded, r.Err)
	require.Equal(t, []uint64{1, 2, 5}, r.Channel.NextReplicas)
	require.Equal(t, uint64(5), r.Channel.Leader)

	// The record rolls forward: the replica set is next, and next is cleared.
	r = cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 3,
		ReplicaNodeIds: []uint64{1, 2, 5}}).Results[0]
	require.True(t, r.Succeeded, r.Err)
	require.Equal(t, []uint64{1, 2, 5}, r.Channel.Replicas)
	require.Nil(t, r.Channel.NextReplicas)
	require.Empty(t, r.Proto().GetChannel().GetNextReplicaNodeIds())

	// Set again and cleared explicitly: the replica set stays.
	r = cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 4,
		NextReplicaNodeIds: []uint64{1, 2, 3}}).Results[0]
	require.True(t, r.Succeeded, r.Err)
	r = cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 5,
		ClearNextReplicas: true}).Results[0]
	require.True(t, r.Succeeded, r.Err)
	require.Equal(t, []uint64{1, 2, 5}, r.Channel.Replicas)
	require.Nil(t, r.Channel.NextReplicas)
}

// Issue 13, item 5: next replicas are checked like replicas, and the leader stays within the
// replica set or next; refusals leave no trace.
func TestCompareAndSetNextReplicasRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		setup    *arbiterv1.ChannelChange // applied first at epoch 1, when set
		change   *arbiterv1.ChannelChange
		wantText string
	}{
		"unknown node": {
			change: &arbiterv1.ChannelChange{NextReplicaNodeIds: []uint64{1, 2, 42}}, wantText: "unknown node"},
		"a channelctl": {
			change: &arbiterv1.ChannelChange{NextReplicaNodeIds: []uint64{1, 2, 100}}, wantText: "not a replica"},
		"twice": {
			change: &arbiterv1.ChannelChange{NextReplicaNodeIds: []uint64{1, 2, 2}}, wantText: "listed twice"},
		"a dead newcomer": {
			change: &arbiterv1.ChannelChange{NextReplicaNodeIds: []uint64{1, 2, 4}}, wantText: "cannot take channels"},
		"set and cleared": {
			change: &arbiterv1.ChannelChange{NextReplicaNodeIds: []uint64{1, 2, 5}, ClearNextReplicas: true}, wantText: "both set and cleared"},
		"with the replica set": {
			change: &arbiterv1.ChannelChange{NextReplicaNodeIds: []uint64{1, 2, 5}, ReplicaNodeIds: []uint64{1, 2, 5}}, wantText: "together"},
		"leader outside both sets": {
			change: &arbiterv1.ChannelChange{NextReplicaNodeIds: []uint64{1, 2, 5}, LeaderNodeId: ptr[uint64](4)}, wantText: "not in the replica set"},
		"clearing next strands its leader": {
			setup:  &arbiterv1.ChannelChange{NextReplicaNodeIds: []uint64{1, 2, 5}, LeaderNodeId: ptr[uint64](5)},
			change: &arbiterv1.ChannelChange{ClearNextReplicas: true}, wantText: "not in the replica set"},
		"a replica set without the next-only leader": {
			setup:  &arbiterv1.ChannelChange{NextReplicaNodeIds: []uint64{1, 2, 5}, LeaderNodeId: ptr[uint64](5)},
			change: &arbiterv1.ChannelChange{ReplicaNodeIds: []uint64{1, 2, 3}}, wantText: "not in the replica set"},
	} {
		t.Run(name, func(t *testing.T) {
			f, owner := storeFixture(t)
			epoch := uint64(1)
			if tc.setup != nil {
				tc.setup.ChannelId, tc.setup.ExpectedEpoch = "room", 1
				r := cas(t, f, owner, tc.setup).Results[0]
				require.True(t, r.Succeeded, r.Err)
				epoch = 2
			}
			tc.change.ChannelId, tc.change.ExpectedEpoch = "room", epoch
			requireUnchanged(t, f, func() {
				r := cas(t, f, owner, tc.change).Results[0]
				require.False(t, r.Succeeded)
				require.ErrorIs(t, r.Err, ErrInvalidChange)
				require.ErrorContains(t, r.Err, tc.wantText)
			})
		})
	}
	t.Run("a member of the current next may be dead", func(t *testing.T) {
		f, owner := storeFixture(t)
		r := cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1,
			NextReplicaNodeIds: []uint64{1, 2, 5}}).Results[0]
		require.True(t, r.Succeeded, r.Err)
		setState(t, f, 5, dead)
		r = cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2,
			NextReplicaNodeIds: []uint64{5, 2, 1}}).Results[0]
		require.True(t, r.Succeeded, r.Err)
		// and the record rolls forward to it: raft may count 5 already.
		r = cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 3,
			ReplicaNodeIds: []uint64{1, 2, 5}}).Results[0]
		require.True(t, r.Succeeded, r.Err)
		require.Equal(t, []uint64{1, 2, 5}, r.Channel.Replicas)
	})
	t.Run("a dead node outside next is still refused as a new replica", func(t *testing.T) {
		f, owner := storeFixture(t)
		r := cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1,
			NextReplicaNodeIds: []uint64{1, 2, 5}}).Results[0]
		require.True(t, r.Succeeded, r.Err)
		requireUnchanged(t, f, func() {
			r := cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2,
				ReplicaNodeIds: []uint64{1, 2, 4}}).Results[0]
			require.ErrorIs(t, r.Err, ErrInvalidChange)
		})
	})
}

// Issue 13, item 5: next replicas survive a snapshot, and a snapshot naming bad ones is
// refused.
func TestSnapshotKeepsNextReplicas(t *testing.T) {
	f, owner := storeFixture(t)
	r := cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1,
		NextReplicaNodeIds: []uint64{1, 2, 5}, LeaderNodeId: ptr[uint64](5)}).Results[0]
	require.True(t, r.Succeeded, r.Err)
	snap, err := f.Snapshot()
	require.NoError(t, err)
	g := New()
	require.NoError(t, g.Restore(snap))
	require.Equal(t, dumpOf(f), dumpOf(g))
	room, _ := g.Channel("room")
	require.Equal(t, []uint64{1, 2, 5}, room.NextReplicas)
	require.Equal(t, uint64(5), room.Leader)

	for name, mut := range map[string]func(c *arbiterv1.Channel){
		"unknown next replica":      func(c *arbiterv1.Channel) { c.NextReplicaNodeIds = []uint64{1, 2, 42} },
		"channelctl as next":        func(c *arbiterv1.Channel) { c.NextReplicaNodeIds = []uint64{1, 2, 100} },
		"next replica twice":        func(c *arbiterv1.Channel) { c.NextReplicaNodeIds = []uint64{1, 5, 5} },
		"leader outside both sets":  func(c *arbiterv1.Channel) { c.NextReplicaNodeIds = []uint64{1, 2, 4} },
		"next-only leader, no next": func(c *arbiterv1.Channel) { c.NextReplicaNodeIds = nil },
	} {
		t.Run(name, func(t *testing.T) {
			s := &arbiterv1.Snapshot{}
			require.NoError(t, proto.Unmarshal(snap, s))
			for _, c := range s.Channels {
				if c.GetChannelId() == "room" {
					mut(c)
				}
			}
			bad, err := proto.Marshal(s)
			require.NoError(t, err)
			require.ErrorIs(t, New().Restore(bad), ErrInvalidSnapshot)
		})
	}
}
