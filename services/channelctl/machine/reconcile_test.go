package machine

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// Issue 13, item 5's leftovers: a joint record (replicas 1, 2, 3; next 1, 2, 4) is reconciled
// with raft before any work that would act on one of its sets, under a fence (reconcile.go).

// expectBusy steps ev, which must be refused as busy while starting the reconciliation.
func expectBusy(t *testing.T, m *Machine, ev Event) {
	t.Helper()
	acts, err := m.Step(ev)
	require.ErrorIs(t, err, ErrBusy)
	require.Equal(t, []string{"cas(c@10)"}, show(acts), "the claim of the reconciliation")
}

// loadedLeader is the reconciliation's load answered by leader 1 with status s.
func loadedLeader(epoch uint64, s *replicav1.GroupStatus) GroupsLoaded {
	return GroupsLoaded{Epoch: epoch, Statuses: map[uint64]*replicav1.GroupStatus{1: s}}
}

// A second repair must not overwrite a next set raft may hold. Here raft applies the first
// repair's set (1, 2, 4) although its record never landed; another repair of 3 (4 is busy
// elsewhere, say) would have named next = (1, 2, 5), leaving a record naming neither set raft
// uses nor one it moves to. It now reconciles first: the record rolls forward to (1, 2, 4),
// and the repair ordered again then finds 3 gone from the record.
func TestScenarioSecondRepairRollsTheFirstForwardFirst(t *testing.T) {
	next := []uint64{1, 2, 4}
	m := newMachine(t, jointChannel(stateActive, 10, 1, 5))
	expect(t, m, NodeDead{Node: 3})
	expectBusy(t, m, Repair{Dead: 3, With: 5})
	require.False(t, m.Repairing())
	expect(t, m, accepted(m), "load(c@11 on [1 2 4] joining [4])")
	loaded := loadedLeader(11, withVoters(leaderSt(1, 5, 100, nil), next))
	loaded.Statuses[4] = withStore(withVoters(st(5, 100, 100), next), 404)
	expect(t, m, loaded, "cas(c@11 replicas=[1 2 4] stores=map[4:404])")
	expect(t, m, accepted(m))
	require.Equal(t, next, m.Channel().GetReplicaNodeIds())
	require.Equal(t, map[uint64]uint64{1: 101, 2: 202, 4: 404}, m.Channel().GetReplicaStoreIds())
	require.Empty(t, m.Channel().GetNextReplicaNodeIds())
	require.False(t, m.Busy())
	refuse(t, m, Repair{Dead: 3, With: 5}, ErrNotReplica)
}

// The same repair ordered again resumes: its claim names the same next set.
func TestScenarioSameRepairResumesWhileJoint(t *testing.T) {
	m := newMachine(t, jointChannel(stateActive, 10, 1, 5))
	expect(t, m, NodeDead{Node: 3})
	expect(t, m, Repair{Dead: 3, With: 4}, "cas(c@10 next=[1 2 4])")
	require.True(t, m.Repairing())
}

// A next set raft never applied (the repair failed before ChangeReplicas, and 3 came back so
// nobody orders it again) is cleared once the fenced leader shows the record's set with nothing
// pending, and the joiner unloads the group it was loaded with.
func TestScenarioNextSetRaftNeverAppliedIsCleared(t *testing.T) {
	old := []uint64{1, 2, 3}
	m := newMachine(t, jointChannel(stateActive, 10, 1, 5))
	expect(t, m, NodeDead{Node: 4}) // a joiner's death is known, it is no leader
	expect(t, m, NodeAlive{Node: 4})
	expect(t, m, NodeDead{Node: 5})            // outside both sets: ignored
	expectBusy(t, m, Repair{Dead: 2, With: 2}) // a rejoin names the record's set, not next
	expect(t, m, accepted(m), "load(c@11 on [1 2 3 4] joining [4])")
	expect(t, m, loadedLeader(11, withVoters(leaderSt(1, 5, 100, nil), old, 4)), "cas(c@11 next=none)")
	expect(t, m, accepted(m), "unload(c@12 on [4])")
	require.Empty(t, m.Channel().GetNextReplicaNodeIds())
	require.Equal(t, old, m.Channel().GetReplicaNodeIds())
	expect(t, m, UnloadResult{Epoch: 12, Unloaded: []uint64{4}})
	require.False(t, m.Busy())
	// The rejoin ordered again goes ahead on the plain record.
	expect(t, m, Repair{Dead: 2, With: 2}, "cas(c@12)")
	require.True(t, m.Repairing())
}

// What the leader answers decides; anything but "next applied" or "the record's set with the
// whole log applied" leaves the record as it is.
func TestReconcileLeavesAChangingConfigurationAlone(t *testing.T) {
	old, merged := []uint64{1, 2, 3}, []uint64{1, 2, 3, 4}
	behind := withVoters(leaderSt(1, 5, 100, nil), old)
	behind.Applied = 99 // a conf change may sit in the unapplied tail
	for name, s := range map[string]*replicav1.GroupStatus{
		"mid-change":         withVoters(leaderSt(1, 5, 100, nil), merged),
		"unapplied entries":  behind,
		"another voter set":  withVoters(leaderSt(1, 5, 100, nil), []uint64{1, 2, 5}),
		"no voters reported": leaderSt(1, 5, 100, nil),
	} {
		t.Run(name, func(t *testing.T) {
			m := newMachine(t, jointChannel(stateActive, 10, 1, 5))
			expect(t, m, CheckLeader{}, "confirm(c@10 on 1 term>=5)")
			expect(t, m, ConfirmResult{Node: 1, Epoch: 10, Status: withVoters(leaderSt(1, 5, 100, nil), old)}, "cas(c@10)")
			expect(t, m, accepted(m), "load(c@11 on [1 2 3 4] joining [4])")
			acts, err := m.Step(loadedLeader(11, s))
			require.ErrorIs(t, err, ErrBusy)
			require.Empty(t, show(acts))
			require.False(t, m.Busy())
			require.Equal(t, []uint64{1, 2, 4}, m.Channel().GetNextReplicaNodeIds())
		})
	}
	// No answer, or an answer that it does not lead: the usual outcomes of a leader check.
	m := newMachine(t, jointChannel(stateActive, 10, 1, 5))
	expectBusy(t, m, MoveLeader{Target: 2})
	expect(t, m, accepted(m), "load(c@11 on [1 2 3 4] joining [4])")
	_, err := m.Step(GroupsLoaded{Epoch: 11, Errors: map[uint64]error{1: errTest}})
	require.ErrorIs(t, err, ErrLeaderUnknown)
	require.False(t, m.Busy())
	m = newMachine(t, jointChannel(stateActive, 10, 1, 5))
	expectBusy(t, m, MoveLeader{Target: 2})
	expect(t, m, accepted(m), "load(c@11 on [1 2 3 4] joining [4])")
	expect(t, m, loadedLeader(11, withVoters(st(6, 100, 100), old)), "cas(c@11 state=ELECTING leader=0)")
}

// The idle check of a joint channel whose joiner never caught up reconciles instead of
// refusing for good, and the next idle timeout hibernates on the record's set.
func TestScenarioJoinerThatNeverCaughtUpDoesNotKeepTheChannelActive(t *testing.T) {
	old := []uint64{1, 2, 3}
	m := newMachine(t, jointChannel(stateActive, 10, 1, 5))
	statuses := caughtUp()
	statuses[1].Voters = old
	statuses[4] = st(0, 0, 0)
	expect(t, m, IdleTimeout{Now: t0.Add(3 * time.Minute)}, "query(c@10 on [1 2 3 4])")
	expect(t, m, PositionsReported{Epoch: 10, Statuses: statuses}, "cas(c@10)")
	expect(t, m, accepted(m), "load(c@11 on [1 2 3 4] joining [4])")
	expect(t, m, loadedLeader(11, withVoters(leaderSt(1, 5, 100, nil), old)), "cas(c@11 next=none)")
	expect(t, m, accepted(m), "unload(c@12 on [4])")
	// 4 refuses: the record is right anyway.
	_, err := m.Step(UnloadResult{Epoch: 12, Errors: map[uint64]error{4: errTest}})
	require.ErrorIs(t, err, ErrUnloadRefused)
	require.False(t, m.Busy())
	expect(t, m, IdleTimeout{Now: t0.Add(6 * time.Minute)}, "query(c@12 on [1 2 3])")
	delete(statuses, 4)
	expect(t, m, PositionsReported{Epoch: 12, Statuses: statuses}, "cas(c@12 state=HIBERNATING)")
}

// The leader dying while the reconciliation's CAS is in flight waits for its result, then
// elects; a dead joiner is not sent an unload.
func TestReconcileLeaderDeathAndDeadJoiner(t *testing.T) {
	m := newMachine(t, jointChannel(stateActive, 10, 1, 5))
	expectBusy(t, m, MoveLeader{Target: 2})
	expect(t, m, NodeDead{Node: 1})
	expect(t, m, accepted(m), "cas(c@11 state=ELECTING leader=0)")

	m = newMachine(t, jointChannel(stateActive, 10, 1, 5))
	expectBusy(t, m, MoveLeader{Target: 2})
	expect(t, m, accepted(m), "load(c@11 on [1 2 3 4] joining [4])")
	expect(t, m, NodeDead{Node: 4}) // after the load went out
	expect(t, m, loadedLeader(11, withVoters(leaderSt(1, 5, 100, nil), []uint64{1, 2, 3})), "cas(c@11 next=none)")
	expect(t, m, accepted(m))
	require.False(t, m.Busy())
}
