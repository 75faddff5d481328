package machine

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// Scenarios script one channel through a whole transition, one event at a time, checking every
// action on the way. A CAS is accepted by applying it to the machine's own last record, which is
// what the arbiter does when nobody else changed the channel.

func refuse(t *testing.T, m *Machine, ev Event, sentinel error) []string {
	t.Helper()
	acts, err := m.Step(ev)
	require.ErrorIs(t, err, sentinel)
	return show(acts)
}

func TestScenarioActivationOnDemand(t *testing.T) {
	m := newMachine(t, channel(stateHibernated, 10, 1, 5))

	expect(t, m, Resolve{Waiter: 1, At: t0}, "cas(c@10 state=ACTIVATING leader=0)")
	expect(t, m, Resolve{Waiter: 2, At: t0}) // a second client waits for the same activation
	expect(t, m, accepted(m), "load(c@11 on [1 2 3])")
	// Node 3 was offline for the last writes; the previous leader, 1, is among the most up to date.
	expect(t, m, GroupsLoaded{Epoch: 11, Statuses: map[uint64]*replicav1.GroupStatus{
		1: st(5, 100, 100), 2: st(5, 100, 100), 3: st(5, 97, 97)}}, "cas(c@11 leader=1)")
	expect(t, m, accepted(m), "campaign(c@12 on 1)")
	expect(t, m, CampaignResult{Node: 1, Epoch: 12, Leader: true, Term: 6}, "confirm(c@12 on 1 term>=6)")
	leading := leaderSt(1, 6, 101, map[uint64]uint64{2: 101, 3: 101})
	leading.LastSeq = 41
	expect(t, m, ConfirmResult{Node: 1, Epoch: 12, Status: leading}, "cas(c@12 state=ACTIVE leader=1 term=6 seq=41)")
	require.Equal(t, stateActivating, m.State(), "not active until the arbiter has it")
	expect(t, m, accepted(m), "answer(c [1 2] leader=1 term=6 epoch=13)")

	require.Equal(t, stateActive, m.State())
	rec := m.Channel()
	require.Equal(t, stateActive, rec.GetState())
	require.Equal(t, uint64(13), rec.GetEpoch())
	require.Equal(t, uint64(1), rec.GetLeaderNodeId())
	require.Equal(t, uint64(6), rec.GetLeaderTerm())
	require.Equal(t, uint64(41), rec.GetLastSeq())
	require.Zero(t, m.Waiters())
	expect(t, m, Resolve{Waiter: 3, At: t0}, "answer(c [3] leader=1 term=6 epoch=13)")
}

func TestScenarioFailover(t *testing.T) {
	m := newMachine(t, channel(stateActive, 10, 1, 5))

	expect(t, m, NodeDead{Node: 1}, "cas(c@10 state=ELECTING leader=0)")
	expect(t, m, Resolve{Waiter: 1, At: t0, StaleLeader: 1}) // the client saw node 1 fail
	// The survivors (re)load the group, which answers with their statuses.
	expect(t, m, accepted(m), "load(c@11 on [2 3])")
	// Node 3 holds three entries more than node 2: it must win, preferences notwithstanding.
	expect(t, m, GroupsLoaded{Epoch: 11, Statuses: map[uint64]*replicav1.GroupStatus{
		2: st(5, 100, 100), 3: st(5, 103, 100)}}, "cas(c@11 leader=3)")
	expect(t, m, Resolve{Waiter: 2, At: t0})
	expect(t, m, accepted(m), "campaign(c@12 on 3)")
	require.Empty(t, refuse(t, m, GroupsLoaded{Epoch: 11}, ErrUnexpectedEvent), "a late load reply changes nothing")
	require.Empty(t, refuse(t, m, PositionsReported{Epoch: 11}, ErrUnexpectedEvent), "nor does a status reply nobody asked for")
	require.Empty(t, refuse(t, m, CampaignResult{Node: 3, Epoch: 11, Leader: true, Term: 6}, ErrStaleEpoch))
	expect(t, m, CampaignResult{Node: 3, Epoch: 12, Leader: true, Term: 6}, "confirm(c@12 on 3 term>=6)")
	expect(t, m, ConfirmResult{Node: 3, Epoch: 12, Status: leaderSt(3, 6, 104, map[uint64]uint64{2: 104})},
		"cas(c@12 state=ACTIVE leader=3 term=6 seq=40)")
	expect(t, m, accepted(m), "answer(c [1 2] leader=3 term=6 epoch=13)")
	require.Equal(t, stateActive, m.State())

	// Node 1 returns: it follows; nothing moves until a balance plan orders it.
	expect(t, m, NodeAlive{Node: 1})
	expect(t, m, MoveLeader{Target: 1}, "query(c@13 on [1 3])")
}

func TestScenarioLostSlotStopsActing(t *testing.T) {
	m := newMachine(t, channel(stateActive, 10, 1, 5))
	expect(t, m, NodeDead{Node: 1}, "cas(c@10 state=ELECTING leader=0)")
	expect(t, m, accepted(m), "load(c@11 on [2 3])")
	expect(t, m, Resolve{Waiter: 1, At: t0})
	expect(t, m, GroupsLoaded{Epoch: 11, Statuses: map[uint64]*replicav1.GroupStatus{
		2: st(5, 100, 100), 3: st(5, 100, 100)}}, "cas(c@11 leader=3)")

	// Meanwhile the slot moved to another channelctl, which already decided on node 2.
	require.Equal(t, []string{"fail(c [1])"},
		refuse(t, m, refusedNotOwner(channel(stateElecting, 12, 2, 5)), ErrNotOwner),
		"the waiter is failed and, above all, no campaign is ordered")
	require.True(t, m.Fenced())
	require.Equal(t, uint64(2), m.Channel().GetLeaderNodeId(), "the arbiter's record is adopted")

	for _, ev := range []Event{CampaignResult{Node: 3, Epoch: 12, Leader: true, Term: 6}, Retry{}, NodeAlive{Node: 1},
		Resolve{Waiter: 2, At: t0}, MoveLeader{Target: 3}, IdleTimeout{Now: t0.Add(time.Hour)}} {
		require.Empty(t, refuse(t, m, ev, ErrNotOwner), "%T", ev)
	}
}

func TestScenarioStaleEpochAdoptsTheArbiter(t *testing.T) {
	m := newMachine(t, channel(stateActive, 10, 1, 5))
	expect(t, m, NodeDead{Node: 1}, "cas(c@10 state=ELECTING leader=0)")
	expect(t, m, accepted(m), "load(c@11 on [2 3])")
	expect(t, m, Resolve{Waiter: 1, At: t0})
	expect(t, m, GroupsLoaded{Epoch: 11, Statuses: map[uint64]*replicav1.GroupStatus{
		2: st(5, 100, 100), 3: st(5, 100, 100)}}, "cas(c@11 leader=3)")

	// The arbiter's record moved on (a previous owner's election finished first): adopt it.
	require.Equal(t, []string{"answer(c [1] leader=2 term=6 epoch=14)"},
		refuse(t, m, refusedStale(channel(stateActive, 14, 2, 6)), ErrCASRefused))
	require.False(t, m.Fenced())
	require.Equal(t, stateActive, m.State())
	require.Empty(t, refuse(t, m, accepted(m), ErrUnexpectedEvent), "nothing of the dropped election is still in flight")
	expect(t, m, Resolve{Waiter: 2, At: t0}, "answer(c [2] leader=2 term=6 epoch=14)")
	expect(t, m, NodeDead{Node: 2}, "cas(c@14 state=ELECTING leader=0)")
}

func TestScenarioHibernationWaitsForLaggingFollower(t *testing.T) {
	m := newMachine(t, channel(stateActive, 10, 1, 5))

	require.Empty(t, refuse(t, m, IdleTimeout{Now: t0.Add(time.Minute)}, ErrNotIdle))
	expect(t, m, IdleTimeout{Now: t0.Add(3 * time.Minute)}, "query(c@10 on [1 2 3])")
	lagging := caughtUp()
	lagging[1] = leaderSt(1, 5, 100, map[uint64]uint64{2: 100, 3: 98})
	lagging[3] = st(5, 98, 98)
	require.Empty(t, refuse(t, m, PositionsReported{Epoch: 10, Statuses: lagging}, ErrNotCaughtUp))
	require.Equal(t, stateActive, m.State())
	require.False(t, m.Busy())

	expect(t, m, IdleTimeout{Now: t0.Add(4 * time.Minute)}, "query(c@10 on [1 2 3])")
	expect(t, m, PositionsReported{Epoch: 10, Statuses: caughtUp()}, "cas(c@10 state=HIBERNATING)")
	expect(t, m, accepted(m), "unload(c@11 on [1 2 3])")
	expect(t, m, UnloadResult{Epoch: 11, Unloaded: []uint64{1, 2, 3}}, "cas(c@11 state=HIBERNATED seq=40)")
	expect(t, m, accepted(m))
	require.Equal(t, stateHibernated, m.State())
	rec := m.Channel()
	require.Equal(t, uint64(12), rec.GetEpoch())
	require.Equal(t, uint64(1), rec.GetLeaderNodeId(), "the last leader stays as the hint for the next activation")

	expect(t, m, Resolve{Waiter: 1, At: t0.Add(time.Hour)}, "cas(c@12 state=ACTIVATING leader=0)")
}

func TestScenarioHibernationAbortedByActivity(t *testing.T) {
	m := newMachine(t, channel(stateActive, 10, 1, 5))
	expect(t, m, IdleTimeout{Now: t0.Add(3 * time.Minute)}, "query(c@10 on [1 2 3])")
	// A client resolves (and is answered) while the statuses are on their way.
	expect(t, m, Resolve{Waiter: 1, At: t0.Add(3*time.Minute + time.Second)}, "answer(c [1] leader=1 term=5 epoch=10)")
	require.Empty(t, refuse(t, m, PositionsReported{Epoch: 10, Statuses: caughtUp()}, ErrNotIdle))
	require.Equal(t, stateActive, m.State())
}

func TestScenarioMoveLeader(t *testing.T) {
	m := newMachine(t, channel(stateActive, 10, 1, 5))

	require.Empty(t, refuse(t, m, MoveLeader{Target: 7}, ErrNotReplica))
	expect(t, m, MoveLeader{Target: 3}, "query(c@10 on [1 3])")
	require.Empty(t, refuse(t, m, PositionsReported{Epoch: 10, Statuses: map[uint64]*replicav1.GroupStatus{
		1: leaderSt(1, 5, 100, map[uint64]uint64{3: 95}), 3: st(5, 95, 95)}}, ErrTargetLagging))
	require.Equal(t, stateActive, m.State())

	expect(t, m, MoveLeader{Target: 3}, "query(c@10 on [1 3])")
	expect(t, m, PositionsReported{Epoch: 10, Statuses: caughtUp()}, "cas(c@10 state=ELECTING leader=3)")
	expect(t, m, accepted(m), "transfer(c@11 1->3)")
	expect(t, m, Resolve{Waiter: 1, At: t0})
	expect(t, m, TransferResult{Target: 3, Epoch: 11}, "confirm(c@11 on 3 term>=6)")
	expect(t, m, ConfirmResult{Node: 3, Epoch: 11, Status: leaderSt(3, 6, 101, nil)}, "cas(c@11 state=ACTIVE leader=3 term=6 seq=40)")
	expect(t, m, accepted(m), "answer(c [1] leader=3 term=6 epoch=12)")
	require.Equal(t, stateActive, m.State())
}

func TestScenarioNoMajorityThenANodeReturns(t *testing.T) {
	m := newMachine(t, channel(stateActive, 10, 1, 5))
	expect(t, m, NodeDead{Node: 2})
	expect(t, m, NodeDead{Node: 1}, "cas(c@10 state=ELECTING leader=0)")
	expect(t, m, Resolve{Waiter: 1, At: t0})
	require.Equal(t, []string{"fail(c [1])"}, refuse(t, m, accepted(m), ErrNoMajority),
		"with only node 3 alive nobody may be elected; the waiter gets a clear error")
	require.True(t, m.Stalled())
	require.Empty(t, refuse(t, m, IdleTimeout{Now: t0.Add(time.Hour)}, ErrNotActive))

	expect(t, m, NodeAlive{Node: 2}, "load(c@11 on [2 3])")
	expect(t, m, Resolve{Waiter: 2, At: t0})
	expect(t, m, GroupsLoaded{Epoch: 11, Statuses: map[uint64]*replicav1.GroupStatus{
		2: st(5, 99, 99), 3: st(5, 100, 100)}}, "cas(c@11 leader=3)")
	expect(t, m, accepted(m), "campaign(c@12 on 3)")
	expect(t, m, CampaignResult{Node: 3, Epoch: 12, Leader: true, Term: 6}, "confirm(c@12 on 3 term>=6)")
	expect(t, m, ConfirmResult{Node: 3, Epoch: 12, Status: leaderSt(3, 6, 101, nil)}, "cas(c@12 state=ACTIVE leader=3 term=6 seq=40)")
	expect(t, m, accepted(m), "answer(c [2] leader=3 term=6 epoch=13)")
}

func TestScenarioElectionGivesUpAfterAttempts(t *testing.T) {
	m := fxActivatingCampaign(t) // waiter 1, campaign on 1 under epoch 12
	loaded := GroupsLoaded{Epoch: 12, Statuses: map[uint64]*replicav1.GroupStatus{
		1: st(5, 100, 100), 2: st(5, 100, 100), 3: st(5, 100, 100)}}

	expect(t, m, CampaignResult{Node: 1, Epoch: 12, Err: errTest}, "load(c@12 on [1 2 3])")
	expect(t, m, loaded, "cas(c@12 leader=1)")
	expect(t, m, accepted(m), "campaign(c@13 on 1)")
	expect(t, m, CampaignResult{Node: 1, Epoch: 13, Leader: false}, "load(c@13 on [1 2 3])")
	loaded.Epoch = 13
	expect(t, m, loaded, "cas(c@13 leader=1)")
	expect(t, m, accepted(m), "campaign(c@14 on 1)")
	require.Equal(t, []string{"fail(c [1])"}, refuse(t, m, CampaignResult{Node: 1, Epoch: 14, Err: errTest}, ErrElectionFailed))
	require.True(t, m.Stalled())

	expect(t, m, Retry{}, "load(c@14 on [1 2 3])")
}

func TestScenarioTakeoverMidElection(t *testing.T) {
	// The previous owner died after recording candidate 2; this channelctl resumes from the record.
	m := newMachine(t, channel(stateElecting, 12, 2, 5))
	require.True(t, m.Stalled())
	expect(t, m, Resolve{Waiter: 1, At: t0}, "load(c@12 on [1 2 3])")
	expect(t, m, GroupsLoaded{Epoch: 12, Statuses: map[uint64]*replicav1.GroupStatus{
		1: st(5, 100, 100), 2: st(5, 100, 100), 3: st(5, 100, 100)}}, "cas(c@12 leader=2)")
	expect(t, m, accepted(m), "campaign(c@13 on 2)")
}

func TestScenarioUnloadRefusedReactivates(t *testing.T) {
	m := fxHibernatingUnload(t)
	expect(t, m, Resolve{Waiter: 1, At: t0.Add(5 * time.Minute)})
	// A send reached the leader after the check: it refused to unload, the followers did.
	expect(t, m, UnloadResult{Epoch: 11, Unloaded: []uint64{2, 3}, Errors: map[uint64]error{1: errTest}},
		"cas(c@11 state=ACTIVATING leader=0)")
	expect(t, m, accepted(m), "load(c@12 on [1 2 3])")
	expect(t, m, GroupsLoaded{Epoch: 12, Statuses: map[uint64]*replicav1.GroupStatus{
		1: st(5, 101, 101), 2: st(5, 100, 100), 3: st(5, 100, 100)}}, "cas(c@12 leader=1)")
	expect(t, m, accepted(m), "campaign(c@13 on 1)")
	expect(t, m, CampaignResult{Node: 1, Epoch: 13, Leader: true, Term: 6}, "confirm(c@13 on 1 term>=6)")
	expect(t, m, ConfirmResult{Node: 1, Epoch: 13, Status: leaderSt(1, 6, 102, nil)}, "cas(c@13 state=ACTIVE leader=1 term=6 seq=40)")
	expect(t, m, accepted(m), "answer(c [1] leader=1 term=6 epoch=14)")
}

// After a repair the dead replica is gone from the set: the channel may hibernate again (a dead
// member refuses that) and a later failover elects among the new set.
func TestRepairRestoresTheReplicaSet(t *testing.T) {
	m := fxActiveRepairRecord(t)
	expect(t, m, accepted(m))
	require.Equal(t, []uint64{1, 2, 4}, m.Channel().GetReplicaNodeIds())
	require.Equal(t, uint64(12), m.Channel().GetEpoch())
	require.Equal(t, []uint64{1, 2, 4}, m.alive())
	expect(t, m, Hibernate{}, "query(c@12 on [1 2 4])")

	m = fxActiveRepairRecord(t)
	expect(t, m, accepted(m))
	expect(t, m, NodeDead{Node: 1}, "cas(c@12 state=ELECTING leader=0)")
	expect(t, m, accepted(m), "load(c@13 on [2 4])")
}

// A leader that dies while a repair's CAS is in flight is replaced as soon as the CAS answers,
// accepted or refused, and never with two CASes in flight on one epoch.
func TestLeaderDeathDuringRepairCAS(t *testing.T) {
	m := fxActiveRepairRecord(t)
	expect(t, m, NodeDead{Node: 1})
	expect(t, m, accepted(m), "cas(c@12 state=ELECTING leader=0)")

	m = fxActiveRepairClaim(t)
	expect(t, m, NodeDead{Node: 1})
	acts, err := m.Step(refusedStale(channel(stateActive, 11, 1, 5)))
	require.ErrorIs(t, err, ErrCASRefused)
	require.Empty(t, acts)
	require.True(t, m.Stalled(), "an active channel whose leader is dead waits for Retry")
	expect(t, m, Retry{}, "cas(c@11 state=ELECTING leader=0)")
}

// The change order names the voters wanted, so the leader also drops what an unfinished
// earlier repair left in raft; it carries the new replica's store, which admits it.
func TestRepairOrderNamesTheWantedVoters(t *testing.T) {
	m := fxActiveRepairLoad(t)
	expectActions(t, m, repairLoaded(11),
		ChangeReplicas{ChannelID: "c", Leader: 1, Add: 4, Remove: 3, AddStoreID: 404, Voters: []uint64{1, 2, 4}, Epoch: 11})
}

// A repair records the store of the replica it added, and the dead replica's entry leaves with
// it: the next election's loads name store 404 for node 4.
func TestRepairRecordsTheNewStore(t *testing.T) {
	m := fxActiveRepairRecord(t)
	expect(t, m, accepted(m))
	require.Equal(t, map[uint64]uint64{1: 101, 2: 202, 4: 404}, m.Channel().GetReplicaStoreIds())
	expect(t, m, NodeDead{Node: 1}, "cas(c@12 state=ELECTING leader=0)")
	expectActions(t, m, accepted(m), LoadGroups{ChannelID: "c", GroupID: 7, Replicas: []uint64{1, 2, 4},
		Nodes: []uint64{2, 4}, Epoch: 13, StoreIDs: map[uint64]uint64{1: 101, 2: 202, 4: 404}})
}

// A replica whose disk was wiped came back alive with store 222; the record names 202. It
// rejoins through the repair's steps: a join load (no store named), the leader's rejoin order
// carrying 222 (remove, add back as a learner, promote), and a record of 222 with the replica
// set unchanged. From then on the loads name 222 for it.
func TestScenarioRejoinReplacedStore(t *testing.T) {
	m := fxActive(t)
	expect(t, m, Repair{Dead: 2, With: 2}, "cas(c@10)")
	expectActions(t, m, accepted(m),
		LoadGroups{ChannelID: "c", GroupID: 7, Replicas: []uint64{1, 2, 3}, Nodes: []uint64{1, 2, 3}, Epoch: 11, Join: true})
	expectActions(t, m, rejoinLoaded(11),
		ChangeReplicas{ChannelID: "c", Leader: 1, Add: 2, Remove: 2, AddStoreID: 222, Voters: []uint64{1, 2, 3}, Epoch: 11})
	expect(t, m, Resolve{Waiter: 4, At: t0}, "answer(c [4] leader=1 term=5 epoch=11)") // the leader serves throughout
	acts, err := m.Step(ReplicasChanged{Epoch: 11, Status: votersSt(1, 2, 3)})
	require.NoError(t, err)
	require.Len(t, acts, 1)
	record := acts[0].(CommitCAS).Change
	require.Empty(t, record.GetReplicaNodeIds(), "a rejoin leaves the replica set alone")
	require.Equal(t, map[uint64]uint64{2: 222}, record.GetReplicaStoreIds())
	require.Equal(t, uint64(11), record.GetExpectedEpoch())
	expect(t, m, accepted(m))
	require.False(t, m.Repairing())

	ch := m.Channel()
	require.Equal(t, []uint64{1, 2, 3}, ch.GetReplicaNodeIds())
	require.Equal(t, map[uint64]uint64{1: 101, 2: 222, 3: 303}, ch.GetReplicaStoreIds())
	require.Equal(t, uint64(12), ch.GetEpoch())
	require.Equal(t, stateActive, ch.GetState())
	require.Equal(t, uint64(1), ch.GetLeaderNodeId())

	expect(t, m, NodeDead{Node: 1}, "cas(c@12 state=ELECTING leader=0)")
	expectActions(t, m, accepted(m), LoadGroups{ChannelID: "c", GroupID: 7, Replicas: []uint64{1, 2, 3},
		Nodes: []uint64{2, 3}, Epoch: 13, StoreIDs: map[uint64]uint64{1: 101, 2: 222, 3: 303}})
}

// A rejoined replica that died while the record was in flight stays dead: the rejoin does not
// forget a death as a repair forgets the replica it replaced.
func TestRejoinKeepsADeathSeenMeanwhile(t *testing.T) {
	m := fxActiveRejoinRecord(t)
	expect(t, m, NodeDead{Node: 2})
	expect(t, m, accepted(m))
	require.Equal(t, []uint64{1, 3}, m.alive())
	refuse(t, m, Hibernate{}, ErrNotCaughtUp)
}

// Who cannot rejoin: the leader (it cannot take itself out of its group; an election has to
// move leadership first), a node outside the replica set, and a dead replica. Each refusal
// leaves the channel as it was, with nothing ordered.
func TestRejoinRefusals(t *testing.T) {
	for name, tc := range map[string]struct {
		fx   fixture
		node uint64
		err  error
	}{
		"leader":     {fxActive, 1, ErrRejoinLeader},
		"non-member": {fxActive, 4, ErrNotReplica},
		"dead":       {fxActive3Dead, 3, ErrNodeDead},
	} {
		t.Run(name, func(t *testing.T) {
			m := tc.fx(t)
			before := snapshot(m)
			require.Equal(t, []string{}, refuse(t, m, Repair{Dead: tc.node, With: tc.node}, tc.err))
			require.Equal(t, before, snapshot(m))
			require.False(t, m.Repairing())
		})
	}
}

// Replica 2's copy of the group failed (a corrupt entry); its store is the recorded one. The
// rejoin's join load discards the copy, and 2 answers with store 202 and reset: the rejoin goes
// through all four steps as for a replaced store, the leader's order carrying 202, and the
// record names 202 again (the CAS changes only the epoch). Answering with the recorded store
// and no reset, the node lost nothing: the rejoin is abandoned before raft is touched.
func TestScenarioRejoinResetCopy(t *testing.T) {
	m := fxActive(t)
	expect(t, m, Repair{Dead: 2, With: 2}, "cas(c@10)")
	expectActions(t, m, accepted(m),
		LoadGroups{ChannelID: "c", GroupID: 7, Replicas: []uint64{1, 2, 3}, Nodes: []uint64{1, 2, 3}, Epoch: 11, Join: true})
	expectActions(t, m, resetLoaded(11),
		ChangeReplicas{ChannelID: "c", Leader: 1, Add: 2, Remove: 2, AddStoreID: 202, Voters: []uint64{1, 2, 3}, Epoch: 11})
	acts, err := m.Step(ReplicasChanged{Epoch: 11, Status: votersSt(1, 2, 3)})
	require.NoError(t, err)
	require.Len(t, acts, 1)
	record := acts[0].(CommitCAS).Change
	require.Empty(t, record.GetReplicaNodeIds(), "a rejoin leaves the replica set alone")
	require.Equal(t, map[uint64]uint64{2: 202}, record.GetReplicaStoreIds())
	require.Equal(t, uint64(11), record.GetExpectedEpoch())
	expect(t, m, accepted(m))
	require.False(t, m.Repairing())
	ch := m.Channel()
	require.Equal(t, []uint64{1, 2, 3}, ch.GetReplicaNodeIds())
	require.Equal(t, recordedStores(), ch.GetReplicaStoreIds())
	require.Equal(t, uint64(12), ch.GetEpoch())
	require.Equal(t, stateActive, ch.GetState())
	require.Equal(t, uint64(1), ch.GetLeaderNodeId())

	m = fxActiveRejoinLoad(t)
	ev := resetLoaded(11)
	ev.Statuses[2].CopyReset = false
	require.Equal(t, []string{}, refuse(t, m, ev, ErrRepairFailed))
	require.False(t, m.Repairing())
	require.Equal(t, uint64(11), m.Channel().GetEpoch())
}

// The leader's copy failed: it cannot rejoin while it leads. CheckLeader asks it; a replica
// whose copy failed answers with an error for the group (no status), so the channel elects
// another leader from the others (the failed copy refuses the election's load), and the old
// leader then rejoins under the new one.
func TestScenarioFailedLeaderCopy(t *testing.T) {
	m := fxActive(t)
	refuse(t, m, Repair{Dead: 1, With: 1}, ErrRejoinLeader)
	expect(t, m, CheckLeader{}, "confirm(c@10 on 1 term>=5)")
	expect(t, m, ConfirmResult{Node: 1, Epoch: 10}, "cas(c@10 state=ELECTING leader=0)")
	expect(t, m, accepted(m), "load(c@11 on [1 2 3])")
	expect(t, m, GroupsLoaded{Epoch: 11, Statuses: map[uint64]*replicav1.GroupStatus{2: st(5, 100, 100), 3: st(5, 100, 100)},
		Errors: map[uint64]error{1: errTest}}, "cas(c@11 leader=2)")
	expect(t, m, accepted(m), "campaign(c@12 on 2)")
	expect(t, m, CampaignResult{Node: 2, Epoch: 12, Leader: true, Term: 6, Status: leaderSt(2, 6, 101, nil)},
		"cas(c@12 state=ACTIVE leader=2 term=6 seq=40)")
	expect(t, m, accepted(m))
	require.Equal(t, stateActive, m.State())

	expect(t, m, Repair{Dead: 1, With: 1}, "cas(c@13)")
	expect(t, m, accepted(m), "load(c@14 on [1 2 3] join [1 2 3])")
	ls := withStore(leaderSt(2, 6, 101, map[uint64]uint64{3: 101}), 202)
	ls.Voters = []uint64{1, 2, 3}
	reset := withStore(st(0, 0, 0), 101)
	reset.CopyReset = true
	expect(t, m, GroupsLoaded{Epoch: 14, Statuses: map[uint64]*replicav1.GroupStatus{1: reset, 2: ls, 3: st(6, 101, 101)}},
		"change(c@14 on 2 rejoin 1 store=101)")
	expect(t, m, ReplicasChanged{Epoch: 14, Status: votersSt(1, 2, 3)}, "cas(c@14 stores=map[1:101])")
	expect(t, m, accepted(m))
	require.False(t, m.Repairing())
}

// A leader check asked for while a repair runs (a client's stale Resolve, CheckLeader) runs
// when the repair ends, whether it completes or is abandoned; the waiter is answered then.
func TestLeaderCheckWaitsForTheRepair(t *testing.T) {
	m := fxActiveRejoinChange(t)
	expect(t, m, Resolve{Waiter: 9, At: t0, StaleLeader: 1})
	expect(t, m, ReplicasChanged{Epoch: 11, Status: votersSt(1, 2, 3)}, "cas(c@11 stores=map[2:222])")
	expect(t, m, accepted(m), "confirm(c@12 on 1 term>=5)")
	expect(t, m, ConfirmResult{Node: 1, Epoch: 12, Status: leaderSt(1, 5, 100, nil)}, "answer(c [9] leader=1 term=5 epoch=12)")

	m = fxActiveRejoinChange(t)
	expect(t, m, CheckLeader{})
	acts := refuse(t, m, ReplicasChanged{Epoch: 11, Err: errTest}, ErrRepairFailed)
	require.Equal(t, []string{"confirm(c@11 on 1 term>=5)"}, acts)
}

// A replica that reports no store id (one older than store identity) can be admitted by none
// and recorded with none: the repair, or the rejoin, is abandoned before raft is touched, and
// the channel stays active under its leader.
func TestRepairAbandonedWithoutStoreID(t *testing.T) {
	m := fxActiveRepairLoad(t)
	ev := repairLoaded(11)
	ev.Statuses[4].StoreId = 0
	require.Equal(t, []string{}, refuse(t, m, ev, ErrRepairFailed))
	require.False(t, m.Repairing())
	require.Equal(t, stateActive, m.State())
	require.Equal(t, []uint64{1, 2, 3}, m.Channel().GetReplicaNodeIds())

	m = fxActiveRejoinLoad(t)
	ev = rejoinLoaded(11)
	ev.Statuses[2].StoreId = 0
	require.Equal(t, []string{}, refuse(t, m, ev, ErrRepairFailed))
	require.False(t, m.Repairing())
	// Ordered again later, it starts over from the claim.
	expect(t, m, Repair{Dead: 2, With: 2}, "cas(c@11)")
}

// An activation that takes longer than HibernateAfter (a loaded machine) must not make the
// channel idle the moment it is active: the clients it answers have not had a chance to send.
// Before the result carried its time, the first IdleTimeout after activation started the
// hibernation, so a slow activation and the client's retry could chase each other forever
// (TestIdleChannelsHibernateAndWake hung this way under load).
func TestScenarioSlowActivationIsNotIdleOnArrival(t *testing.T) {
	m := newMachine(t, channel(stateHibernated, 10, 1, 5))
	expect(t, m, Resolve{Waiter: 1, At: t0}, "cas(c@10 state=ACTIVATING leader=0)")
	expect(t, m, accepted(m), "load(c@11 on [1 2 3])")
	expect(t, m, GroupsLoaded{Epoch: 11, Statuses: map[uint64]*replicav1.GroupStatus{
		1: st(5, 100, 100), 2: st(5, 100, 100), 3: st(5, 100, 100)}}, "cas(c@11 leader=1)")
	expect(t, m, accepted(m), "campaign(c@12 on 1)")
	expect(t, m, CampaignResult{Node: 1, Epoch: 12, Leader: true, Term: 6}, "confirm(c@12 on 1 term>=6)")
	expect(t, m, ConfirmResult{Node: 1, Epoch: 12, Status: leaderSt(1, 6, 101, map[uint64]uint64{2: 101, 3: 101})},
		"cas(c@12 state=ACTIVE leader=1 term=6 seq=40)")
	settled := t0.Add(3 * time.Minute) // longer than HibernateAfter (2 minutes) after the resolve
	res := accepted(m).(CASResult)
	res.At = settled
	expect(t, m, res, "answer(c [1] leader=1 term=6 epoch=13)")
	require.Equal(t, stateActive, m.State())

	require.Empty(t, refuse(t, m, IdleTimeout{Now: settled.Add(time.Second)}, ErrNotIdle))
	expect(t, m, IdleTimeout{Now: settled.Add(testCfg.HibernateAfter)}, "query(c@13 on [1 2 3])")
}

// A refused CAS that adopts an active record answers the waiters with it: that too starts the
// idle clock anew.
func TestScenarioAdoptedActiveRecordIsNotIdleOnArrival(t *testing.T) {
	m := newMachine(t, channel(stateHibernated, 10, 1, 5))
	expect(t, m, Resolve{Waiter: 1, At: t0}, "cas(c@10 state=ACTIVATING leader=0)")
	adopted := t0.Add(3 * time.Minute)
	res := refusedStale(channel(stateActive, 14, 2, 6)).(CASResult)
	res.At = adopted
	require.Equal(t, []string{"answer(c [1] leader=2 term=6 epoch=14)"}, refuse(t, m, res, ErrCASRefused))
	require.Empty(t, refuse(t, m, IdleTimeout{Now: adopted.Add(time.Second)}, ErrNotIdle))
}

// Issue 13, item 4: a leader check whose call failed (the leader overloaded, a timeout) says
// nothing about leadership. It used to arrive as a status that does not lead and start an
// election: the churn the design rules out. Now the waiters fail (they retry), the leader
// stays, and only unknownVerifyLimit unknown checks in a row, with no answer between them,
// count as a leader that cannot serve.
func TestScenarioFailedLeaderCheckIsUnknownNotDeposed(t *testing.T) {
	m := newMachine(t, channel(stateActive, 10, 1, 5))
	overloaded := fmt.Errorf("rpc error: code = Unavailable desc = overloaded")
	for i := range unknownVerifyLimit - 1 {
		expect(t, m, Resolve{Waiter: uint64(i + 1), At: t0, StaleLeader: 1}, "confirm(c@10 on 1 term>=5)")
		require.Equal(t, []string{fmt.Sprintf("fail(c [%d])", i+1)},
			refuse(t, m, ConfirmResult{Node: 1, Epoch: 10, Err: overloaded}, ErrLeaderUnknown))
		require.Equal(t, stateActive, m.State())
		require.Equal(t, uint64(1), m.Channel().GetLeaderNodeId())
		require.False(t, m.Busy())
	}
	// An answer in between resets the count.
	expect(t, m, Resolve{Waiter: 10, At: t0, StaleLeader: 1}, "confirm(c@10 on 1 term>=5)")
	expect(t, m, ConfirmResult{Node: 1, Epoch: 10, Status: leaderSt(1, 5, 100, nil)}, "answer(c [10] leader=1 term=5 epoch=10)")
	for i := range unknownVerifyLimit - 1 {
		expect(t, m, Resolve{Waiter: uint64(20 + i), At: t0, StaleLeader: 1}, "confirm(c@10 on 1 term>=5)")
		refuse(t, m, ConfirmResult{Node: 1, Epoch: 10, Err: overloaded}, ErrLeaderUnknown)
		require.Equal(t, stateActive, m.State())
	}
	// The limit reached: a leader nobody could check that many times in a row is replaced.
	expect(t, m, Resolve{Waiter: 30, At: t0, StaleLeader: 1}, "confirm(c@10 on 1 term>=5)")
	expect(t, m, ConfirmResult{Node: 1, Epoch: 10, Err: overloaded}, "cas(c@10 state=ELECTING leader=0)")
}

// A node that answered but does not lead (or no longer has the group) is a definite answer:
// the election starts at once, as before.
func TestScenarioLeaderCheckAnsweredNotLeadingElects(t *testing.T) {
	m := newMachine(t, channel(stateActive, 10, 1, 5))
	expect(t, m, Resolve{Waiter: 1, At: t0, StaleLeader: 1}, "confirm(c@10 on 1 term>=5)")
	expect(t, m, ConfirmResult{Node: 1, Epoch: 10, Status: st(5, 100, 100)}, "cas(c@10 state=ELECTING leader=0)")
}

// An operator's Activate that arrives while the channel is still hibernating (the arbiter
// already shows it hibernated, the machine has not yet seen the result) must not be lost: the
// channel activates as soon as it is hibernated. It used to be dropped, since only waiting
// clients restarted an activation, and the instruction had been answered as taken
// (TestInstructMovesHibernatesAndActivates failed this way on a loaded machine).
func TestScenarioActivateDuringHibernationIsNotLost(t *testing.T) {
	for _, fx := range []string{"hibernating/claim", "hibernating/unload", "hibernating/rest"} {
		t.Run(fx, func(t *testing.T) {
			m := fixtures[fx](t)
			expect(t, m, Activate{})
			require.Equal(t, stateHibernating, m.State())
			if fx == "hibernating/claim" {
				expect(t, m, accepted(m), "unload(c@11 on [1 2 3])")
			}
			if fx != "hibernating/rest" {
				expect(t, m, UnloadResult{Epoch: 11, Unloaded: []uint64{1, 2, 3}}, "cas(c@11 state=HIBERNATED seq=40)")
			}
			expect(t, m, accepted(m), "cas(c@12 state=ACTIVATING leader=0)")
		})
	}
}
