package machine

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// Fixtures put a machine in one state and phase by scripting it from a record, checking every
// step on the way, so each fixture is also a small scenario. Test channel "c": group 7,
// replicas 1, 2, 3, epoch 10, last leader 1 in term 5.

type fixture func(t testing.TB) *Machine

var fixtures = map[string]fixture{
	"hibernated":              fxHibernated,
	"activating/claim":        fxActivatingClaim,
	"activating/gather":       fxActivatingGather,
	"activating/decide":       fxActivatingDecide,
	"activating/campaign":     fxActivatingCampaign,
	"activating/confirm":      fxActivatingConfirm,
	"activating/settle":       fxActivatingSettle,
	"activating/stalled":      fxActivatingStalled,
	"active":                  fxActive,
	"active/idle-check":       fxActiveIdleCheck,
	"active/move-check":       fxActiveMoveCheck,
	"active/verify":           fxActiveVerify,
	"active/3-dead":           fxActive3Dead,
	"active/repair-claim":     fxActiveRepairClaim,
	"active/repair-load":      fxActiveRepairLoad,
	"active/repair-change":    fxActiveRepairChange,
	"active/repair-record":    fxActiveRepairRecord,
	"active/rejoin-claim":     fxActiveRejoinClaim,
	"active/rejoin-load":      fxActiveRejoinLoad,
	"active/rejoin-change":    fxActiveRejoinChange,
	"active/rejoin-record":    fxActiveRejoinRecord,
	"active/reconcile-claim":  fxActiveReconcileClaim,
	"active/reconcile-check":  fxActiveReconcileCheck,
	"active/reconcile-clear":  fxActiveReconcileClear,
	"active/reconcile-unload": fxActiveReconcileUnload,
	"electing/claim":          fxElectingClaim,
	"electing/gather":         fxElectingGather,
	"electing/decide":         fxElectingDecide,
	"electing/campaign":       fxElectingCampaign,
	"electing/confirm":        fxElectingConfirm,
	"electing/settle":         fxElectingSettle,
	"electing/transfer":       fxElectingTransfer,
	"electing/stalled":        fxElectingStalled,
	"hibernating/claim":       fxHibernatingClaim,
	"hibernating/unload":      fxHibernatingUnload,
	"hibernating/rest":        fxHibernatingRest,
	"hibernating/stalled":     fxHibernatingStalled,
	"hibernating/resolved":    fxHibernatingResolved,
}

func expect(t testing.TB, m *Machine, ev Event, want ...string) *Machine {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	require.Equal(t, want, step(t, m, ev), "%T", ev)
	return m
}

// expectActions is expect comparing the actions themselves, for the fields their compact
// String form leaves out (a load's group and voters).
func expectActions(t testing.TB, m *Machine, ev Event, want ...Action) *Machine {
	t.Helper()
	acts, err := m.Step(ev)
	require.NoError(t, err, "%T", ev)
	require.Equal(t, want, acts, "%T", ev)
	return m
}

func fxHibernated(t testing.TB) *Machine {
	return newMachine(t, channel(stateHibernated, 10, 1, 5))
}

func fxActivatingClaim(t testing.TB) *Machine {
	m := fxHibernated(t)
	return expect(t, m, Resolve{Waiter: 1, At: t0}, "cas(c@10 state=ACTIVATING leader=0)")
}

func fxActivatingGather(t testing.TB) *Machine {
	m := fxActivatingClaim(t)
	return expectActions(t, m, accepted(m),
		LoadGroups{ChannelID: "c", GroupID: 7, Replicas: []uint64{1, 2, 3}, Nodes: []uint64{1, 2, 3}, Epoch: 11,
			StoreIDs: recordedStores()})
}

func fxActivatingDecide(t testing.TB) *Machine {
	m := fxActivatingGather(t)
	return expect(t, m, GroupsLoaded{Epoch: 11, Statuses: map[uint64]*replicav1.GroupStatus{
		1: st(5, 100, 100), 2: st(5, 100, 100), 3: st(5, 100, 100)}}, "cas(c@11 leader=1)")
}

func fxActivatingCampaign(t testing.TB) *Machine {
	m := fxActivatingDecide(t)
	return expect(t, m, accepted(m), "campaign(c@12 on 1)")
}

func fxActivatingConfirm(t testing.TB) *Machine {
	m := fxActivatingCampaign(t)
	return expect(t, m, CampaignResult{Node: 1, Epoch: 12, Leader: true, Term: 6}, "confirm(c@12 on 1 term>=6)")
}

func fxActivatingSettle(t testing.TB) *Machine {
	m := fxActivatingConfirm(t)
	return expect(t, m, ConfirmResult{Node: 1, Epoch: 12, Status: leaderSt(1, 6, 101, map[uint64]uint64{2: 101, 3: 101})},
		"cas(c@12 state=ACTIVE leader=1 term=6 seq=40)")
}

func fxActivatingStalled(t testing.TB) *Machine {
	return newMachine(t, channel(stateActivating, 10, 0, 5))
}

func fxActive(t testing.TB) *Machine {
	return newMachine(t, channel(stateActive, 10, 1, 5))
}

func fxActiveIdleCheck(t testing.TB) *Machine {
	m := fxActive(t)
	return expect(t, m, IdleTimeout{Now: t0.Add(3 * time.Minute)}, "query(c@10 on [1 2 3])")
}

func fxActiveMoveCheck(t testing.TB) *Machine {
	m := fxActive(t)
	return expect(t, m, MoveLeader{Target: 2}, "query(c@10 on [1 2])")
}

func fxActiveVerify(t testing.TB) *Machine {
	m := fxActive(t)
	return expect(t, m, Resolve{Waiter: 1, At: t0, StaleLeader: 1}, "confirm(c@10 on 1 term>=5)")
}

func fxActive3Dead(t testing.TB) *Machine {
	m := fxActive(t)
	return expect(t, m, NodeDead{Node: 3})
}

// Replica 3 is replaced by 4; the claim takes epoch 11.
func fxActiveRepairClaim(t testing.TB) *Machine {
	m := fxActive3Dead(t)
	return expect(t, m, Repair{Dead: 3, With: 4}, "cas(c@10 next=[1 2 4])")
}

func fxActiveRepairLoad(t testing.TB) *Machine {
	m := fxActiveRepairClaim(t)
	return expect(t, m, accepted(m), "load(c@11 on [1 2 4] join [1 2 4])")
}

// A joint record (next 1, 2, 4) is reconciled before a move; the claim takes epoch 11.
func fxActiveReconcileClaim(t testing.TB) *Machine {
	m := newMachine(t, jointChannel(stateActive, 10, 1, 5))
	if _, err := m.Step(MoveLeader{Target: 2}); !errors.Is(err, ErrBusy) {
		t.Fatalf("move while joint: %v, want ErrBusy", err)
	}
	return m
}

func fxActiveReconcileCheck(t testing.TB) *Machine {
	m := fxActiveReconcileClaim(t)
	return expect(t, m, accepted(m), "load(c@11 on [1 2 3 4] joining [4])")
}

// The leader applies the record's set with nothing pending: the next set is cleared.
func fxActiveReconcileClear(t testing.TB) *Machine {
	m := fxActiveReconcileCheck(t)
	return expect(t, m, GroupsLoaded{Epoch: 11, Statuses: map[uint64]*replicav1.GroupStatus{
		1: withVoters(leaderSt(1, 5, 100, nil), []uint64{1, 2, 3})}}, "cas(c@11 next=none)")
}

func fxActiveReconcileUnload(t testing.TB) *Machine {
	m := fxActiveReconcileClear(t)
	return expect(t, m, accepted(m), "unload(c@12 on [4])")
}

// withStore is s reporting store id.
func withStore(s *replicav1.GroupStatus, store uint64) *replicav1.GroupStatus {
	s.StoreId = store
	return s
}

// repairLoaded is the join load answered by the leader (voters 1, 2, 3), 2 and the new node 4,
// whose store is 404.
func repairLoaded(epoch uint64) GroupsLoaded {
	ls := withStore(leaderSt(1, 5, 100, map[uint64]uint64{2: 100}), 101)
	ls.Voters = []uint64{1, 2, 3}
	return GroupsLoaded{Epoch: epoch, Statuses: map[uint64]*replicav1.GroupStatus{1: ls,
		2: withStore(st(5, 100, 100), 202), 4: withStore(st(0, 0, 0), 404)}}
}

func fxActiveRepairChange(t testing.TB) *Machine {
	m := fxActiveRepairLoad(t)
	return expect(t, m, repairLoaded(11), "change(c@11 on 1 +4 -3 store=404)")
}

// votersSt is the leader's status after a change, with voters.
func votersSt(voters ...uint64) *replicav1.GroupStatus {
	s := leaderSt(1, 5, 103, nil)
	s.Voters = voters
	return s
}

func fxActiveRepairRecord(t testing.TB) *Machine {
	m := fxActiveRepairChange(t)
	return expect(t, m, ReplicasChanged{Epoch: 11, Status: votersSt(1, 2, 4)}, "cas(c@11 replicas=[1 2 4] stores=map[4:404])")
}

// Replica 2 is alive, but its node registered store 222 while the record names 202 (its disk
// was wiped): it rejoins; the claim takes epoch 11.
func fxActiveRejoinClaim(t testing.TB) *Machine {
	m := fxActive(t)
	return expect(t, m, Repair{Dead: 2, With: 2}, "cas(c@10)")
}

func fxActiveRejoinLoad(t testing.TB) *Machine {
	m := fxActiveRejoinClaim(t)
	return expectActions(t, m, accepted(m),
		LoadGroups{ChannelID: "c", GroupID: 7, Replicas: []uint64{1, 2, 3}, Nodes: []uint64{1, 2, 3}, Epoch: 11, Join: true})
}

// rejoinLoaded is the rejoin's join load: the leader (voters 1, 2, 3), 3, and 2 empty again
// with its new store 222.
func rejoinLoaded(epoch uint64) GroupsLoaded {
	ls := withStore(leaderSt(1, 5, 100, map[uint64]uint64{3: 100}), 101)
	ls.Voters = []uint64{1, 2, 3}
	return GroupsLoaded{Epoch: epoch, Statuses: map[uint64]*replicav1.GroupStatus{1: ls,
		2: withStore(st(0, 0, 0), 222), 3: withStore(st(5, 100, 100), 303)}}
}

// resetLoaded is the join load of a rejoin of node 2 whose copy of the group failed there: it
// answers with its store, the recorded 202, and reset (the join discarded its copy).
func resetLoaded(epoch uint64) GroupsLoaded {
	ev := rejoinLoaded(epoch)
	ev.Statuses[2].StoreId, ev.Statuses[2].CopyReset = 202, true
	return ev
}

func fxActiveRejoinChange(t testing.TB) *Machine {
	m := fxActiveRejoinLoad(t)
	return expectActions(t, m, rejoinLoaded(11),
		ChangeReplicas{ChannelID: "c", Leader: 1, Add: 2, Remove: 2, AddStoreID: 222, Voters: []uint64{1, 2, 3}, Epoch: 11})
}

func fxActiveRejoinRecord(t testing.TB) *Machine {
	m := fxActiveRejoinChange(t)
	return expect(t, m, ReplicasChanged{Epoch: 11, Status: votersSt(1, 2, 3)}, "cas(c@11 stores=map[2:222])")
}

func fxElectingClaim(t testing.TB) *Machine {
	m := fxActive(t)
	return expect(t, m, NodeDead{Node: 1}, "cas(c@10 state=ELECTING leader=0)")
}

func fxElectingGather(t testing.TB) *Machine {
	m := fxElectingClaim(t)
	// The failover loads the group on the survivors only, but with the whole replica set as its
	// voters (and so their current addresses): a survivor that restarted or hibernated the group
	// gets it back, one that holds it answers with its status.
	return expectActions(t, m, accepted(m),
		LoadGroups{ChannelID: "c", GroupID: 7, Replicas: []uint64{1, 2, 3}, Nodes: []uint64{2, 3}, Epoch: 11,
			StoreIDs: recordedStores()})
}

func fxElectingDecide(t testing.TB) *Machine {
	m := fxElectingGather(t)
	return expect(t, m, GroupsLoaded{Epoch: 11, Statuses: map[uint64]*replicav1.GroupStatus{
		2: st(5, 100, 100), 3: st(5, 90, 90)}}, "cas(c@11 leader=2)")
}

func fxElectingCampaign(t testing.TB) *Machine {
	m := fxElectingDecide(t)
	return expect(t, m, accepted(m), "campaign(c@12 on 2)")
}

func fxElectingConfirm(t testing.TB) *Machine {
	m := fxElectingCampaign(t)
	return expect(t, m, CampaignResult{Node: 2, Epoch: 12, Leader: true, Term: 6}, "confirm(c@12 on 2 term>=6)")
}

func fxElectingSettle(t testing.TB) *Machine {
	m := fxElectingConfirm(t)
	return expect(t, m, ConfirmResult{Node: 2, Epoch: 12, Status: leaderSt(2, 6, 101, map[uint64]uint64{3: 101})},
		"cas(c@12 state=ACTIVE leader=2 term=6 seq=40)")
}

func fxElectingTransfer(t testing.TB) *Machine {
	m := fxActiveMoveCheck(t)
	expect(t, m, PositionsReported{Epoch: 10, Statuses: caughtUp()}, "cas(c@10 state=ELECTING leader=2)")
	return expect(t, m, accepted(m), "transfer(c@11 1->2)")
}

func fxElectingStalled(t testing.TB) *Machine {
	return newMachine(t, channel(stateElecting, 10, 0, 5))
}

func fxHibernatingClaim(t testing.TB) *Machine {
	m := fxActiveIdleCheck(t)
	return expect(t, m, PositionsReported{Epoch: 10, Statuses: caughtUp()}, "cas(c@10 state=HIBERNATING)")
}

func fxHibernatingUnload(t testing.TB) *Machine {
	m := fxHibernatingClaim(t)
	return expect(t, m, accepted(m), "unload(c@11 on [1 2 3])")
}

func fxHibernatingRest(t testing.TB) *Machine {
	m := fxHibernatingUnload(t)
	return expect(t, m, UnloadResult{Epoch: 11, Unloaded: []uint64{1, 2, 3}}, "cas(c@11 state=HIBERNATED seq=40)")
}

func fxHibernatingStalled(t testing.TB) *Machine {
	return newMachine(t, channel(stateHibernating, 10, 1, 5))
}

// fxHibernatingResolved: a client resolved while the unload was in flight.
func fxHibernatingResolved(t testing.TB) *Machine {
	m := fxHibernatingRest(t)
	return expect(t, m, Resolve{Waiter: 9, At: t0.Add(4 * time.Minute)})
}

// refusedStale is the arbiter refusing for a stale epoch and sending its current record.
func refusedStale(ch *arbiterv1.Channel) Event {
	return CASResult{Refusal: RefusedStaleEpoch, Channel: ch, Reason: "stale epoch"}
}

func refusedNotOwner(ch *arbiterv1.Channel) Event {
	return CASResult{Refusal: RefusedNotOwner, Channel: ch, Reason: "slot 3 not owned by channelctl 100"}
}
