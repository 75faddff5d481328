package fsm

import (
	"errors"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// NumSlots is the number of channel slots that channelctls own.
const NumSlots = 256

// Node is a replica or channelctl as the arbiter records it. Values returned by the FSM are
// copies.
type Node struct {
	ID      uint64
	Role    arbiterv1.NodeRole
	Address string
	Zone    string
	// State is what watchers see: Liveness, except that an alive node that is draining shows
	// NODE_STATE_DRAINING.
	State arbiterv1.NodeState
	// Liveness is NODE_STATE_ALIVE, _SUSPECT or _DEAD, as committed by the leader.
	Liveness arbiterv1.NodeState
	// Draining is kept apart from Liveness so that a draining node that goes suspect and comes
	// back is still draining. Registering again (a restart) clears it.
	Draining bool
	// Channels and Leaders are the node's load: how many channels list it as a replica and how
	// many record it as leader. Both follow from the channels.
	Channels    uint64
	Leaders     uint64
	Incarnation uint64
	// StoreID is the store the node registered with last (0 when it named none, as
	// channelctls do). A replica whose disk was wiped or replaced registers with a new one.
	StoreID uint64
	// RegisterTime is the leader's time of the last registration.
	RegisterTime time.Time
	// StateTime and StateReason describe the last change of Liveness or Draining.
	StateTime   time.Time
	StateReason string
}

// Proto converts n to the API message. The lease expiry is left unset: leases are not
// replicated.
func (n Node) Proto() *arbiterv1.Node {
	return &arbiterv1.Node{
		NodeId:      n.ID,
		Role:        n.Role,
		Address:     n.Address,
		Zone:        n.Zone,
		State:       n.State,
		Load:        &arbiterv1.NodeLoad{Channels: n.Channels, Leaders: n.Leaders},
		Incarnation: n.Incarnation,
		StoreId:     n.StoreID,
	}
}

// placeable reports whether new replicas may be put on the node.
func (n *Node) placeable() bool {
	return n.Role == arbiterv1.NodeRole_NODE_ROLE_REPLICA && n.Liveness == arbiterv1.NodeState_NODE_STATE_ALIVE && !n.Draining
}

// ownsSlots reports whether the node may own slots. A suspect channelctl keeps (and may get)
// slots: suspicion is not knowledge, and moving slots on every lease hiccup would make
// ownership flap. Only death or a drain moves them.
func (n *Node) ownsSlots() bool {
	return n.Role == arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL && n.Liveness != arbiterv1.NodeState_NODE_STATE_DEAD && !n.Draining
}

func (n *Node) refreshState() {
	n.State = n.Liveness
	if n.Draining && n.Liveness == arbiterv1.NodeState_NODE_STATE_ALIVE {
		n.State = arbiterv1.NodeState_NODE_STATE_DRAINING
	}
}

// Channel is a channel's metadata. Values returned by the FSM are copies.
type Channel struct {
	ID      string
	GroupID uint64
	Slot    uint32
	// Replicas are in placement order: the first is the least loaded at creation.
	Replicas   []uint64
	Leader     uint64
	LeaderTerm uint64
	Epoch      uint64
	State      arbiterv1.ChannelState
	LastSeq    uint64
	CreateTime time.Time
	// Revision is the revision of the channel's last change.
	Revision uint64
	// ReplicaStoreIDs maps replicas to the store holding the channel's group on them: filled
	// at creation from the nodes' registered stores, changed by compare-and-sets (repairs). Its
	// keys are always replicas; a replica without a known store has no entry. Nil when empty.
	// The FSM never modifies a map once a channel holds it (a change installs a new one), so
	// events may share it.
	ReplicaStoreIDs map[uint64]uint64
	// NextReplicas is the replica set raft's configuration is moving to, set by a repair's
	// claim until its record replaces Replicas with it (nil otherwise). Its members that are not
	// in Replicas carry no load (Node.Channels) and no store entry until then. The leader is in
	// Replicas or in NextReplicas.
	NextReplicas []uint64
}

// Proto converts c to the API message.
func (c Channel) Proto() *arbiterv1.Channel {
	return &arbiterv1.Channel{
		ChannelId:          c.ID,
		GroupId:            c.GroupID,
		Slot:               c.Slot,
		ReplicaNodeIds:     slices.Clone(c.Replicas),
		LeaderNodeId:       c.Leader,
		LeaderTerm:         c.LeaderTerm,
		Epoch:              c.Epoch,
		State:              c.State,
		LastSeq:            c.LastSeq,
		CreateTime:         timestamppb.New(c.CreateTime),
		Revision:           c.Revision,
		ReplicaStoreIds:    maps.Clone(c.ReplicaStoreIDs),
		NextReplicaNodeIds: slices.Clone(c.NextReplicas),
	}
}

// clone copies c so the caller cannot alias the FSM's replica slice or store map.
func (c *Channel) clone() Channel {
	out := *c
	out.Replicas = slices.Clone(c.Replicas)
	out.ReplicaStoreIDs = maps.Clone(c.ReplicaStoreIDs)
	out.NextReplicas = slices.Clone(c.NextReplicas)
	return out
}

// Slot is the ownership of one slot of channels.
type Slot struct {
	Slot uint32
	// Owner is the channelctl owning the slot, 0 when no channelctl can.
	Owner uint64
	// Epoch increases with every change of owner, so a stale owner's view is detectable.
	Epoch uint64
}

// Proto converts s to the API message.
func (s Slot) Proto() *arbiterv1.SlotAssignment {
	return &arbiterv1.SlotAssignment{Slot: s.Slot, OwnerNodeId: s.Owner, Epoch: s.Epoch}
}

// EventKind says which field of an Event is set.
type EventKind uint8

// Event kinds.
const (
	EventChannel EventKind = iota + 1
	EventNode
	EventSlot
)

// Event is one change, tagged with its own revision. Exactly one of Channel, Node and Slot is
// meaningful, as Kind says; it holds the value after the change.
type Event struct {
	Revision uint64
	Kind     EventKind
	Channel  Channel
	Node     Node
	Slot     Slot
}

// Proto converts e to the API message.
func (e Event) Proto() *arbiterv1.WatchEvent {
	out := &arbiterv1.WatchEvent{Revision: e.Revision}
	switch e.Kind {
	case EventChannel:
		out.Kind = &arbiterv1.WatchEvent_Channel{Channel: e.Channel.Proto()}
	case EventNode:
		out.Kind = &arbiterv1.WatchEvent_Node{Node: e.Node.Proto()}
	case EventSlot:
		out.Kind = &arbiterv1.WatchEvent_Slot{Slot: e.Slot.Proto()}
	}
	return out
}

// RegisterNodeResult is what applying a RegisterNodeCommand returns.
type RegisterNodeResult struct {
	Node Node
	// Created is false when the node was already known (a restart).
	Created  bool
	Revision uint64
}

// SetNodeStateResult is what applying a SetNodeStateCommand returns.
type SetNodeStateResult struct {
	Node Node
	// Changed is false when the node already was in that state; nothing was written then.
	Changed  bool
	Revision uint64
}

// CreateChannelResult is what applying a CreateChannelCommand returns.
type CreateChannelResult struct {
	Channel Channel
	// Created is false when the channel existed; it is then returned unchanged.
	Created  bool
	Revision uint64
}

// CompareAndSetResult is what applying a CompareAndSetChannelsCommand returns: one result per
// change, in the order of the changes.
type CompareAndSetResult struct {
	Results  []ChangeResult
	Revision uint64
}

// ChangeResult is the outcome of one compare-and-set.
type ChangeResult struct {
	ChannelID string
	Succeeded bool
	// Channel is the channel after the change, or as it is when the change was refused (zero
	// for an unknown channel).
	Channel Channel
	// Err says why the change was refused; errors.Is matches ErrUnknownChannel,
	// ErrStaleEpoch, ErrNotSlotOwner or ErrInvalidChange.
	Err error
}

// Proto converts r to the API message.
func (r ChangeResult) Proto() *arbiterv1.ChannelChangeResult {
	out := &arbiterv1.ChannelChangeResult{ChannelId: r.ChannelID, Succeeded: r.Succeeded}
	if r.Channel.ID != "" {
		out.Channel = r.Channel.Proto()
	}
	if r.Err != nil {
		out.Error = r.Err.Error()
		switch {
		case errors.Is(r.Err, ErrStaleEpoch):
			out.Refusal = arbiterv1.ChangeRefusal_CHANGE_REFUSAL_STALE_EPOCH
		case errors.Is(r.Err, ErrNotSlotOwner):
			out.Refusal = arbiterv1.ChangeRefusal_CHANGE_REFUSAL_NOT_SLOT_OWNER
		case errors.Is(r.Err, ErrUnknownChannel):
			out.Refusal = arbiterv1.ChangeRefusal_CHANGE_REFUSAL_UNKNOWN_CHANNEL
		case errors.Is(r.Err, ErrInvalidChange):
			out.Refusal = arbiterv1.ChangeRefusal_CHANGE_REFUSAL_INVALID_CHANGE
		}
	}
	return out
}

// Counts summarises the state for cluster status.
type Counts struct {
	Channels        uint64
	ChannelsByState map[arbiterv1.ChannelState]uint64
	NodesByState    map[arbiterv1.NodeState]uint64
}
