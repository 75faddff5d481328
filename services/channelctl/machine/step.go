package machine

import (
	"fmt"
	"slices"
	"time"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// One function per state, as raft.go has one per role. Step has already handled what is the
// same in every state: fencing, cancelled waiters, activity, dead and alive nodes, and the
// validation of CAS results (refused ones never reach these functions, accepted ones arrive
// with m.ch already updated).

const (
	stateHibernated  = arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED
	stateActivating  = arbiterv1.ChannelState_CHANNEL_STATE_ACTIVATING
	stateActive      = arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE
	stateElecting    = arbiterv1.ChannelState_CHANNEL_STATE_ELECTING
	stateHibernating = arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATING
)

// stepHibernated: nothing is loaded and nothing leads; the only way out is activation.
func stepHibernated(m *Machine, ev Event) ([]Action, error) {
	switch e := ev.(type) {
	case Resolve:
		m.waiters = append(m.waiters, e.Waiter)
		return m.beginActivating("resolve"), nil
	case Activate:
		return m.beginActivating("activate"), nil
	case NodeDead, NodeAlive, Retry:
		// No leader to lose and nothing in flight: the dead set is all that changes.
		return nil, nil
	case IdleTimeout, Hibernate, MoveLeader, Repair, CheckLeader:
		return nil, m.refuse(ErrNotActive, "%s", eventName(ev))
	}
	return nil, m.unexpected(ev)
}

// stepActivating: the claim, then the groups are loaded (the load reports positions, so no
// separate query is needed) and the election runs.
func stepActivating(m *Machine, ev Event) ([]Action, error) {
	switch e := ev.(type) {
	case CASResult:
		if m.phase == phaseClaim {
			return m.gather()
		}
	case GroupsLoaded:
		if m.phase != phaseGather {
			return nil, m.unexpected(ev)
		}
		if e.Epoch != m.ch.GetEpoch() {
			return nil, m.staleEpoch(ev, e.Epoch)
		}
		return m.decide(e.Statuses)
	}
	return stepElection(m, ev)
}

// stepElecting: the claim, then either the ordered transfer of a move or an election from the
// replicas' positions.
func stepElecting(m *Machine, ev Event) ([]Action, error) {
	switch e := ev.(type) {
	case CASResult:
		if m.phase == phaseClaim {
			if m.moveFrom != 0 {
				m.phase = phaseTransfer
				return []Action{TransferLeader{ChannelID: m.ch.GetChannelId(), From: m.moveFrom, To: m.candidate,
					Epoch: m.ch.GetEpoch()}}, nil
			}
			return m.gather()
		}
	case GroupsLoaded:
		if m.phase != phaseGather {
			return nil, m.unexpected(ev)
		}
		if e.Epoch != m.ch.GetEpoch() {
			return nil, m.staleEpoch(ev, e.Epoch)
		}
		return m.decide(e.Statuses)
	case TransferResult:
		if m.phase != phaseTransfer {
			return nil, m.unexpected(ev)
		}
		if e.Epoch != m.ch.GetEpoch() {
			return nil, m.staleEpoch(ev, e.Epoch)
		}
		if e.Target != m.candidate {
			return nil, m.refuse(ErrUnexpectedEvent, "transfer result for node %d, moving to %d", e.Target, m.candidate)
		}
		if e.Err != nil {
			// The old leader probably still leads; an ordinary election prefers it when it is
			// still the most up to date, so falling back costs nothing but a term.
			return m.retry(fmt.Sprintf("transfer to %d: %v", e.Target, e.Err))
		}
		m.phase = phaseConfirm
		return []Action{m.confirm(m.candidate)}, nil
	}
	return stepElection(m, ev)
}

// stepElection is what activating and electing share: everything from the decided candidate to
// the settled leader, and the requests that may arrive meanwhile.
func stepElection(m *Machine, ev Event) ([]Action, error) {
	switch e := ev.(type) {
	case Resolve:
		m.waiters = append(m.waiters, e.Waiter)
		return m.kick()
	case Activate, NodeAlive:
		// A returning node may be what restores the majority a stalled election lacked.
		return m.kick()
	case Retry:
		if m.phase != phaseStalled {
			return nil, m.refuse(ErrBusy, "retry while %s is in flight", m.phase)
		}
		return m.kick()
	case NodeDead:
		if e.Node == m.candidate && (m.phase == phaseCampaign || m.phase == phaseTransfer || m.phase == phaseConfirm) {
			// Waiting for the order to time out against a dead node would only delay the channel.
			return m.retry(fmt.Sprintf("candidate %d died", e.Node))
		}
		return nil, nil
	case IdleTimeout, Hibernate, MoveLeader, Repair, CheckLeader:
		return nil, m.refuse(ErrNotActive, "%s", eventName(ev))
	case CASResult:
		switch m.phase {
		case phaseDecide:
			if m.dead[m.candidate] {
				return m.retry(fmt.Sprintf("candidate %d died", m.candidate))
			}
			m.phase = phaseCampaign
			return []Action{Campaign{ChannelID: m.ch.GetChannelId(), Node: m.candidate, Epoch: m.ch.GetEpoch()}}, nil
		case phaseSettle:
			m.become(stateActive)
			m.phase = phaseIdle
			m.clearWork()
			// The idle clock starts now, not at the resolve: an activation slower than
			// HibernateAfter would otherwise hibernate the channel before its clients send.
			m.touch(e.At)
			return m.answer(), nil
		}
	case CampaignResult:
		if m.phase != phaseCampaign {
			return nil, m.unexpected(ev)
		}
		if e.Epoch != m.ch.GetEpoch() {
			return nil, m.staleEpoch(ev, e.Epoch)
		}
		if e.Node != m.candidate {
			return nil, m.refuse(ErrUnexpectedEvent, "campaign result from node %d, candidate is %d", e.Node, m.candidate)
		}
		if e.Err != nil || !e.Leader {
			return m.retry(fmt.Sprintf("campaign on %d lost: %v", e.Node, e.Err))
		}
		if e.Term < m.ch.GetLeaderTerm() {
			// Stale news of an older leadership: elect again rather than wait for nothing.
			return m.retry(fmt.Sprintf("node %d leads in term %d, below the recorded term %d: %v", e.Node, e.Term, m.ch.GetLeaderTerm(), ErrStaleTerm))
		}
		// A term equal to the recorded one is the recorded leadership going on: raft ignores
		// a campaign on a leader, and the replica reports a leader it did not elect afresh
		// only once a quorum of the group confirmed it still leads (ReadIndex), so no newer
		// term exists; raft has one leader per term. Refusing it would leave the channel
		// electing forever, since the same most up-to-date replica is chosen each time.
		m.minTerm = e.Term
		if leads(e.Status, m.minTerm) && e.Status.GetTerm() == e.Term {
			// The campaign's own answer already shows the candidate leading: a separate
			// confirmation would ask the same replica the same question a moment later.
			return m.settle(e.Status), nil
		}
		m.phase = phaseConfirm
		return []Action{m.confirm(m.candidate)}, nil
	case ConfirmResult:
		if m.phase != phaseConfirm {
			return nil, m.unexpected(ev)
		}
		if e.Epoch != m.ch.GetEpoch() {
			return nil, m.staleEpoch(ev, e.Epoch)
		}
		if e.Node != m.candidate {
			return nil, m.refuse(ErrUnexpectedEvent, "confirmation from node %d, candidate is %d", e.Node, m.candidate)
		}
		if !leads(e.Status, m.minTerm) {
			return m.retry(fmt.Sprintf("node %d not leading in term >= %d (role %v, term %d)",
				e.Node, m.minTerm, e.Status.GetRole(), e.Status.GetTerm()))
		}
		return m.settle(e.Status), nil
	}
	return nil, m.unexpected(ev)
}

// stepActive: a confirmed leader serves. Only one check runs at a time (moving, hibernating,
// verifying the leader); losing the leader overrides any of them.
func stepActive(m *Machine, ev Event) ([]Action, error) {
	leader := m.ch.GetLeaderNodeId()
	if m.repairing() {
		switch e := ev.(type) {
		case CASResult, GroupsLoaded, ReplicasChanged:
			return m.stepRepair(ev)
		case NodeDead:
			if e.Node == leader && m.pending != nil {
				// Electing now would put a second CAS in flight on the same epoch; the repair's
				// CAS result starts the election instead.
				return nil, nil
			}
		}
	}
	if m.reconciling() {
		switch e := ev.(type) {
		case CASResult, GroupsLoaded, UnloadResult:
			return m.stepReconcile(ev)
		case NodeDead:
			if e.Node == leader && m.pending != nil {
				// As for a repair: the CAS result starts the election.
				return nil, nil
			}
		}
	}
	switch e := ev.(type) {
	case CASResult:
		if m.phase != phaseRoll {
			return nil, m.unexpected(ev)
		}
		if m.dead[leader] {
			return m.beginElecting(fmt.Sprintf("leader %d dead", leader)), nil
		}
		return m.doneChecking(), nil
	case Repair:
		return m.beginRepair(e)
	case Resolve:
		if e.StaleLeader != 0 && e.StaleLeader == leader {
			// The client was refused by the recorded leader: check before sending it back there.
			m.waiters = append(m.waiters, e.Waiter)
			switch m.phase {
			case phaseIdle:
				return []Action{m.verify()}, nil
			case phaseVerify:
				return nil, nil
			default:
				m.verifyWanted = true
				return nil, nil
			}
		}
		if m.phase == phaseVerify {
			m.waiters = append(m.waiters, e.Waiter)
			return nil, nil
		}
		// The activity recorded by Step makes a hibernation check in flight come back as not
		// idle. Waiters queued for a pending leader check stay queued.
		return []Action{AnswerWaiters{ChannelID: m.ch.GetChannelId(), Waiters: []uint64{e.Waiter}, Leader: leader,
			Term: m.ch.GetLeaderTerm(), Epoch: m.ch.GetEpoch()}}, nil
	case CheckLeader:
		switch m.phase {
		case phaseIdle:
			return []Action{m.verify()}, nil
		case phaseVerify, phaseStalled:
			// Already checking, or stalled on a dead leader, whose Retry elects.
			return nil, nil
		default:
			m.verifyWanted = true
			return nil, nil
		}
	case Activate, NodeAlive:
		return nil, nil
	case Retry:
		if m.dead[leader] {
			// Only reachable after a refused CAS adopted a record whose leader is dead.
			return m.beginElecting(fmt.Sprintf("leader %d dead", leader)), nil
		}
		if m.phase == phaseStalled {
			m.phase = phaseIdle
		}
		return nil, nil
	case NodeDead:
		if e.Node != leader {
			return nil, nil
		}
		if m.pending != nil {
			// A CAS is in flight (rolling the record forward); its result starts the election.
			return nil, nil
		}
		return m.beginElecting(fmt.Sprintf("leader %d dead", e.Node)), nil
	case IdleTimeout:
		if m.phase != phaseIdle {
			return nil, m.refuse(ErrBusy, "idle timeout while %s is in flight", m.phase)
		}
		if idle := e.Now.Sub(m.lastActivity); idle < m.cfg.HibernateAfter {
			return nil, m.refuse(ErrNotIdle, "idle for %v of %v", idle, m.cfg.HibernateAfter)
		}
		return m.checkIdle(e.Now, false)
	case Hibernate:
		if m.phase != phaseIdle {
			return nil, m.refuse(ErrBusy, "hibernate while %s is in flight", m.phase)
		}
		return m.checkIdle(m.lastActivity, true)
	case MoveLeader:
		if m.phase != phaseIdle {
			return nil, m.refuse(ErrBusy, "move to %d while %s is in flight", e.Target, m.phase)
		}
		if !m.isMember(e.Target) {
			return nil, m.refuse(ErrNotReplica, "move to %d, replicas %v", e.Target, m.members())
		}
		if e.Target == leader {
			return nil, nil
		}
		if m.dead[e.Target] {
			return nil, m.refuse(ErrNodeDead, "move to %d", e.Target)
		}
		if m.joint() {
			// The target must be one of raft's voters, which the record does not tell yet.
			return m.refuseJoint(fmt.Sprintf("move to %d", e.Target))
		}
		m.moveTarget = e.Target
		m.phase = phaseMoveCheck
		nodes := []uint64{leader, e.Target}
		slices.Sort(nodes)
		return []Action{QueryPositions{ChannelID: m.ch.GetChannelId(), Nodes: nodes, Epoch: m.ch.GetEpoch()}}, nil
	case PositionsReported:
		if m.phase != phaseIdleCheck && m.phase != phaseMoveCheck {
			return nil, m.unexpected(ev)
		}
		if e.Epoch != m.ch.GetEpoch() {
			return nil, m.staleEpoch(ev, e.Epoch)
		}
		if m.phase == phaseIdleCheck {
			return m.onIdleCheck(e.Statuses)
		}
		return m.onMoveCheck(e.Statuses)
	case ConfirmResult:
		if m.phase != phaseVerify {
			return nil, m.unexpected(ev)
		}
		if e.Epoch != m.ch.GetEpoch() {
			return nil, m.staleEpoch(ev, e.Epoch)
		}
		if e.Node != leader {
			return nil, m.refuse(ErrUnexpectedEvent, "confirmation from node %d, leader is %d", e.Node, leader)
		}
		if e.Err != nil {
			// Unknown is not "stopped leading": an overloaded leader would otherwise be
			// deposed by its own clients' retries. Its clients retry (a later stale resolve
			// checks again) and a leader that is really gone is declared dead by the
			// arbiter; only a leader nobody could check unknownVerifyLimit times in a row
			// is treated as one that cannot serve.
			m.unknownVerifies++
			if m.unknownVerifies >= unknownVerifyLimit {
				return m.beginElecting(fmt.Sprintf("leader %d unreachable for %d checks: %v", leader, m.unknownVerifies, e.Err)), nil
			}
			acts := m.doneChecking()
			err := m.refuse(ErrLeaderUnknown, "node %d (%d of %d): %v", leader, m.unknownVerifies, unknownVerifyLimit, e.Err)
			return append(m.fail(err), acts...), err
		}
		m.unknownVerifies = 0
		if !leads(e.Status, m.ch.GetLeaderTerm()) {
			return m.beginElecting(fmt.Sprintf("leader %d stopped leading", leader)), nil
		}
		m.phase = phaseIdle
		if m.appliesNext(e.Status) {
			// The leader applies the next replica set (a repair was cut short after raft
			// changed): the record catches up.
			m.noteJoinStores(map[uint64]*replicav1.GroupStatus{leader: e.Status})
			return append(m.answer(), m.beginRoll()), nil
		}
		if m.joint() && sameSet(e.Status.GetVoters(), m.members()) {
			// The next set may be one raft never got (its repair failed before raft changed,
			// and nobody orders it again): find out, under a fence, and clear it if so.
			return append(m.answer(), m.beginReconcile("leader check")), nil
		}
		return m.answer(), nil
	}
	return nil, m.unexpected(ev)
}

// stepHibernating: the claim, the unload, then the CAS that records the channel hibernated.
func stepHibernating(m *Machine, ev Event) ([]Action, error) {
	switch e := ev.(type) {
	case CASResult:
		switch m.phase {
		case phaseClaim:
			m.phase = phaseUnload
			return []Action{Unload{ChannelID: m.ch.GetChannelId(), Nodes: m.union(), Epoch: m.ch.GetEpoch()}}, nil
		case phaseRest:
			m.become(stateHibernated)
			m.phase = phaseIdle
			m.clearWork()
			if len(m.waiters) > 0 || m.activateWanted {
				return m.beginActivating("resolve or activate while hibernating"), nil
			}
			return nil, nil
		}
	case UnloadResult:
		if m.phase != phaseUnload {
			return nil, m.unexpected(ev)
		}
		if e.Epoch != m.ch.GetEpoch() {
			return nil, m.staleEpoch(ev, e.Epoch)
		}
		var refused []uint64
		for _, n := range m.union() {
			if !slices.Contains(e.Unloaded, n) {
				refused = append(refused, n)
			}
		}
		if len(refused) > 0 {
			// Nobody knows now which replicas still hold the group in memory, or whether its
			// leader does. Activation is the one path that rebuilds that from nothing.
			return m.beginActivating(fmt.Sprintf("unload refused on %v", refused)), nil
		}
		m.phase = phaseRest
		return []Action{m.cas(&arbiterv1.ChannelChange{State: stateHibernated.Enum(), LastSeq: ptr(m.lastSeq)})}, nil
	case Resolve, Activate:
		if r, ok := e.(Resolve); ok {
			m.waiters = append(m.waiters, r.Waiter)
		} else {
			m.activateWanted = true
		}
		if m.phase == phaseStalled {
			return m.beginActivating("wake while hibernating"), nil
		}
		// Queued: activated again once hibernated (a refused unload reactivates anyway).
		return nil, nil
	case Retry:
		if m.phase != phaseStalled {
			return nil, m.refuse(ErrBusy, "retry while %s is in flight", m.phase)
		}
		// Unloading is idempotent and the replicas recheck that everyone is caught up.
		m.phase = phaseUnload
		return []Action{Unload{ChannelID: m.ch.GetChannelId(), Nodes: m.union(), Epoch: m.ch.GetEpoch()}}, nil
	case NodeDead, NodeAlive:
		// A dead replica makes the unload fail, which reactivates the channel.
		return nil, nil
	case IdleTimeout, Hibernate, MoveLeader, Repair, CheckLeader:
		return nil, m.refuse(ErrNotActive, "%s", eventName(ev))
	}
	return nil, m.unexpected(ev)
}

// beginActivating claims the activation. The CAS comes first so that the loads go out under a
// fresh epoch: a replica can then refuse a late Unload from an older hibernation.
func (m *Machine) beginActivating(reason string) []Action {
	m.activateWanted = false
	m.lastLeader = m.ch.GetLeaderNodeId()
	m.clearWork()
	m.reason = reason
	m.become(stateActivating)
	m.phase = phaseClaim
	return []Action{m.cas(&arbiterv1.ChannelChange{State: stateActivating.Enum(), LeaderNodeId: ptr[uint64](0)})}
}

// unknownVerifyLimit is how many leader checks in a row may fail without an answer before the
// leader is replaced anyway.
const unknownVerifyLimit = 3

// beginElecting claims an election and clears the recorded leader, so that gateways stop
// routing to it and resolve instead.
func (m *Machine) beginElecting(reason string) []Action {
	m.lastLeader = m.ch.GetLeaderNodeId()
	m.clearWork()
	m.reason = reason
	m.become(stateElecting)
	m.phase = phaseClaim
	return []Action{m.cas(&arbiterv1.ChannelChange{State: stateElecting.Enum(), LeaderNodeId: ptr[uint64](0)})}
}

// gather (re)starts an election by collecting positions through a load of the group on the
// live replicas: the load answers with the status, is a no-op where the group is loaded, and
// brings it back where it is not (a replica that restarted, or that the group's hibernation
// reached before the failover did), with the replica set's current addresses.
func (m *Machine) gather() ([]Action, error) {
	m.candidate, m.minTerm, m.moveFrom = 0, 0, 0
	alive := m.alive()
	if 2*len(alive) <= len(m.ch.GetReplicaNodeIds()) {
		// No point asking: even if every live replica answers there is no majority. While the
		// replica set changes, a live majority of the next set may do (ChooseJointLeader).
		if next := m.aliveOf(m.next()); !m.joint() || 2*len(next) <= len(m.next()) {
			return m.stall(fmt.Errorf("%d of %d replicas alive: %w", len(alive), len(m.ch.GetReplicaNodeIds()), ErrNoMajority))
		}
	}
	m.phase = phaseGather
	// Each replica is told which store the record names for it: one whose store was replaced
	// refuses the load, so it neither answers with an empty log nor is elected. While the
	// replica set changes the load goes to both sets, as a join to the replicas only the next
	// one lists: they may hold nothing yet.
	return []Action{m.loadUnion()}, nil
}

// loadUnion loads the group on the live replicas of both sets, naming each member's recorded
// store and loading the next set's newcomers as joins; it answers with their statuses.
func (m *Machine) loadUnion() LoadGroups {
	return LoadGroups{ChannelID: m.ch.GetChannelId(), GroupID: m.ch.GetGroupId(), Replicas: m.union(),
		Nodes: m.aliveOf(m.union()), Epoch: m.ch.GetEpoch(), StoreIDs: m.storeIDs(), JoinNodes: m.aliveOf(Joining(m.ch))}
}

// decide chooses the candidate from the reported statuses and records it before it campaigns.
func (m *Machine) decide(statuses map[uint64]*replicav1.GroupStatus) ([]Action, error) {
	positions := map[uint64]Position{}
	reachable := map[uint64]bool{}
	voters := map[uint64][]uint64{}
	for n, st := range statuses {
		// A node declared dead is left out even if it answered: the arbiter has already given
		// its lease up, so it must not come back as a leader behind the arbiter's back.
		if st != nil && m.inUnion(n) && !m.dead[n] {
			positions[n] = PositionOf(st)
			reachable[n] = true
			voters[n] = st.GetVoters()
		}
	}
	if !m.joint() {
		c, err := ChooseLeader(m.ch.GetReplicaNodeIds(), positions, reachable, m.preference())
		if err != nil {
			return m.stall(err)
		}
		m.candidate = c
		m.phase = phaseDecide
		return []Action{m.cas(&arbiterv1.ChannelChange{LeaderNodeId: ptr(c)})}, nil
	}
	m.noteJoinStores(statuses)
	c, nextApplied, err := ChooseJointLeader(m.ch.GetReplicaNodeIds(), m.ch.GetNextReplicaNodeIds(), positions, voters,
		reachable, m.preference())
	if err != nil {
		return m.stall(err)
	}
	m.candidate = c
	m.phase = phaseDecide
	change := &arbiterv1.ChannelChange{LeaderNodeId: ptr(c)}
	if nextApplied {
		// A replica applies the next set: the change is committed, so the record catches up
		// with raft in the same CAS that names the candidate (one of the next set).
		m.rollForward(change)
	}
	return []Action{m.cas(change)}, nil
}

// noteJoinStores remembers the store of each joining replica (one only the next set lists)
// that reports itself a voter: its group applied the change that admitted it with that store,
// so the record may name it once it rolls forward. A joining replica that is not a voter yet
// may hold a store raft never admitted.
func (m *Machine) noteJoinStores(statuses map[uint64]*replicav1.GroupStatus) {
	for _, n := range Joining(m.ch) {
		st := statuses[n]
		if st.GetStoreId() != 0 && slices.Contains(st.GetVoters(), n) {
			if m.joinStores == nil {
				m.joinStores = map[uint64]uint64{}
			}
			m.joinStores[n] = st.GetStoreId()
		}
	}
}

// rollForward makes change record the next replica set as the replica set (which clears it),
// with the stores noted for its joining replicas.
func (m *Machine) rollForward(change *arbiterv1.ChannelChange) {
	change.ReplicaNodeIds = slices.Clone(m.ch.GetNextReplicaNodeIds())
	for n, s := range m.joinStores {
		if slices.Contains(change.ReplicaNodeIds, n) {
			if change.ReplicaStoreIds == nil {
				change.ReplicaStoreIds = map[uint64]uint64{}
			}
			change.ReplicaStoreIds[n] = s
		}
	}
}

// appliesNext reports whether st shows the next replica set applied (as its voters) while the
// record still lists another.
func (m *Machine) appliesNext(st *replicav1.GroupStatus) bool {
	return m.joint() && sameSet(st.GetVoters(), m.next())
}

// retry gives up on the current candidate and gathers positions again, within the bound.
func (m *Machine) retry(why string) ([]Action, error) {
	m.attempts++
	if m.attempts >= m.maxAttempts() {
		return m.stall(fmt.Errorf("%d attempts, last: %s: %w", m.attempts, why, ErrElectionFailed))
	}
	return m.gather()
}

// kick resumes a stalled transition; work in flight is left alone.
func (m *Machine) kick() ([]Action, error) {
	if m.phase != phaseStalled {
		return nil, nil
	}
	m.attempts = 0
	return m.gather()
}

// stall stops the transition and fails the waiters: with no clock the machine cannot wait
// them out, and a clear error lets the gateway retry within its own deadline.
func (m *Machine) stall(cause error) ([]Action, error) {
	m.phase = phaseStalled
	m.candidate, m.minTerm, m.moveFrom = 0, 0, 0
	err := m.refuse(cause, "%s", "election stalled")
	return m.fail(err), err
}

func (m *Machine) confirm(node uint64) Action {
	return ConfirmLeader{ChannelID: m.ch.GetChannelId(), Node: node, MinTerm: m.minTerm, Epoch: m.ch.GetEpoch()}
}

// verify asks the recorded leader whether it still leads.
func (m *Machine) verify() Action {
	m.phase = phaseVerify
	m.verifyWanted = false
	return ConfirmLeader{ChannelID: m.ch.GetChannelId(), Node: m.ch.GetLeaderNodeId(), MinTerm: m.ch.GetLeaderTerm(),
		Epoch: m.ch.GetEpoch()}
}

// checkIdle starts the hibernation check. A dead replica cannot report that it holds the whole
// log, so the check would fail anyway; refusing here saves the round trip.
func (m *Machine) checkIdle(now time.Time, forced bool) ([]Action, error) {
	for _, n := range m.union() {
		if m.dead[n] {
			return nil, m.refuse(ErrNotCaughtUp, "replica %d is dead", n)
		}
	}
	m.idleNow, m.idleForced = now, forced
	m.phase = phaseIdleCheck
	return []Action{QueryPositions{ChannelID: m.ch.GetChannelId(), Nodes: m.union(), Epoch: m.ch.GetEpoch()}}, nil
}

// doneChecking ends an active-state check that left the channel active, running the leader
// check a stale Resolve asked for meanwhile.
func (m *Machine) doneChecking() []Action {
	m.phase = phaseIdle
	m.moveTarget = 0
	m.joinStores = nil
	if m.verifyWanted {
		return []Action{m.verify()}
	}
	return nil
}

func (m *Machine) onIdleCheck(statuses map[uint64]*replicav1.GroupStatus) ([]Action, error) {
	var lastSeq uint64
	for _, st := range statuses {
		if t := st.GetLastActivityTime(); t != nil && t.AsTime().After(m.lastActivity) {
			m.lastActivity = t.AsTime()
		}
		lastSeq = max(lastSeq, st.GetLastSeq())
	}
	if !m.idleForced {
		if idle := m.idleNow.Sub(m.lastActivity); idle < m.cfg.HibernateAfter {
			acts := m.doneChecking()
			return acts, m.refuse(ErrNotIdle, "active %v before the idle timeout", m.cfg.HibernateAfter-idle)
		}
	}
	if st := statuses[m.ch.GetLeaderNodeId()]; m.appliesNext(st) && leads(st, m.ch.GetLeaderTerm()) {
		// The leader applies the next replica set: the record catches up first, and the
		// next idle timeout hibernates the channel on the set it then lists.
		m.noteJoinStores(statuses)
		return []Action{m.beginRoll()}, nil
	}
	// While the replica set changes, every replica of both sets must hold the whole log: any
	// of them may be one raft counts on, and all of them are unloaded.
	if err := CanHibernate(m.union(), statuses); err != nil {
		if m.joint() && CanHibernate(m.members(), statuses) == nil {
			// Only joiners lag. One raft never added (its repair failed before raft changed,
			// and nobody orders it again) never catches up, which would keep the channel
			// active for good: reconcile the record first, and the next idle timeout
			// hibernates on what it then lists.
			return []Action{m.beginReconcile("hibernation")}, nil
		}
		acts := m.doneChecking()
		return acts, m.refuse(err, "%s", "hibernation refused")
	}
	m.clearWork()
	m.lastSeq = lastSeq
	m.reason = "idle"
	m.become(stateHibernating)
	m.phase = phaseClaim
	return []Action{m.cas(&arbiterv1.ChannelChange{State: stateHibernating.Enum()})}, nil
}

func (m *Machine) onMoveCheck(statuses map[uint64]*replicav1.GroupStatus) ([]Action, error) {
	leader, target := m.ch.GetLeaderNodeId(), m.moveTarget
	ls, ts := statuses[leader], statuses[target]
	switch {
	case m.dead[target]:
		acts := m.doneChecking()
		return acts, m.refuse(ErrNodeDead, "move target %d died", target)
	case ls == nil || ts == nil:
		acts := m.doneChecking()
		return acts, m.refuse(ErrTargetLagging, "leader %d or target %d did not report", leader, target)
	case !CaughtUp(PositionOf(ls), PositionOf(ts)):
		acts := m.doneChecking()
		return acts, m.refuse(ErrTargetLagging, "target %d at %v, leader %d at %v", target, PositionOf(ts), leader, PositionOf(ls))
	}
	m.lastLeader = leader
	m.clearWork()
	m.reason = fmt.Sprintf("move to %d", target)
	m.moveFrom, m.candidate = leader, target
	// A transfer makes the target campaign, which always raises the term.
	m.minTerm = m.ch.GetLeaderTerm() + 1
	m.become(stateElecting)
	m.phase = phaseClaim
	// Unlike a failover the candidate is known and checked, so the claim records it at once.
	return []Action{m.cas(&arbiterv1.ChannelChange{State: stateElecting.Enum(), LeaderNodeId: ptr(target)})}, nil
}

// settle records the confirmed candidate as the active leader, in the term st shows it leading.
func (m *Machine) settle(st *replicav1.GroupStatus) []Action {
	m.phase = phaseSettle
	change := &arbiterv1.ChannelChange{
		State:        stateActive.Enum(),
		LeaderNodeId: ptr(m.candidate),
		LeaderTerm:   ptr(st.GetTerm()),
		LastSeq:      ptr(st.GetLastSeq()),
	}
	if m.appliesNext(st) {
		// The new leader applies the next replica set: the record catches up with raft.
		m.noteJoinStores(map[uint64]*replicav1.GroupStatus{m.candidate: st})
		m.rollForward(change)
	}
	return []Action{m.cas(change)}
}

// beginRoll records the next replica set, which the active leader applies, as the replica
// set; the channel stays active under its leader meanwhile.
func (m *Machine) beginRoll() Action {
	m.phase = phaseRoll
	m.reason = fmt.Sprintf("leader %d applies replicas %v", m.ch.GetLeaderNodeId(), m.next())
	change := &arbiterv1.ChannelChange{}
	m.rollForward(change)
	return m.cas(change)
}

// leads reports whether a status shows its node leading in a term of at least minTerm.
func leads(st *replicav1.GroupStatus, minTerm uint64) bool {
	return st.GetRole() == replicav1.Role_ROLE_LEADER && st.GetTerm() >= minTerm
}

func ptr[T any](v T) *T { return &v }
