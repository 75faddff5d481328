package machine

import (
	"time"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// Event is something that happened to one channel: a request from a client, operator or the
// arbiter, or the result of an Action the driver carried out. The set is closed.
type Event interface{ isEvent() }

// Resolve: a client needs the channel's leader. Waiter is the driver's handle for the client; it
// comes back in exactly one AnswerWaiters or FailWaiters.
type Resolve struct {
	Waiter uint64
	// At is when the request came in; it counts as activity against hibernation.
	At time.Time
	// StaleLeader is the leader the client last used and that refused it (NotLeader). When it
	// is the recorded leader, the machine checks with that replica before answering again.
	StaleLeader uint64
}

// CancelWaiter: the client behind Waiter gave up (deadline, disconnect).
type CancelWaiter struct{ Waiter uint64 }

// Activate: an operator orders a hibernated channel loaded and given a leader now.
type Activate struct{}

// Hibernate: an operator orders the channel unloaded now, idle or not. The replicas must still
// all be caught up.
type Hibernate struct{}

// IdleTimeout: the driver's idle timer for the channel fired at Now. The machine rechecks the
// idleness itself, because a Resolve may have come in after the timer was armed.
type IdleTimeout struct{ Now time.Time }

// MoveLeader: an ordered leader transfer (balance, drain, operator) to Target.
type MoveLeader struct{ Target uint64 }

// NodeDead: the arbiter declared a replica node dead.
type NodeDead struct{ Node uint64 }

// NodeAlive: a replica node the arbiter had declared dead is alive again.
type NodeAlive struct{ Node uint64 }

// Repair: replace the replica Dead, which the arbiter declared dead long enough ago, by With,
// a live replica node outside the set, while the leader keeps serving (replica-set repair).
//
// Dead == With is a rejoin: the replica is alive, but it lost what the group's configuration
// counts on it for: its node registered a store other than the one the channel's record names
// for it (its disk was wiped or replaced), or its copy of the group failed there (a corrupt
// entry; the rejoin's join load discards it). It is taken out of the group's configuration and
// added back as a learner with its store, as a new replica would be; the replica set does not
// change, only the store the record names for it (if it changed). The leader cannot rejoin
// itself.
type Repair struct{ Dead, With uint64 }

// CheckLeader: the driver has reason to doubt that the recorded leader still serves the
// channel (it reported its copy of the group failed). The machine checks it as it does for a
// client's stale Resolve, and elects another leader unless it leads; unlike a Resolve it adds
// no waiter and is no activity.
type CheckLeader struct{}

// ReplicasChanged answers ChangeReplicas: the leader's status after the change (its voters)
// or why it failed.
type ReplicasChanged struct {
	Epoch  uint64
	Status *replicav1.GroupStatus
	Err    error
}

// Retry: resume a stalled transition (no majority earlier, attempts exhausted, taken over from
// another channelctl mid-transition). The driver sends it after its own backoff.
type Retry struct{}

// Refusal says why the arbiter refused a compare-and-set.
type Refusal uint8

const (
	// RefusedStaleEpoch: the channel's epoch moved on; the channelctl's view is out of date.
	RefusedStaleEpoch Refusal = iota + 1
	// RefusedNotOwner: the requesting channelctl no longer owns the channel's slot.
	RefusedNotOwner
)

// CASResult answers a CommitCAS.
type CASResult struct {
	Accepted bool
	// Channel is the channel after the change when accepted, its current record when refused
	// (nil if the arbiter did not send it).
	Channel *arbiterv1.Channel
	Refusal Refusal
	// Reason is the arbiter's explanation of a refusal, kept for the error text.
	Reason string
	// At is when the driver received the result. A result that leaves the channel active and
	// answers its waiters counts as activity then: those clients are about to send, however
	// long the activation took since they asked.
	At time.Time
}

// GroupsLoaded answers LoadGroups: the status of each replica that loaded the group; nodes
// missing from Statuses failed (Errors says why when known).
type GroupsLoaded struct {
	Epoch    uint64
	Statuses map[uint64]*replicav1.GroupStatus
	Errors   map[uint64]error
}

// PositionsReported answers QueryPositions: the status of each replica that answered.
type PositionsReported struct {
	Epoch    uint64
	Statuses map[uint64]*replicav1.GroupStatus
	Errors   map[uint64]error
}

// CampaignResult answers Campaign.
type CampaignResult struct {
	Node   uint64
	Epoch  uint64
	Leader bool
	// Term is the term the node leads in (when Leader).
	Term uint64
	// Status is the node's status as the campaign ended, when it reported one. Showing the
	// node leading in Term, it stands for the ConfirmLeader that would otherwise follow.
	Status *replicav1.GroupStatus
	Err    error
}

// TransferResult answers TransferLeader. Success means the leader accepted the order, not that
// the target leads yet; a ConfirmLeader on the target follows.
type TransferResult struct {
	Target uint64
	Epoch  uint64
	Err    error
}

// ConfirmResult answers ConfirmLeader with the node's status (nil when it did not answer).
type ConfirmResult struct {
	Node   uint64
	Epoch  uint64
	Status *replicav1.GroupStatus
	// Err says the call failed (unreachable, timed out, overloaded): whether the node leads is
	// unknown. A node that answered without the group, or with an error for it, is not Err:
	// that is a definite answer, and comes as a nil or non-leading Status.
	Err error
}

// UnloadResult answers Unload: the nodes that dropped the group; the others refused or failed.
type UnloadResult struct {
	Epoch    uint64
	Unloaded []uint64
	Errors   map[uint64]error
}

func (Resolve) isEvent()           {}
func (CancelWaiter) isEvent()      {}
func (Activate) isEvent()          {}
func (Hibernate) isEvent()         {}
func (IdleTimeout) isEvent()       {}
func (MoveLeader) isEvent()        {}
func (NodeDead) isEvent()          {}
func (NodeAlive) isEvent()         {}
func (Retry) isEvent()             {}
func (Repair) isEvent()            {}
func (CheckLeader) isEvent()       {}
func (ReplicasChanged) isEvent()   {}
func (CASResult) isEvent()         {}
func (GroupsLoaded) isEvent()      {}
func (PositionsReported) isEvent() {}
func (CampaignResult) isEvent()    {}
func (TransferResult) isEvent()    {}
func (ConfirmResult) isEvent()     {}
func (UnloadResult) isEvent()      {}
