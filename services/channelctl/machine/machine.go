package machine

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// Config tunes a Machine.
type Config struct {
	// HibernateAfter is how long a channel must have been idle before an IdleTimeout may start
	// unloading it.
	HibernateAfter time.Duration
	// MaxElectionAttempts bounds how many candidates one election tries before it fails its
	// waiters and stalls; 0 means 3. A bound keeps a replica that keeps losing (or a bug) from
	// turning one channel into an endless stream of arbiter writes.
	MaxElectionAttempts int
}

const defaultElectionAttempts = 3

// phase is the step within a state that is in flight. The state says what the channel is doing
// (the arbiter's vocabulary); the phase says which result the machine waits for, so a late or
// duplicated result can be told apart from the awaited one.
type phase uint8

const (
	// phaseIdle: nothing in flight (hibernated, or active and serving).
	phaseIdle phase = iota
	// phaseStalled: an intermediate state whose work stopped (no majority, attempts exhausted,
	// a refused CAS, a takeover). Retry, Resolve, Activate or a returning node resume it.
	phaseStalled
	// phaseClaim: the CAS that enters the current state is in flight.
	phaseClaim
	// phaseGather: LoadGroups (which answers with positions) is in flight.
	phaseGather
	// phaseDecide: the CAS recording the chosen candidate is in flight.
	phaseDecide
	// phaseCampaign: Campaign on the candidate is in flight.
	phaseCampaign
	// phaseTransfer: TransferLeader to the candidate is in flight (an ordered move).
	phaseTransfer
	// phaseConfirm: ConfirmLeader on the candidate is in flight.
	phaseConfirm
	// phaseSettle: the CAS that makes the channel active under the new leader is in flight.
	phaseSettle
	// phaseIdleCheck: active; QueryPositions before hibernating is in flight.
	phaseIdleCheck
	// phaseMoveCheck: active; QueryPositions before a leader move is in flight.
	phaseMoveCheck
	// phaseVerify: active; ConfirmLeader on the recorded leader is in flight.
	phaseVerify
	// phaseUnload: hibernating; Unload is in flight.
	phaseUnload
	// phaseRest: hibernating; the CAS that makes the channel hibernated is in flight.
	phaseRest
	// phaseRepairClaim: active; the CAS that claims a replica-set repair is in flight.
	phaseRepairClaim
	// phaseRepairLoad: active; LoadGroups (the new replica joining) is in flight.
	phaseRepairLoad
	// phaseRepairChange: active; ChangeReplicas on the leader is in flight.
	phaseRepairChange
	// phaseRepairRecord: active; the CAS recording the new replica set is in flight.
	phaseRepairRecord
	// phaseRoll: active; the CAS rolling the record forward to the next replica set, which
	// the leader was found applying, is in flight.
	phaseRoll
	// phaseReconcileClaim: active; the CAS that claims the reconciliation of a joint record
	// with raft (reconcile.go) is in flight.
	phaseReconcileClaim
	// phaseReconcileCheck: active; LoadGroups on the leader (raising its epoch fence, and
	// answering with its configuration) is in flight.
	phaseReconcileCheck
	// phaseReconcileClear: active; the CAS clearing a next replica set raft never applied is
	// in flight.
	phaseReconcileClear
	// phaseReconcileUnload: active; Unload of the group on the joiners the cleared next set
	// listed is in flight.
	phaseReconcileUnload
)

func (p phase) String() string {
	phaseNames := [...]string{"idle", "stalled", "claim", "gather", "decide", "campaign", "transfer",
		"confirm", "settle", "idle-check", "move-check", "verify", "unload", "rest",
		"repair-claim", "repair-load", "repair-change", "repair-record", "roll",
		"reconcile-claim", "reconcile-check", "reconcile-clear", "reconcile-unload"}
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", p)
}

// stepFunc is one state's behaviour; Machine.step always points at the current state's.
type stepFunc func(m *Machine, ev Event) ([]Action, error)

// Machine is the state machine of one channel. It is not safe for concurrent use: the driver
// steps each channel from one goroutine at a time, as with raft.RawNode.
type Machine struct {
	cfg Config
	// ch is the arbiter's record as of the last accepted CAS (or construction). Every CAS is
	// made against its epoch and every replica order carries it.
	ch *arbiterv1.Channel
	// state is the state the machine works in. It runs ahead of ch.State while the CAS that
	// enters it is in flight; a refused CAS puts it back to the arbiter's.
	state   arbiterv1.ChannelState
	step    stepFunc
	phase   phase
	pending *arbiterv1.ChannelChange
	fenced  bool

	waiters      []uint64
	dead         map[uint64]bool
	lastActivity time.Time

	// The election in progress.
	reason     string
	lastLeader uint64 // the leader before the election, preferred when equally up to date
	candidate  uint64
	minTerm    uint64 // the lowest term the candidate may be confirmed in
	attempts   int
	moveFrom   uint64 // the leader handing over, during an ordered move

	// Active-state checks.
	moveTarget   uint64
	idleNow      time.Time
	idleForced   bool
	verifyWanted bool
	// activateWanted: an operator's Activate arrived while hibernating; the channel activates
	// as soon as it is hibernated (a waiting client does the same through the waiters).
	activateWanted bool
	// unknownVerifies counts leader checks in a row that failed without an answer.
	unknownVerifies int
	lastSeq         uint64

	// The replica-set repair in progress: dead leaves, with joins (the same node for a
	// rejoin); repairStore is the store with reported from its join load.
	repairDead, repairWith uint64
	repairStore            uint64

	// joinStores is the store of each joining replica (listed only by the next replica set)
	// that reported itself a voter, recorded when the record rolls forward.
	joinStores map[uint64]uint64

	// strays are the live joiners of a next replica set being cleared (reconcile.go): they
	// were loaded with the group, which raft never added them to, and unload it once it is
	// cleared.
	strays []uint64
}

// New builds the machine of a channel from its arbiter record, at startup or when this
// channelctl takes over the channel's slot. now is the last activity it assumes, so that a
// channel just taken over is not unloaded at once. A channel recorded in an intermediate state
// (activating, electing, hibernating) was left mid-transition by its previous owner; its machine
// starts stalled and resumes on Retry, Resolve or Activate.
func New(ch *arbiterv1.Channel, cfg Config, now time.Time) (*Machine, error) {
	if cfg.HibernateAfter <= 0 {
		return nil, fmt.Errorf("machine: HibernateAfter must be positive, got %v", cfg.HibernateAfter)
	}
	if cfg.MaxElectionAttempts < 0 {
		return nil, fmt.Errorf("machine: MaxElectionAttempts must not be negative, got %d", cfg.MaxElectionAttempts)
	}
	if ch == nil || ch.GetChannelId() == "" {
		return nil, errors.New("machine: channel without an id")
	}
	members, err := memberSet(ch.GetReplicaNodeIds())
	if err != nil {
		return nil, fmt.Errorf("machine: channel %s: %w", ch.GetChannelId(), err)
	}
	if next := ch.GetNextReplicaNodeIds(); len(next) > 0 {
		if _, err := memberSet(next); err != nil {
			return nil, fmt.Errorf("machine: channel %s: next replicas: %w", ch.GetChannelId(), err)
		}
		members = unionOf(members, next)
	}
	m := &Machine{
		cfg:          cfg,
		ch:           proto.Clone(ch).(*arbiterv1.Channel),
		dead:         map[uint64]bool{},
		lastActivity: now,
	}
	switch s := ch.GetState(); s {
	case arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE:
		if !slices.Contains(members, ch.GetLeaderNodeId()) {
			return nil, fmt.Errorf("machine: channel %s is active with leader %d outside its replicas (and next) %v",
				ch.GetChannelId(), ch.GetLeaderNodeId(), members)
		}
		m.become(s)
	case arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED:
		m.become(s)
	case arbiterv1.ChannelState_CHANNEL_STATE_ACTIVATING, arbiterv1.ChannelState_CHANNEL_STATE_ELECTING,
		arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATING:
		m.become(s)
		m.lastLeader = ch.GetLeaderNodeId()
		m.phase = phaseStalled
	default:
		return nil, fmt.Errorf("machine: channel %s in state %v", ch.GetChannelId(), s)
	}
	return m, nil
}

// State is the state the machine works in: the target of a transition as soon as it is asked
// for, the arbiter's state again if the arbiter refuses it.
func (m *Machine) State() arbiterv1.ChannelState { return m.state }

// Channel returns a copy of the arbiter's record as of the last accepted CAS.
func (m *Machine) Channel() *arbiterv1.Channel { return proto.Clone(m.ch).(*arbiterv1.Channel) }

// Waiters is the number of Resolve calls waiting for a leader.
func (m *Machine) Waiters() int { return len(m.waiters) }

// Busy reports whether a result is awaited.
func (m *Machine) Busy() bool { return m.phase != phaseIdle && m.phase != phaseStalled }

// Stalled reports whether an intermediate state's work stopped and waits for Retry.
func (m *Machine) Stalled() bool { return m.phase == phaseStalled }

// Repairing reports whether a replica-set repair is in flight.
func (m *Machine) Repairing() bool { return m.repairing() }

// Fenced reports whether the arbiter said this channelctl lost the channel's slot; a fenced
// machine refuses every event and should be dropped.
func (m *Machine) Fenced() bool { return m.fenced }

// IdleSince is the time of the last client activity the machine has seen.
func (m *Machine) IdleSince() time.Time { return m.lastActivity }

// Info summarises the channel for PlanFailover. Leader is set only for an active channel: a
// channel in any other state has no serving leader to fail over from.
func (m *Machine) Info() ChannelInfo {
	info := ChannelInfo{ID: m.ch.GetChannelId(), Replicas: m.union(), Waiters: len(m.waiters)}
	if m.state == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE {
		info.Leader = m.ch.GetLeaderNodeId()
	}
	return info
}

// Step feeds one event to the machine and returns what the driver must do next.
//
// An error means one of two things. Either the event was refused (wrong state, busy, a late or
// stale result, a move to a lagging node): the machine is unchanged and there are no actions.
// Or the event concluded work that failed (a check said no, an election found no majority or
// ran out of attempts, the arbiter refused a CAS): the machine has moved on, and the actions,
// typically FailWaiters, must still be carried out. Drivers need not tell the two apart: they
// always carry out the actions and log the error.
func (m *Machine) Step(ev Event) ([]Action, error) {
	if m.fenced {
		return nil, m.refuse(ErrNotOwner, "%s after the slot was lost", eventName(ev))
	}
	switch e := ev.(type) {
	case nil:
		return nil, m.refuse(ErrUnexpectedEvent, "nil event")
	case CancelWaiter:
		m.waiters = slices.DeleteFunc(m.waiters, func(w uint64) bool { return w == e.Waiter })
		return nil, nil
	case Resolve:
		m.touch(e.At)
	case NodeDead:
		if !m.inUnion(e.Node) {
			return nil, nil
		}
		m.dead[e.Node] = true
	case NodeAlive:
		if !m.inUnion(e.Node) {
			return nil, nil
		}
		delete(m.dead, e.Node)
	case CASResult:
		if m.pending == nil {
			return nil, m.refuse(ErrUnexpectedEvent, "CAS result with no CAS in flight")
		}
		if !e.Accepted {
			return m.casRefused(e)
		}
		if err := m.checkAccepted(e.Channel); err != nil {
			return nil, err
		}
		m.adopt(e.Channel)
		m.pending = nil
	}
	return m.step(m, ev)
}

// adopt makes ch the machine's record. Nodes that left the channel's replicas (a roll-forward
// or a repair took them out of both sets) are forgotten as dead too: their liveness is no
// longer reported to this machine (NodeAlive is ignored outside the union), so a mark kept
// would outlive their return, and a later repair adding one of them back would leave it out of
// its own join load.
func (m *Machine) adopt(ch *arbiterv1.Channel) {
	m.ch = proto.Clone(ch).(*arbiterv1.Channel)
	for n := range m.dead {
		if !m.inUnion(n) {
			delete(m.dead, n)
		}
	}
}

// checkAccepted makes sure an accepted CAS result is the one in flight: the pending change
// bumps the epoch by exactly one, so any other epoch is a result for some other CAS.
func (m *Machine) checkAccepted(ch *arbiterv1.Channel) error {
	if ch.GetChannelId() != m.ch.GetChannelId() {
		return m.refuse(ErrUnexpectedEvent, "CAS result for channel %q", ch.GetChannelId())
	}
	if want := m.pending.GetExpectedEpoch() + 1; ch.GetEpoch() != want {
		return m.refuse(ErrStaleEpoch, "CAS result at epoch %d, the CAS in flight yields %d", ch.GetEpoch(), want)
	}
	return nil
}

// casRefused adopts the arbiter's record and drops the work in progress: whatever the machine
// was about to do was decided on a record that is no longer current, and acting on it is exactly
// what the epoch CAS exists to prevent.
func (m *Machine) casRefused(e CASResult) ([]Action, error) {
	refused := CommitCAS{Change: m.pending}
	m.pending = nil
	if ch := e.Channel; ch.GetChannelId() == m.ch.GetChannelId() && ch.GetEpoch() >= m.ch.GetEpoch() {
		m.adopt(ch)
	}
	m.clearWork()
	m.become(m.ch.GetState())
	m.phase = phaseIdle
	if m.state != arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE && m.state != arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED {
		m.phase = phaseStalled
	}
	if m.state == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE && m.dead[m.ch.GetLeaderNodeId()] {
		// The recorded leader died while the refused CAS was in flight: stalled, so that the
		// driver's Retry starts the election.
		m.phase = phaseStalled
	}
	err := m.refuse(ErrCASRefused, "%v (%s); adopted epoch %d state %s",
		refused, e.Reason, m.ch.GetEpoch(), stateName(m.ch.GetState()))
	if e.Refusal == RefusedNotOwner {
		m.fenced = true
		return m.fail(ErrNotOwner), fmt.Errorf("%w: %w", err, ErrNotOwner)
	}
	if m.state == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE && !m.dead[m.ch.GetLeaderNodeId()] {
		// The arbiter's record names a leader that was confirmed before it was recorded.
		if len(m.waiters) > 0 {
			m.touch(e.At)
		}
		return m.answer(), err
	}
	return m.fail(err), err
}

// touch records activity at t; the idle clock only moves forward.
func (m *Machine) touch(t time.Time) {
	if t.After(m.lastActivity) {
		m.lastActivity = t
	}
}

func (m *Machine) become(s arbiterv1.ChannelState) {
	m.state = s
	switch s {
	case arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED:
		m.step = stepHibernated
	case arbiterv1.ChannelState_CHANNEL_STATE_ACTIVATING:
		m.step = stepActivating
	case arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE:
		m.step = stepActive
	case arbiterv1.ChannelState_CHANNEL_STATE_ELECTING:
		m.step = stepElecting
	case arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATING:
		m.step = stepHibernating
	default:
		// Only an arbiter bug can get here (a refused CAS carrying an unknown state). Treat it as
		// a stalled election: nothing is acted on until Retry re-reads the replicas.
		m.state = arbiterv1.ChannelState_CHANNEL_STATE_ELECTING
		m.step = stepElecting
	}
}

// clearWork forgets the work in progress, keeping waiters, dead nodes and activity.
func (m *Machine) clearWork() {
	m.reason = ""
	m.candidate, m.minTerm, m.attempts, m.moveFrom = 0, 0, 0, 0
	m.moveTarget, m.idleForced, m.verifyWanted = 0, false, false
	m.repairDead, m.repairWith, m.repairStore = 0, 0, 0
	m.unknownVerifies = 0
	m.joinStores = nil
	m.strays = nil
}

// cas makes change a compare-and-set on the current epoch and records it as in flight.
func (m *Machine) cas(change *arbiterv1.ChannelChange) Action {
	change.ChannelId = m.ch.GetChannelId()
	change.ExpectedEpoch = m.ch.GetEpoch()
	change.Reason = m.reason
	m.pending = change
	return CommitCAS{Change: proto.Clone(change).(*arbiterv1.ChannelChange)}
}

func (m *Machine) answer() []Action {
	if len(m.waiters) == 0 {
		return nil
	}
	w := m.waiters
	m.waiters = nil
	return []Action{AnswerWaiters{ChannelID: m.ch.GetChannelId(), Waiters: w,
		Leader: m.ch.GetLeaderNodeId(), Term: m.ch.GetLeaderTerm(), Epoch: m.ch.GetEpoch()}}
}

func (m *Machine) fail(err error) []Action {
	if len(m.waiters) == 0 {
		return nil
	}
	w := m.waiters
	m.waiters = nil
	return []Action{FailWaiters{ChannelID: m.ch.GetChannelId(), Waiters: w, Err: err}}
}

// storeIDs is a copy of the stores the record names for its replicas, nil when it names none.
func (m *Machine) storeIDs() map[uint64]uint64 {
	if len(m.ch.GetReplicaStoreIds()) == 0 {
		return nil
	}
	return maps.Clone(m.ch.GetReplicaStoreIds())
}

func (m *Machine) isMember(n uint64) bool { return slices.Contains(m.ch.GetReplicaNodeIds(), n) }

func (m *Machine) members() []uint64 {
	s := slices.Clone(m.ch.GetReplicaNodeIds())
	slices.Sort(s)
	return s
}

// next is the set raft's configuration is moving to (Channel.next_replica_node_ids), sorted;
// nil when the replica set is not changing.
func (m *Machine) next() []uint64 {
	if len(m.ch.GetNextReplicaNodeIds()) == 0 {
		return nil
	}
	s := slices.Clone(m.ch.GetNextReplicaNodeIds())
	slices.Sort(s)
	return s
}

// joint reports whether the record names a next replica set other than its own: raft's
// voters may then be either (see Channel.next_replica_node_ids).
func (m *Machine) joint() bool {
	next := m.next()
	return next != nil && !slices.Equal(next, m.members())
}

// union is the replica set and the next one together, sorted: every replica that may hold
// the group, which loads, unloads and gathers go to.
func (m *Machine) union() []uint64 { return Union(m.ch) }

// Union is the sorted union of a channel's replica set and its next replica set: the replicas
// that may hold its group while a replica-set change is under way (all of them loaded, unloaded
// and asked in an election).
func Union(ch *arbiterv1.Channel) []uint64 {
	return unionOf(ch.GetReplicaNodeIds(), ch.GetNextReplicaNodeIds())
}

// Joining is the members of a channel's next replica set that its replica set does not list:
// loads to them are joins (they may hold nothing yet, and must not bootstrap the group with a
// history of their own), and they have no store on record.
func Joining(ch *arbiterv1.Channel) []uint64 {
	var out []uint64
	for _, n := range ch.GetNextReplicaNodeIds() {
		if !slices.Contains(ch.GetReplicaNodeIds(), n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func (m *Machine) inUnion(n uint64) bool {
	return m.isMember(n) || slices.Contains(m.ch.GetNextReplicaNodeIds(), n)
}

// alive is the replica set minus the nodes the arbiter declared dead, sorted.
func (m *Machine) alive() []uint64 { return m.aliveOf(m.members()) }

// aliveOf is set minus the nodes the arbiter declared dead.
func (m *Machine) aliveOf(set []uint64) []uint64 {
	return slices.DeleteFunc(slices.Clone(set), func(n uint64) bool { return m.dead[n] })
}

// preference is the replica to favour among the equally most up-to-date: the previous leader
// while it lives (its followers are already matched to it, so nothing has to catch up), else
// one picked by group id so that the channels of a dead node spread over the survivors instead
// of all landing on the lowest id.
func (m *Machine) preference() uint64 {
	if m.lastLeader != 0 && !m.dead[m.lastLeader] && m.inUnion(m.lastLeader) {
		return m.lastLeader
	}
	alive := m.alive()
	if len(alive) == 0 {
		return 0
	}
	return alive[m.ch.GetGroupId()%uint64(len(alive))]
}

func (m *Machine) maxAttempts() int {
	if m.cfg.MaxElectionAttempts > 0 {
		return m.cfg.MaxElectionAttempts
	}
	return defaultElectionAttempts
}

// refuse builds an error naming the channel, the state and phase, and wrapping sentinel.
func (m *Machine) refuse(sentinel error, format string, args ...any) error {
	return fmt.Errorf("channel %s (%s/%s, epoch %d): %s: %w", m.ch.GetChannelId(), stateName(m.state), m.phase,
		m.ch.GetEpoch(), fmt.Sprintf(format, args...), sentinel)
}

func (m *Machine) unexpected(ev Event) error {
	return m.refuse(ErrUnexpectedEvent, "%s", eventName(ev))
}

// staleEpoch refuses a result that came back under an epoch the machine has moved past.
func (m *Machine) staleEpoch(ev Event, epoch uint64) error {
	return m.refuse(ErrStaleEpoch, "%s for epoch %d", eventName(ev), epoch)
}

func eventName(ev Event) string {
	s := fmt.Sprintf("%T", ev)
	return s[strings.LastIndexByte(s, '.')+1:]
}
