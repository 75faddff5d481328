package machine

import (
	"fmt"
	"slices"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// Reconciling a joint record with raft. A repair cut short leaves the record joint (a next
// replica set N beside the replica set R) until something shows which of the two raft applies.
// Elections and the idle check roll the record forward when they find N applied (doc.go, "Joint
// replica sets"), but two cases were left without an end:
//
//   - a second repair (another replacement, or a rejoin) would overwrite N while raft may hold
//     it, leaving a record that names neither raft's voters nor the set raft moves to;
//   - a next set whose change never reached raft (the repair failed before ChangeReplicas, or
//     its new replica died) stayed forever when nobody ordered that repair again: loads went to
//     its stray joiners, and the channel could never hibernate, since a joiner that raft never
//     added cannot hold the log.
//
// So any work that would act on one of the two sets (a repair naming another set, a rejoin, a
// move, hibernation) first reconciles the record, in three steps while the channel stays active:
//
//  1. claim: a CAS that changes nothing but the epoch;
//  2. load the group on the live replicas of both sets under that epoch (as a join where only
//     the next set lists one). The load raises the leader's epoch fence, so from then on it
//     refuses every step of a ChangeReplicas ordered under an older epoch (each conf change is
//     checked against the fence when it is proposed, see replica.Engine.ChangeReplicas), and
//     answers with the leader's status;
//  3. decide from that status: N applied rolls the record forward (beginRoll); R applied with
//     the whole log applied (nothing proposed is pending, a conf change included) clears N, and
//     the joiners N listed unload the group they were loaded with; anything else (the leader in
//     the middle of a change, or behind its own log) leaves the record as it is, and the work
//     is refused as busy, to be ordered again.
//
// Clearing needs step 2's fence: without it, a ChangeReplicas of the abandoned repair that was
// still running on the leader (its caller timed out, the leader went on waiting for the new
// replica) could move raft to N after the record stopped naming N, which is the divergence this
// exists to end. What the fence cannot cover is a conf change proposed in the instant between
// its check and the status the load answers with; raft's safety does not depend on the record
// (it only steers which replica is asked to campaign), and the next repair's ChangeReplicas
// names the voters it wants and removes any other.

// beginReconcile claims the reconciliation of a joint record; why says what asked for it.
func (m *Machine) beginReconcile(why string) Action {
	wanted := m.verifyWanted
	m.clearWork()
	m.verifyWanted = wanted
	m.reason = fmt.Sprintf("reconcile replicas %v (next %v) with raft: %s", m.members(), m.next(), why)
	m.phase = phaseReconcileClaim
	return m.cas(&arbiterv1.ChannelChange{})
}

// refuseJoint answers work that must wait for the record's reconciliation: it starts it and
// refuses the work as busy, for the driver to order again.
func (m *Machine) refuseJoint(what string) ([]Action, error) {
	return []Action{m.beginReconcile(what)}, m.refuse(ErrBusy, "%s while replicas %v change to %v: reconciling the record with raft first",
		what, m.members(), m.next())
}

func (m *Machine) reconciling() bool {
	return m.phase >= phaseReconcileClaim && m.phase <= phaseReconcileUnload
}

// stepReconcile handles the reconciliation's results in the active state.
func (m *Machine) stepReconcile(ev Event) ([]Action, error) {
	leader := m.ch.GetLeaderNodeId()
	switch e := ev.(type) {
	case CASResult:
		if m.dead[leader] {
			return m.beginElecting(fmt.Sprintf("leader %d dead", leader)), nil
		}
		if m.phase == phaseReconcileClear {
			if len(m.strays) == 0 {
				return m.doneChecking(), nil
			}
			m.phase = phaseReconcileUnload
			return []Action{Unload{ChannelID: m.ch.GetChannelId(), Nodes: m.strays, Epoch: m.ch.GetEpoch()}}, nil
		}
		m.phase = phaseReconcileCheck
		// The leader's answer decides; the others' fence them too, and a joiner's names the
		// store a roll-forward records for it.
		return []Action{m.loadUnion()}, nil
	case GroupsLoaded:
		if m.phase != phaseReconcileCheck {
			return nil, m.unexpected(ev)
		}
		if e.Epoch != m.ch.GetEpoch() {
			return nil, m.staleEpoch(ev, e.Epoch)
		}
		st := e.Statuses[leader]
		switch {
		case st == nil:
			acts := m.doneChecking()
			return acts, m.refuse(ErrLeaderUnknown, "leader %d did not load the group: %v", leader, e.Errors[leader])
		case !leads(st, m.ch.GetLeaderTerm()):
			return m.beginElecting(fmt.Sprintf("leader %d stopped leading", leader)), nil
		case m.appliesNext(st):
			m.noteJoinStores(e.Statuses)
			return []Action{m.beginRoll()}, nil
		case sameSet(st.GetVoters(), m.members()) && st.GetApplied() >= st.GetLastIndex():
			// Taken now: once cleared, the record no longer names them, and their liveness is
			// forgotten with it.
			m.strays = m.aliveOf(Joining(m.ch))
			m.phase = phaseReconcileClear
			m.reason = fmt.Sprintf("leader %d applies replicas %v with nothing pending: next %v cleared", leader, m.members(), m.next())
			return []Action{m.cas(&arbiterv1.ChannelChange{ClearNextReplicas: true})}, nil
		}
		acts := m.doneChecking()
		return acts, m.refuse(ErrBusy, "leader %d applies voters %v (learners %v), applied %d of %d: raft's configuration may be changing",
			leader, st.GetVoters(), st.GetLearners(), st.GetApplied(), st.GetLastIndex())
	case UnloadResult:
		if m.phase != phaseReconcileUnload {
			return nil, m.unexpected(ev)
		}
		if e.Epoch != m.ch.GetEpoch() {
			return nil, m.staleEpoch(ev, e.Epoch)
		}
		strays := m.strays
		acts := m.doneChecking()
		for _, n := range strays {
			if !slices.Contains(e.Unloaded, n) {
				// The record is right either way; the copy stays loaded until the node restarts.
				return acts, m.refuse(ErrUnloadRefused, "stray replicas %v, unloaded %v", strays, e.Unloaded)
			}
		}
		return acts, nil
	}
	return nil, m.unexpected(ev)
}
