package machine

import (
	"fmt"
	"strings"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// Action is something the driver must do for a channel and, except for the waiter actions,
// report back as an Event. Every action that reaches a replica carries the epoch it was decided
// under, so a replica can refuse orders older than one it has already seen. The set is closed.
type Action interface {
	isAction()
	fmt.Stringer
}

// CommitCAS: send Change to the arbiter (CompareAndSetChannels) and report a CASResult.
type CommitCAS struct{ Change *arbiterv1.ChannelChange }

// LoadGroups: load the group on Nodes (its voters are Replicas) and report GroupsLoaded.
type LoadGroups struct {
	ChannelID string
	GroupID   uint64
	Replicas  []uint64
	Nodes     []uint64
	Epoch     uint64
	// Join loads the group for a replica being added to it (see replicav1.GroupSpec.join).
	Join bool
	// StoreIDs is, for a load that is not a join, the store the channel's record names for
	// each node (arbiterv1.Channel.replica_store_ids): the spec sent to a node carries its
	// entry as GroupSpec.store_id, so that a replica whose store was replaced refuses the load
	// instead of bootstrapping the group as a voter with an empty log. Nil for joins, and for
	// records that name no stores; a missing entry is no check.
	StoreIDs map[uint64]uint64
	// JoinNodes are nodes of Nodes that load with join although Join is false: the replicas
	// only a changing replica set's next set lists (Joining), which may hold nothing yet and
	// have no store on record. Their spec names no store.
	JoinNodes []uint64
}

// QueryPositions: ask Nodes for the group's status (GetGroupStatus) and report
// PositionsReported.
type QueryPositions struct {
	ChannelID string
	Nodes     []uint64
	Epoch     uint64
}

// Campaign: order Node to campaign and report a CampaignResult.
type Campaign struct {
	ChannelID string
	Node      uint64
	Epoch     uint64
}

// TransferLeader: order the leader From to hand leadership to To and report a TransferResult.
type TransferLeader struct {
	ChannelID string
	From, To  uint64
	Epoch     uint64
}

// ConfirmLeader: ask Node for the group's status and report a ConfirmResult. The machine
// accepts it as leader only in a term of at least MinTerm.
type ConfirmLeader struct {
	ChannelID string
	Node      uint64
	MinTerm   uint64
	Epoch     uint64
}

// Unload: drop the group from memory on Nodes (not forced) and report an UnloadResult.
type Unload struct {
	ChannelID string
	Nodes     []uint64
	Epoch     uint64
}

// ChangeReplicas: order the leader to replace Remove by Add in the group's raft configuration
// (Add catches up as a learner before it votes), ending with exactly Voters, and report
// ReplicasChanged. Add == Remove is a rejoin: the node's store was replaced, so the leader
// removes it and adds it back as a learner, promoted once it holds the whole log.
type ChangeReplicas struct {
	ChannelID   string
	Leader      uint64
	Add, Remove uint64
	// AddStoreID is the store of Add that loaded the group (its join load's
	// GroupStatus.store_id); it rides on the learner's configuration change
	// (replicav1.ReplicaChange.add_store_id).
	AddStoreID uint64
	Voters     []uint64
	Epoch      uint64
}

// AnswerWaiters: answer the Resolve calls of Waiters with the leader.
type AnswerWaiters struct {
	ChannelID string
	Waiters   []uint64
	Leader    uint64
	Term      uint64
	Epoch     uint64
}

// FailWaiters: fail the Resolve calls of Waiters with Err.
type FailWaiters struct {
	ChannelID string
	Waiters   []uint64
	Err       error
}

func (CommitCAS) isAction()      {}
func (LoadGroups) isAction()     {}
func (QueryPositions) isAction() {}
func (Campaign) isAction()       {}
func (TransferLeader) isAction() {}
func (ConfirmLeader) isAction()  {}
func (Unload) isAction()         {}
func (ChangeReplicas) isAction() {}
func (AnswerWaiters) isAction()  {}
func (FailWaiters) isAction()    {}

// The String forms are compact on purpose: the driver logs them and the tests compare them.

func (a CommitCAS) String() string {
	c := a.Change
	var b strings.Builder
	fmt.Fprintf(&b, "cas(%s@%d", c.GetChannelId(), c.GetExpectedEpoch())
	if c.State != nil {
		fmt.Fprintf(&b, " state=%s", stateName(c.GetState()))
	}
	if c.LeaderNodeId != nil {
		fmt.Fprintf(&b, " leader=%d", c.GetLeaderNodeId())
	}
	if c.LeaderTerm != nil {
		fmt.Fprintf(&b, " term=%d", c.GetLeaderTerm())
	}
	if c.LastSeq != nil {
		fmt.Fprintf(&b, " seq=%d", c.GetLastSeq())
	}
	if len(c.GetReplicaNodeIds()) > 0 {
		fmt.Fprintf(&b, " replicas=%v", c.GetReplicaNodeIds())
	}
	if len(c.GetNextReplicaNodeIds()) > 0 {
		fmt.Fprintf(&b, " next=%v", c.GetNextReplicaNodeIds())
	}
	if c.GetClearNextReplicas() {
		b.WriteString(" next=none")
	}
	if len(c.GetReplicaStoreIds()) > 0 {
		// fmt prints a map in key order, so the form is stable.
		fmt.Fprintf(&b, " stores=%v", c.GetReplicaStoreIds())
	}
	b.WriteString(")")
	return b.String()
}

func (a LoadGroups) String() string {
	if a.Join {
		return fmt.Sprintf("load(%s@%d on %v join %v)", a.ChannelID, a.Epoch, a.Nodes, a.Replicas)
	}
	if len(a.JoinNodes) > 0 {
		return fmt.Sprintf("load(%s@%d on %v joining %v)", a.ChannelID, a.Epoch, a.Nodes, a.JoinNodes)
	}
	return fmt.Sprintf("load(%s@%d on %v)", a.ChannelID, a.Epoch, a.Nodes)
}

func (a QueryPositions) String() string {
	return fmt.Sprintf("query(%s@%d on %v)", a.ChannelID, a.Epoch, a.Nodes)
}

func (a Campaign) String() string {
	return fmt.Sprintf("campaign(%s@%d on %d)", a.ChannelID, a.Epoch, a.Node)
}

func (a TransferLeader) String() string {
	return fmt.Sprintf("transfer(%s@%d %d->%d)", a.ChannelID, a.Epoch, a.From, a.To)
}

func (a ConfirmLeader) String() string {
	return fmt.Sprintf("confirm(%s@%d on %d term>=%d)", a.ChannelID, a.Epoch, a.Node, a.MinTerm)
}

func (a Unload) String() string {
	return fmt.Sprintf("unload(%s@%d on %v)", a.ChannelID, a.Epoch, a.Nodes)
}

func (a ChangeReplicas) String() string {
	if a.Add == a.Remove {
		return fmt.Sprintf("change(%s@%d on %d rejoin %d store=%d)", a.ChannelID, a.Epoch, a.Leader, a.Add, a.AddStoreID)
	}
	return fmt.Sprintf("change(%s@%d on %d +%d -%d store=%d)", a.ChannelID, a.Epoch, a.Leader, a.Add, a.Remove, a.AddStoreID)
}

func (a AnswerWaiters) String() string {
	return fmt.Sprintf("answer(%s %v leader=%d term=%d epoch=%d)", a.ChannelID, a.Waiters, a.Leader, a.Term, a.Epoch)
}

func (a FailWaiters) String() string {
	return fmt.Sprintf("fail(%s %v: %v)", a.ChannelID, a.Waiters, a.Err)
}

func stateName(s arbiterv1.ChannelState) string {
	return strings.TrimPrefix(s.String(), "CHANNEL_STATE_")
}
