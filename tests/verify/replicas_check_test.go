package verify

import (
	"testing"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// The replica check passes a channel whose record, leader and replicas agree, and reports a
// next replica set left after healing, a leader whose raft voters are not the recorded set (the
// divergence a repair cut short leaves), a recorded leader that does not report the group, and
// replicas at different last seqs.
func TestJudgeChannel(t *testing.T) {
	active := arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE
	rec := func(next ...uint64) *arbiterv1.Channel {
		return &arbiterv1.Channel{ChannelId: "c", ReplicaNodeIds: []uint64{3, 1, 4}, LeaderNodeId: 1, State: active,
			NextReplicaNodeIds: next}
	}
	st := func(seq uint64, voters ...uint64) *replicav1.GroupStatus {
		return &replicav1.GroupStatus{ChannelId: "c", Loaded: true, LastSeq: seq, Voters: voters}
	}
	agree := map[uint64]*replicav1.GroupStatus{1: st(9, 1, 3, 4), 3: st(9, 1, 3, 4), 4: st(9, 4, 3, 1)}
	require.NoError(t, judgeChannel(rec(), agree))

	require.ErrorContains(t, judgeChannel(rec(1, 2, 3), agree), "left with a next replica set [1 2 3]")
	require.ErrorContains(t, judgeChannel(rec(), map[uint64]*replicav1.GroupStatus{1: st(9, 1, 2, 3), 3: st(9, 1, 3, 4), 4: st(9, 1, 3, 4)}),
		"leader 1 applies voters [1 2 3], the record names [1 3 4]")
	require.ErrorContains(t, judgeChannel(rec(), map[uint64]*replicav1.GroupStatus{3: st(9, 1, 3, 4), 4: st(9, 1, 3, 4)}),
		"recorded leader 1 did not report the group")
	require.ErrorContains(t, judgeChannel(rec(), map[uint64]*replicav1.GroupStatus{1: st(9, 1, 3, 4), 3: st(8, 1, 3, 4), 4: st(9, 1, 3, 4)}),
		"replicas at last seqs")
}

// The repair check fails repair faults whose replicas held channels of which none was
// repaired away, and nothing else.
func TestRepairsCheck(t *testing.T) {
	require.NoError(t, (&repairs{}).check(), "no repair fault")
	require.NoError(t, (&repairs{events: 2, listed: 6, moved: 1}).check())
	require.NoError(t, (&repairs{events: 1}).check(), "a repair of a replica that held no channel tests nothing, and says nothing")
	require.ErrorContains(t, (&repairs{events: 2, listed: 6}).check(), "never replaced a replica")
}
