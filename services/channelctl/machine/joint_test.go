package machine

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// Issue 13, item 5: joint replica sets. A replica-set repair names the set raft moves to in the
// record (next_replica_node_ids) before raft's configuration changes, so that a repair cut
// short leaves a record from which elections, loads and unloads still find every replica raft
// may count on.

// jointChannel is the test channel with replica 3 being replaced by 4: the record lists 1, 2,
// 3 and next lists 1, 2, 4 (a repair's claim was accepted, its record was not).
func jointChannel(state arbiterv1.ChannelState, epoch, leader, term uint64) *arbiterv1.Channel {
	ch := channel(state, epoch, leader, term)
	ch.NextReplicaNodeIds = []uint64{1, 2, 4}
	return ch
}

// withVoters is s applying the configuration voters (and learners).
func withVoters(s *replicav1.GroupStatus, voters []uint64, learners ...uint64) *replicav1.GroupStatus {
	s.Voters, s.Learners = voters, learners
	return s
}

func TestChooseJointLeader(t *testing.T) {
	old, next := []uint64{1, 2, 3}, []uint64{1, 2, 4}
	merged := []uint64{1, 2, 3, 4}
	all := map[uint64]Position{1: pos(5, 100), 2: pos(5, 100), 3: pos(5, 100), 4: pos(5, 100)}
	for name, tc := range map[string]struct {
		replicas, next []uint64
		positions      map[uint64]Position
		voters         map[uint64][]uint64
		reachable      map[uint64]bool
		preferred      uint64
		want           uint64
		nextApplied    bool
		err            error
	}{
		"no next: ChooseLeader": {replicas: old, positions: all, reachable: set(2, 3), want: 2},
		"next equal to the set: ChooseLeader": {replicas: old, next: []uint64{3, 2, 1}, positions: all,
			reachable: set(2, 3), want: 2},
		"a majority of each set": {replicas: old, next: next, positions: all, reachable: set(2, 3, 4), preferred: 3,
			want: 3},
		"a majority of the old set only": {replicas: old, next: next, positions: all, reachable: set(2, 3),
			err: ErrNoMajority},
		"a majority of the next set only": {replicas: old, next: next, positions: all, reachable: set(2, 4),
			err: ErrNoMajority},
		"the old set applied proves nothing: the change may have committed without them": {replicas: old, next: next,
			positions: all, voters: map[uint64][]uint64{2: old, 3: old}, reachable: set(2, 3), err: ErrNoMajority},
		"the next set applied decides alone": {replicas: old, next: next, positions: all,
			voters: map[uint64][]uint64{2: next, 4: {4, 2, 1}}, reachable: set(2, 4), want: 2, nextApplied: true},
		"one replica applying next is enough": {replicas: old, next: next, positions: all,
			voters: map[uint64][]uint64{2: old, 4: next}, reachable: set(2, 4), preferred: 4, want: 4, nextApplied: true},
		"applied next, but no majority of it": {replicas: old, next: next, positions: all,
			voters: map[uint64][]uint64{3: next, 4: next}, reachable: set(3, 4), err: ErrNoMajority},
		"the leaving replica is no candidate once next decides": {replicas: old, next: next,
			positions: map[uint64]Position{2: pos(5, 100), 3: pos(5, 200), 4: pos(5, 100)},
			voters:    map[uint64][]uint64{2: next, 3: old, 4: next}, reachable: set(2, 3, 4), want: 2, nextApplied: true},
		"a learner counts for the majority but is no candidate": {replicas: old, next: next,
			positions: map[uint64]Position{2: pos(5, 100), 3: pos(5, 100), 4: pos(5, 101)},
			voters:    map[uint64][]uint64{2: old, 3: old, 4: old}, reachable: set(2, 3, 4), want: 2},
		"never behind a reachable voter of either set": {replicas: old, next: next,
			positions: map[uint64]Position{2: pos(5, 100), 3: pos(5, 100), 4: pos(6, 1)},
			voters:    map[uint64][]uint64{2: merged, 3: merged, 4: merged}, reachable: set(2, 3, 4), preferred: 2,
			want: 4},
		"a growing set: both majorities, nothing applied, nothing to roll": {replicas: old, next: merged,
			positions: all, reachable: set(1, 2, 3), preferred: 3, want: 3},
		"no reachable voter": {replicas: old, next: next, positions: all,
			voters: map[uint64][]uint64{1: {1, 2, 3}, 2: {1, 3}, 3: {1}, 4: {1}}, reachable: set(2, 3, 4), err: ErrNoMajority},
		"reachable without position": {replicas: old, next: next, positions: map[uint64]Position{2: pos(5, 100), 3: pos(5, 100)},
			reachable: set(2, 3, 4), err: ErrMissingPosition},
		"bad next set": {replicas: old, next: []uint64{1, 1, 4}, positions: all, reachable: set(1, 4), err: ErrInvalidReplicaSet},
	} {
		t.Run(name, func(t *testing.T) {
			got, nextApplied, err := ChooseJointLeader(tc.replicas, tc.next, tc.positions, tc.voters, tc.reachable, tc.preferred)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.nextApplied, nextApplied)
			// Deterministic: the same inputs give the same answer.
			again, _, _ := ChooseJointLeader(tc.replicas, tc.next, tc.positions, tc.voters, tc.reachable, tc.preferred)
			require.Equal(t, got, again)
		})
	}
}

// The repair's claim names the set raft moves to; its record replaces the replica set with it
// and clears it.
func TestRepairNamesTheNextSetFirst(t *testing.T) {
	m := fxActiveRepairLoad(t)
	require.Equal(t, []uint64{1, 2, 4}, m.Channel().GetNextReplicaNodeIds())
	require.Equal(t, []uint64{1, 2, 3}, m.Channel().GetReplicaNodeIds())
	m = fxActiveRepairRecord(t)
	expect(t, m, accepted(m))
	require.Equal(t, []uint64{1, 2, 4}, m.Channel().GetReplicaNodeIds())
	require.Empty(t, m.Channel().GetNextReplicaNodeIds())
	// A rejoin keeps the replica set and names no next one.
	m = fxActiveRejoinLoad(t)
	require.Empty(t, m.Channel().GetNextReplicaNodeIds())
}

// (a) A repair cut short after raft's change: the leader applied voters 1, 2, 4 and then died,
// with the record still listing 1, 2, 3 (3 dead). Only 2 and 4 live: not a majority of the
// record's set, but the election gathers from both sets, finds raft's configuration applied
// (1, 2, 4), elects within it and rolls the record forward in the CAS naming the candidate.
// Without the next set the election would gather from 2 alone and stall for good.
func TestScenarioRepairCutShortAfterRaftChanged(t *testing.T) {
	m := fxActiveRepairChange(t)
	expect(t, m, NodeDead{Node: 1}, "cas(c@11 state=ELECTING leader=0)")
	require.False(t, m.Repairing())
	expectActions(t, m, accepted(m), LoadGroups{ChannelID: "c", GroupID: 7, Replicas: []uint64{1, 2, 3, 4},
		Nodes: []uint64{2, 4}, Epoch: 12, StoreIDs: recordedStores(), JoinNodes: []uint64{4}})
	expect(t, m, GroupsLoaded{Epoch: 12, Statuses: map[uint64]*replicav1.GroupStatus{
		2: withVoters(st(5, 103, 103), []uint64{1, 2, 4}),
		4: withStore(withVoters(st(5, 103, 103), []uint64{1, 2, 4}), 404)}},
		"cas(c@12 leader=2 replicas=[1 2 4] stores=map[4:404])")
	expect(t, m, accepted(m), "campaign(c@13 on 2)")
	expect(t, m, CampaignResult{Node: 2, Epoch: 13, Leader: true, Term: 6}, "confirm(c@13 on 2 term>=6)")
	expect(t, m, ConfirmResult{Node: 2, Epoch: 13, Status: withVoters(leaderSt(2, 6, 104, map[uint64]uint64{4: 104}), []uint64{1, 2, 4})},
		"cas(c@13 state=ACTIVE leader=2 term=6 seq=40)")
	expect(t, m, accepted(m))

	ch := m.Channel()
	require.Equal(t, stateActive, ch.GetState())
	require.Equal(t, []uint64{1, 2, 4}, ch.GetReplicaNodeIds())
	require.Empty(t, ch.GetNextReplicaNodeIds())
	require.Equal(t, map[uint64]uint64{1: 101, 2: 202, 4: 404}, ch.GetReplicaStoreIds())
	require.Equal(t, uint64(2), ch.GetLeaderNodeId())
}

// (a, taken over) The channelctl died with the repair cut short; its successor starts from the
// record (1, 2, 3; next 1, 2, 4), and leader 1 dies. The dead replica 3 came back meanwhile, so
// 2, 3 and 4 answer, none naming its configuration: a majority of each set answered and the
// most up-to-date voter is chosen. The new leader shows 1, 2, 4 applied, and the CAS that
// settles it rolls the record forward.
func TestScenarioTakeoverRollsForwardAtSettle(t *testing.T) {
	m := newMachine(t, jointChannel(stateActive, 11, 1, 5))
	expect(t, m, NodeDead{Node: 1}, "cas(c@11 state=ELECTING leader=0)")
	expect(t, m, accepted(m), "load(c@12 on [2 3 4] joining [4])")
	expect(t, m, GroupsLoaded{Epoch: 12, Statuses: map[uint64]*replicav1.GroupStatus{
		2: st(5, 100, 100), 3: st(5, 90, 90), 4: st(5, 103, 103)}}, "cas(c@12 leader=4)")
	expect(t, m, accepted(m), "campaign(c@13 on 4)")
	expect(t, m, CampaignResult{Node: 4, Epoch: 13, Leader: true, Term: 6,
		Status: withStore(withVoters(leaderSt(4, 6, 104, nil), []uint64{1, 2, 4}), 404)},
		"cas(c@13 state=ACTIVE leader=4 term=6 seq=40 replicas=[1 2 4] stores=map[4:404])")
	expect(t, m, accepted(m))
	ch := m.Channel()
	require.Equal(t, []uint64{1, 2, 4}, ch.GetReplicaNodeIds())
	require.Empty(t, ch.GetNextReplicaNodeIds())
	require.Equal(t, uint64(4), ch.GetLeaderNodeId())
	require.Equal(t, map[uint64]uint64{1: 101, 2: 202, 4: 404}, ch.GetReplicaStoreIds())
}

// (b) A repair cut short before raft changed (voters still 1, 2, 3; 4 at most a learner), and
// the leader dies with 3 dead. 2 and 4 are a majority of the next set but not of the record's,
// and nothing shows the change committed: no leader, although raft's configuration (1, 2, 3)
// holds committed entries on 1 and 3 only as far as anyone can tell. When 3 returns, a
// majority of each set answers and the old set provides the leader: the learner 4, although
// ahead, cannot campaign. The record keeps its next set: a configuration applied by some
// replicas proves nothing about the others.
func TestScenarioRepairCutShortBeforeRaftChanged(t *testing.T) {
	m := fxActiveRepairChange(t)
	expect(t, m, NodeDead{Node: 1}, "cas(c@11 state=ELECTING leader=0)")
	expect(t, m, accepted(m), "load(c@12 on [2 4] joining [4])")
	old := []uint64{1, 2, 3}
	_, err := m.Step(GroupsLoaded{Epoch: 12, Statuses: map[uint64]*replicav1.GroupStatus{
		2: withVoters(st(5, 100, 100), old), 4: withVoters(st(5, 101, 100), old, 4)}})
	require.ErrorIs(t, err, ErrNoMajority)
	require.True(t, m.Stalled())

	expect(t, m, NodeAlive{Node: 3}, "load(c@12 on [2 3 4] joining [4])")
	expect(t, m, GroupsLoaded{Epoch: 12, Statuses: map[uint64]*replicav1.GroupStatus{
		2: withVoters(st(5, 100, 100), old), 3: withVoters(st(5, 100, 100), old),
		4: withVoters(st(5, 101, 100), old, 4)}}, "cas(c@12 leader=3)")
	expect(t, m, accepted(m), "campaign(c@13 on 3)")
	expect(t, m, CampaignResult{Node: 3, Epoch: 13, Leader: true, Term: 6,
		Status: withVoters(leaderSt(3, 6, 101, nil), old, 4)}, "cas(c@13 state=ACTIVE leader=3 term=6 seq=40)")
	expect(t, m, accepted(m))
	ch := m.Channel()
	require.Equal(t, []uint64{1, 2, 3}, ch.GetReplicaNodeIds())
	require.Equal(t, []uint64{1, 2, 4}, ch.GetNextReplicaNodeIds())
}

// (c) Hibernation with a next set unloads both sets (any of them may hold the group in memory)
// and waits until every replica of both holds the whole log.
func TestScenarioHibernationUnloadsTheUnion(t *testing.T) {
	m := newMachine(t, jointChannel(stateActive, 10, 1, 5))
	old := []uint64{1, 2, 3}
	statuses := caughtUp()
	statuses[1].Voters = old
	statuses[1].Progress = append(statuses[1].Progress, &replicav1.Progress{NodeId: 4, Match: 100, Next: 101})
	statuses[4] = st(5, 100, 100)
	expect(t, m, IdleTimeout{Now: t0.Add(3 * time.Minute)}, "query(c@10 on [1 2 3 4])")
	expect(t, m, PositionsReported{Epoch: 10, Statuses: statuses}, "cas(c@10 state=HIBERNATING)")
	expect(t, m, accepted(m), "unload(c@11 on [1 2 3 4])")
	// 4 still held it: reactivation, as for any refused unload.
	expect(t, m, UnloadResult{Epoch: 11, Unloaded: []uint64{1, 2, 3}}, "cas(c@11 state=ACTIVATING leader=0)")

	m = newMachine(t, jointChannel(stateActive, 10, 1, 5))
	expect(t, m, IdleTimeout{Now: t0.Add(3 * time.Minute)}, "query(c@10 on [1 2 3 4])")
	expect(t, m, PositionsReported{Epoch: 10, Statuses: statuses}, "cas(c@10 state=HIBERNATING)")
	expect(t, m, accepted(m), "unload(c@11 on [1 2 3 4])")
	expect(t, m, UnloadResult{Epoch: 11, Unloaded: []uint64{1, 2, 3, 4}}, "cas(c@11 state=HIBERNATED seq=40)")
	expect(t, m, accepted(m))

	// Activated again, the loads go to both sets, as a join where only next lists the replica.
	expect(t, m, Activate{}, "cas(c@12 state=ACTIVATING leader=0)")
	expectActions(t, m, accepted(m), LoadGroups{ChannelID: "c", GroupID: 7, Replicas: []uint64{1, 2, 3, 4},
		Nodes: []uint64{1, 2, 3, 4}, Epoch: 13, StoreIDs: recordedStores(), JoinNodes: []uint64{4}})

	// A replica of the record's set that lags keeps the channel active.
	m = newMachine(t, jointChannel(stateActive, 10, 1, 5))
	statuses[2] = st(5, 99, 99)
	expect(t, m, IdleTimeout{Now: t0.Add(3 * time.Minute)}, "query(c@10 on [1 2 3 4])")
	_, err := m.Step(PositionsReported{Epoch: 10, Statuses: statuses})
	require.ErrorIs(t, err, ErrNotCaughtUp)
	require.Equal(t, stateActive, m.State())
	require.False(t, m.Busy())

	// A joiner that lags may be one raft never added, which would keep the channel active for
	// good: the record is reconciled with raft first (reconcile_test.go).
	m = newMachine(t, jointChannel(stateActive, 10, 1, 5))
	statuses[2] = st(5, 100, 100)
	statuses[4] = st(5, 99, 99)
	expect(t, m, IdleTimeout{Now: t0.Add(3 * time.Minute)}, "query(c@10 on [1 2 3 4])")
	expect(t, m, PositionsReported{Epoch: 10, Statuses: statuses}, "cas(c@10)")
	require.Equal(t, stateActive, m.State())
}

// An active leader found applying the next set (a leader check, or the idle check) rolls the
// record forward, staying active; the next idle check then covers the new set only.
func TestActiveLeaderApplyingNextRollsForward(t *testing.T) {
	next := []uint64{1, 2, 4}
	m := newMachine(t, jointChannel(stateActive, 10, 1, 5))
	expect(t, m, Resolve{Waiter: 1, At: t0, StaleLeader: 1}, "confirm(c@10 on 1 term>=5)")
	expect(t, m, ConfirmResult{Node: 1, Epoch: 10, Status: withVoters(leaderSt(1, 5, 100, nil), next)},
		"answer(c [1] leader=1 term=5 epoch=10)", "cas(c@10 replicas=[1 2 4])")
	refuse(t, m, Hibernate{}, ErrBusy)
	expect(t, m, accepted(m))
	require.Equal(t, next, m.Channel().GetReplicaNodeIds())
	require.Empty(t, m.Channel().GetNextReplicaNodeIds())
	expect(t, m, IdleTimeout{Now: t0.Add(3 * time.Minute)}, "query(c@11 on [1 2 4])")

	m = newMachine(t, jointChannel(stateActive, 10, 1, 5))
	statuses := caughtUp()
	statuses[1].Voters = next
	statuses[4] = withStore(withVoters(st(5, 100, 100), next), 404)
	expect(t, m, IdleTimeout{Now: t0.Add(3 * time.Minute)}, "query(c@10 on [1 2 3 4])")
	expect(t, m, PositionsReported{Epoch: 10, Statuses: statuses}, "cas(c@10 replicas=[1 2 4] stores=map[4:404])")
	expect(t, m, accepted(m))
	require.Equal(t, map[uint64]uint64{1: 101, 2: 202, 4: 404}, m.Channel().GetReplicaStoreIds())
	require.False(t, m.Busy())

	// The leader dying while the roll is in flight waits for its result, then elects.
	m = newMachine(t, jointChannel(stateActive, 10, 1, 5))
	expect(t, m, CheckLeader{}, "confirm(c@10 on 1 term>=5)")
	expect(t, m, ConfirmResult{Node: 1, Epoch: 10, Status: withVoters(leaderSt(1, 5, 100, nil), next)},
		"cas(c@10 replicas=[1 2 4])")
	expect(t, m, NodeDead{Node: 1})
	expect(t, m, accepted(m), "cas(c@11 state=ELECTING leader=0)")
}

// A machine built on a record naming a next set loads and hears about the replicas of both.
func TestNewWithNextSet(t *testing.T) {
	m := newMachine(t, jointChannel(stateActive, 10, 4, 5))
	require.Equal(t, []uint64{1, 2, 3, 4}, m.Info().Replicas)
	expect(t, m, NodeDead{Node: 4}, "cas(c@10 state=ELECTING leader=0)")

	bad := jointChannel(stateActive, 10, 1, 5)
	bad.NextReplicaNodeIds = []uint64{1, 4, 4}
	_, err := New(bad, testCfg, t0)
	require.ErrorIs(t, err, ErrInvalidReplicaSet)
	bad = jointChannel(stateActive, 10, 5, 5)
	_, err = New(bad, testCfg, t0)
	require.Error(t, err)
}

// Mid-change (4 promoted, 3 not yet removed: raft's voters are 1, 2, 3 and 4) the newcomer may
// be the most up-to-date voter: it is elected although only the next set lists it, and the
// record keeps both sets, since nobody applies the next one yet.
func TestScenarioMergedConfigurationElectsTheNewcomer(t *testing.T) {
	merged := []uint64{1, 2, 3, 4}
	m := newMachine(t, jointChannel(stateActive, 11, 1, 5))
	expect(t, m, NodeDead{Node: 1}, "cas(c@11 state=ELECTING leader=0)")
	expect(t, m, accepted(m), "load(c@12 on [2 3 4] joining [4])")
	expect(t, m, GroupsLoaded{Epoch: 12, Statuses: map[uint64]*replicav1.GroupStatus{
		2: withVoters(st(5, 100, 100), merged), 3: withVoters(st(5, 100, 100), merged),
		4: withVoters(st(5, 101, 100), merged)}}, "cas(c@12 leader=4)")
	expect(t, m, accepted(m), "campaign(c@13 on 4)")
	expect(t, m, CampaignResult{Node: 4, Epoch: 13, Leader: true, Term: 6,
		Status: withVoters(leaderSt(4, 6, 102, nil), merged)}, "cas(c@13 state=ACTIVE leader=4 term=6 seq=40)")
	expect(t, m, accepted(m))
	ch := m.Channel()
	require.Equal(t, uint64(4), ch.GetLeaderNodeId())
	require.Equal(t, []uint64{1, 2, 3}, ch.GetReplicaNodeIds())
	require.Equal(t, []uint64{1, 2, 4}, ch.GetNextReplicaNodeIds())
	// Once the removal of 3 applies, the leader's next check rolls the record forward.
	expect(t, m, CheckLeader{}, "confirm(c@14 on 4 term>=6)")
	expect(t, m, ConfirmResult{Node: 4, Epoch: 14, Status: withStore(withVoters(leaderSt(4, 6, 103, nil), []uint64{1, 2, 4}), 404)},
		"cas(c@14 replicas=[1 2 4] stores=map[4:404])")
	expect(t, m, accepted(m))
	require.Equal(t, []uint64{1, 2, 4}, m.Channel().GetReplicaNodeIds())
	require.Equal(t, map[uint64]uint64{1: 101, 2: 202, 4: 404}, m.Channel().GetReplicaStoreIds())
}
