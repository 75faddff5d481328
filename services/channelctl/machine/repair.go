package machine

import (
	"fmt"
	"slices"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// Replica-set repair, in four steps while the channel stays active under its leader:
//
//  1. claim: a CAS (reason "replace D with W") that fences a channelctl that lost the slot
//     before it touches raft, and names the set raft moves to as the channel's next replica
//     set, so that a repair cut short after step 3 leaves a record naming raft's voters;
//  2. load the group on W with join (it starts empty and learns from the leader), and on
//     the other live replicas so that they learn W's address; W's answer names its store;
//  3. ChangeReplicas on the leader: W is added as a learner (the change carries W's store,
//     which admits it), promoted once it holds the whole log, and D is removed;
//  4. record the new replica set in the arbiter, with W's store.
//
// Raft's configuration changes before the arbiter's record, never after: a replica the arbiter
// lists must have the group's data, or a later load without join would bootstrap it with a
// history of its own. A repair cut short after step 3 leaves raft ahead of the record's replica
// set but not of its next set: elections and loads use both sets until a leader found applying
// the next set rolls the record forward (doc.go, "Joint replica sets"). A repair ordered while
// the record is joint either is the same repair (it resumes, every step skipping what is done)
// or waits until the record is reconciled with raft (reconcile.go): it never overwrites a next
// set raft may hold. The repair names the whole voter set it wants, and the leader removes
// whatever else it finds (an extra voter or learner) once the new replica votes.
//
// A rejoin (D == W) runs the same four steps for a live replica X that no longer holds the
// votes and log raft's configuration counts on it for: either its node registered a store
// other than the one the record names for it (its disk was wiped or replaced), or its copy of
// the group failed there (a corrupt entry) and the join load of step 2 discarded it, which X
// answers with the recorded store and reset set. Either way every load that is not a join is
// refused there. Step 3 is one order with add == remove: the leader takes X out of the
// configuration, adds it back as a learner with the store X answered with, and promotes it once
// it caught up. The replica set stays as it is; step 4 records that store (for a reset copy the
// one already recorded: the CAS changes nothing but the epoch, and keeps the rejoin's steps the
// same in both cases), after which X's loads are accepted again. A rejoin whose node answers
// with the recorded store and no reset is abandoned: X lost nothing, and taking it out of the
// configuration would only cost a catch-up.
//
// The leader cannot rejoin (ErrRejoinLeader): it would have to take itself out of its own
// group. A leader whose copy failed does not serve the group any more, so CheckLeader (or the
// first client it turns away) has it checked, which finds it not leading and elects another
// replica; it rejoins after that.

// beginRepair starts replacing e.Dead by e.With, or rejoining e.Dead when both are the same.
func (m *Machine) beginRepair(e Repair) ([]Action, error) {
	leader := m.ch.GetLeaderNodeId()
	rejoin := e.Dead == e.With
	switch {
	case m.phase != phaseIdle:
		return nil, m.refuse(ErrBusy, "repair while %s is in flight", m.phase)
	case !m.isMember(e.Dead):
		return nil, m.refuse(ErrNotReplica, "repair of %d, replicas %v", e.Dead, m.members())
	case rejoin && e.Dead == leader:
		return nil, m.refuse(ErrRejoinLeader, "rejoin of %d", e.Dead)
	case rejoin && m.dead[e.Dead]:
		return nil, m.refuse(ErrNodeDead, "rejoin of %d", e.Dead)
	case !rejoin && !m.dead[e.Dead]:
		return nil, m.refuse(ErrNotDead, "repair of %d", e.Dead)
	case e.Dead == leader || m.dead[leader]:
		return nil, m.refuse(ErrNodeDead, "repair needs a live leader, leader is %d", leader)
	case !rejoin && (e.With == 0 || m.isMember(e.With)):
		return nil, m.refuse(ErrInvalidReplicaSet, "repair with %d, replicas %v", e.With, m.members())
	case m.joint() && !sameSet(replaced(m.ch.GetReplicaNodeIds(), e.Dead, e.With), m.next()):
		// Another repair (or a rejoin) would overwrite a next set that raft may already
		// apply; the same repair ordered again resumes it instead.
		return m.refuseJoint(fmt.Sprintf("repair of %d with %d", e.Dead, e.With))
	}
	m.clearWork()
	m.repairDead, m.repairWith = e.Dead, e.With
	m.reason = fmt.Sprintf("replace dead replica %d with %d", e.Dead, e.With)
	if rejoin {
		m.reason = fmt.Sprintf("rejoin replica %d, whose store was replaced or whose copy failed (recorded store %d)",
			e.Dead, m.ch.GetReplicaStoreIds()[e.Dead])
	}
	m.phase = phaseRepairClaim
	claim := &arbiterv1.ChannelChange{}
	if !rejoin {
		// The record names the set raft moves to before raft moves: an election meanwhile
		// needs a majority of both sets, whichever raft ends up with (see doc.go).
		claim.NextReplicaNodeIds = m.repairedSet()
	}
	return []Action{m.cas(claim)}, nil
}

// rejoining reports whether the repair in progress is a rejoin.
func (m *Machine) rejoining() bool { return m.repairDead != 0 && m.repairDead == m.repairWith }

// repairedSet is the replica set with the dead replica replaced in place (the same set for a
// rejoin).
func (m *Machine) repairedSet() []uint64 {
	return replaced(m.ch.GetReplicaNodeIds(), m.repairDead, m.repairWith)
}

// replaced is set with dead replaced in place by with.
func replaced(set []uint64, dead, with uint64) []uint64 {
	set = slices.Clone(set)
	for i, r := range set {
		if r == dead {
			set[i] = with
		}
	}
	return set
}

// stepRepair handles the repair's results in the active state.
func (m *Machine) stepRepair(ev Event) ([]Action, error) {
	leader := m.ch.GetLeaderNodeId()
	switch e := ev.(type) {
	case CASResult:
		// Step matched the result to the CAS in flight, which only the claim and the record
		// phases have.
		if m.dead[leader] {
			// The leader died while the CAS was in flight; the election comes first.
			return m.beginElecting(fmt.Sprintf("leader %d dead", leader)), nil
		}
		if m.phase == phaseRepairRecord {
			if !m.rejoining() {
				// A rejoined replica is alive; it may have died meanwhile, which stays known.
				delete(m.dead, m.repairDead)
			}
			m.endRepair()
			return m.doneChecking(), nil
		}
		set := m.repairedSet()
		nodes := slices.DeleteFunc(slices.Clone(set), func(n uint64) bool { return m.dead[n] })
		slices.Sort(nodes)
		m.phase = phaseRepairLoad
		// A join load names no store: the joining replica has none recorded yet (or, for a
		// rejoin, one that is not its own), and the others ignore join where they hold the
		// group.
		return []Action{LoadGroups{ChannelID: m.ch.GetChannelId(), GroupID: m.ch.GetGroupId(), Replicas: set,
			Nodes: nodes, Epoch: m.ch.GetEpoch(), Join: true}}, nil
	case GroupsLoaded:
		if m.phase != phaseRepairLoad {
			return nil, m.unexpected(ev)
		}
		if e.Epoch != m.ch.GetEpoch() {
			return nil, m.staleEpoch(ev, e.Epoch)
		}
		if e.Statuses[leader] == nil {
			return m.abandonRepair(fmt.Sprintf("leader %d did not load: %v", leader, e.Errors[leader]))
		}
		ws := e.Statuses[m.repairWith]
		if ws == nil {
			return m.abandonRepair(fmt.Sprintf("node %d did not load the group: %v", m.repairWith, e.Errors[m.repairWith]))
		}
		store := ws.GetStoreId()
		if store == 0 {
			// A replica that names no store cannot be admitted by it, nor recorded.
			return m.abandonRepair(fmt.Sprintf("node %d reports no store id (a replica too old for store identity)", m.repairWith))
		}
		if recorded := m.ch.GetReplicaStoreIds()[m.repairWith]; m.rejoining() && store == recorded && !ws.GetCopyReset() {
			// The node holds the store the record names and its copy was not reset: it lost
			// nothing, and taking it out of the configuration would only cost a catch-up. A
			// reset copy (it failed there, and this join discarded it) holds the recorded store
			// but not the log: it rejoins with that store.
			return m.abandonRepair(fmt.Sprintf("node %d holds store %d, the recorded one, and its copy was not reset: nothing to rejoin", m.repairWith, store))
		}
		m.repairStore = store
		want := m.repairedSet()
		slices.Sort(want)
		m.phase = phaseRepairChange
		return []Action{ChangeReplicas{ChannelID: m.ch.GetChannelId(), Leader: leader, Add: m.repairWith,
			Remove: m.repairDead, AddStoreID: store, Voters: want, Epoch: m.ch.GetEpoch()}}, nil
	case ReplicasChanged:
		if m.phase != phaseRepairChange {
			return nil, m.unexpected(ev)
		}
		if e.Epoch != m.ch.GetEpoch() {
			return nil, m.staleEpoch(ev, e.Epoch)
		}
		if e.Err != nil {
			return m.abandonRepair(fmt.Sprintf("change on leader %d: %v", leader, e.Err))
		}
		want := m.repairedSet()
		slices.Sort(want)
		if got := e.Status.GetVoters(); !slices.Equal(got, want) {
			return m.abandonRepair(fmt.Sprintf("leader %d reports voters %v, want %v", leader, got, want))
		}
		m.phase = phaseRepairRecord
		change := &arbiterv1.ChannelChange{ReplicaStoreIds: map[uint64]uint64{m.repairWith: m.repairStore}}
		if !m.rejoining() {
			change.ReplicaNodeIds = m.repairedSet()
		}
		return []Action{m.cas(change)}, nil
	}
	return nil, m.unexpected(ev)
}

// abandonRepair gives the repair up, leaving the channel active; the driver orders it again
// later, and the steps already done are skipped then.
func (m *Machine) abandonRepair(why string) ([]Action, error) {
	err := m.refuse(ErrRepairFailed, "%s", why)
	m.endRepair()
	return m.doneChecking(), err
}

// endRepair forgets the repair but not a leader check asked for meanwhile (a client's stale
// Resolve, CheckLeader): doneChecking runs it next, and the waiters it holds are answered then.
func (m *Machine) endRepair() {
	wanted := m.verifyWanted
	m.clearWork()
	m.verifyWanted = wanted
}

func (m *Machine) repairing() bool {
	return m.phase >= phaseRepairClaim && m.phase <= phaseRepairRecord
}
