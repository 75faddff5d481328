package fsm

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// Snapshot encodes the whole replicated state (not the watch history) as a
// triarch.arbiter.v1.Snapshot. Equal states give equal bytes.
func (f *FSM) Snapshot() ([]byte, error) {
	f.mu.RLock()
	st := f.st
	snap := &arbiterv1.Snapshot{
		Revision:    st.revision,
		NextGroupId: st.nextGroupID,
		Nodes:       make([]*arbiterv1.SnapshotNode, 0, len(st.nodeIDs)),
		Channels:    make([]*arbiterv1.Channel, 0, len(st.channels)),
		Slots:       make([]*arbiterv1.SlotAssignment, 0, NumSlots),
	}
	for _, id := range st.nodeIDs {
		n := st.nodes[id]
		snap.Nodes = append(snap.Nodes, &arbiterv1.SnapshotNode{
			Node:         n.Proto(),
			Liveness:     n.Liveness,
			Draining:     n.Draining,
			RegisterTime: timestamppb.New(n.RegisterTime),
			StateTime:    timestamppb.New(n.StateTime),
			StateReason:  n.StateReason,
		})
	}
	for _, id := range st.index.list("", len(st.channels), nil) {
		snap.Channels = append(snap.Channels, st.channels[id].Proto())
	}
	for _, s := range st.slots {
		snap.Slots = append(snap.Slots, s.Proto())
	}
	f.mu.RUnlock()

	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(snap)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return b, nil
}

// Restore replaces the state with a snapshot. The snapshot is checked for consistency first
// (references, derived load, slots, hashes); an inconsistent one is refused and the state is
// left as it was. The watch history restarts empty at the snapshot's revision: watchers behind
// it get ErrCompacted and list again.
func (f *FSM) Restore(data []byte) error {
	snap := &arbiterv1.Snapshot{}
	if err := proto.Unmarshal(data, snap); err != nil {
		return fmt.Errorf("restore: %w: %w", ErrInvalidSnapshot, err)
	}
	st, err := stateFromSnapshot(snap)
	if err != nil {
		return fmt.Errorf("restore: %w: %w", ErrInvalidSnapshot, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
	f.hist = newHistory(len(f.hist.buf), st.revision)
	return nil
}

func stateFromSnapshot(snap *arbiterv1.Snapshot) (*state, error) {
	st := newState()
	st.revision = snap.GetRevision()
	st.nextGroupID = snap.GetNextGroupId()
	if st.nextGroupID == 0 {
		return nil, errors.New("next group id 0")
	}

	stored := make(map[uint64]*arbiterv1.NodeLoad, len(snap.GetNodes()))
	for _, sn := range snap.GetNodes() {
		pn := sn.GetNode()
		id := pn.GetNodeId()
		if id == 0 || (len(st.nodeIDs) > 0 && id <= st.nodeIDs[len(st.nodeIDs)-1]) {
			return nil, fmt.Errorf("node %d: ids must be non-zero and strictly increasing", id)
		}
		if r := pn.GetRole(); r != arbiterv1.NodeRole_NODE_ROLE_REPLICA && r != arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL {
			return nil, fmt.Errorf("node %d: role %v", id, r)
		}
		switch sn.GetLiveness() {
		case arbiterv1.NodeState_NODE_STATE_ALIVE, arbiterv1.NodeState_NODE_STATE_SUSPECT, arbiterv1.NodeState_NODE_STATE_DEAD:
		default:
			return nil, fmt.Errorf("node %d: liveness %v", id, sn.GetLiveness())
		}
		if pn.GetIncarnation() == 0 {
			return nil, fmt.Errorf("node %d: incarnation 0", id)
		}
		regTime, err := commandTime(sn.GetRegisterTime())
		if err != nil {
			return nil, fmt.Errorf("node %d register time: %w", id, err)
		}
		stateTime, err := commandTime(sn.GetStateTime())
		if err != nil {
			return nil, fmt.Errorf("node %d state time: %w", id, err)
		}
		n := &Node{
			ID:           id,
			Role:         pn.GetRole(),
			Address:      pn.GetAddress(),
			Zone:         pn.GetZone(),
			Liveness:     sn.GetLiveness(),
			Draining:     sn.GetDraining(),
			Incarnation:  pn.GetIncarnation(),
			StoreID:      pn.GetStoreId(),
			RegisterTime: regTime,
			StateTime:    stateTime,
			StateReason:  sn.GetStateReason(),
		}
		n.refreshState()
		if n.State != pn.GetState() {
			return nil, fmt.Errorf("node %d: state %v does not follow from liveness %v, draining %v", id, pn.GetState(), n.Liveness, n.Draining)
		}
		st.nodes[id] = n
		st.nodeIDs = append(st.nodeIDs, id)
		stored[id] = pn.GetLoad()
	}

	groups := make(map[uint64]bool, len(snap.GetChannels()))
	prev := ""
	for _, pc := range snap.GetChannels() {
		ch, err := channelFromProto(st, pc)
		if err != nil {
			return nil, err
		}
		if ch.ID <= prev {
			return nil, fmt.Errorf("channel %q: ids must be strictly increasing", ch.ID)
		}
		prev = ch.ID
		if ch.GroupID == 0 || ch.GroupID >= st.nextGroupID || groups[ch.GroupID] {
			return nil, fmt.Errorf("channel %q: group id %d is zero, reused or not below next group id %d", ch.ID, ch.GroupID, st.nextGroupID)
		}
		groups[ch.GroupID] = true
		if ch.Revision > st.revision {
			return nil, fmt.Errorf("channel %q: revision %d after the snapshot's %d", ch.ID, ch.Revision, st.revision)
		}
		st.addChannel(ch)
	}
	// Load is derived; a mismatch means the snapshot was written by a buggy or different
	// state machine, and applying more entries on top would diverge from the other members.
	for _, id := range st.nodeIDs {
		n, l := st.nodes[id], stored[id]
		if n.Channels != l.GetChannels() || n.Leaders != l.GetLeaders() {
			return nil, fmt.Errorf("node %d: load (%d channels, %d leaders) does not match its channels (%d, %d)",
				id, l.GetChannels(), l.GetLeaders(), n.Channels, n.Leaders)
		}
	}

	if len(snap.GetSlots()) != NumSlots {
		return nil, fmt.Errorf("%d slots, want %d", len(snap.GetSlots()), NumSlots)
	}
	for i, ps := range snap.GetSlots() {
		if ps.GetSlot() != uint32(i) {
			return nil, fmt.Errorf("slot at position %d says %d", i, ps.GetSlot())
		}
		if o := ps.GetOwnerNodeId(); o != 0 {
			if n, ok := st.nodes[o]; !ok || n.Role != arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL {
				return nil, fmt.Errorf("slot %d: owner %d is not a channelctl", i, o)
			}
		}
		st.slots[i] = Slot{Slot: uint32(i), Owner: ps.GetOwnerNodeId(), Epoch: ps.GetEpoch()}
	}
	return st, nil
}

// channelFromProto checks one channel against the nodes already restored.
func channelFromProto(st *state, pc *arbiterv1.Channel) (*Channel, error) {
	id := pc.GetChannelId()
	if !ValidChannelID(id) {
		return nil, fmt.Errorf("channel %q: %w", id, ErrInvalidChannelID)
	}
	if pc.GetSlot() != SlotOf(id) {
		return nil, fmt.Errorf("channel %q: slot %d, its hash says %d", id, pc.GetSlot(), SlotOf(id))
	}
	replicas := pc.GetReplicaNodeIds()
	if len(replicas) == 0 {
		return nil, fmt.Errorf("channel %q: no replicas", id)
	}
	for i, r := range replicas {
		n, ok := st.nodes[r]
		if !ok || n.Role != arbiterv1.NodeRole_NODE_ROLE_REPLICA {
			return nil, fmt.Errorf("channel %q: replica %d is not a replica node", id, r)
		}
		if slices.Contains(replicas[:i], r) {
			return nil, fmt.Errorf("channel %q: replica %d listed twice", id, r)
		}
	}
	next := pc.GetNextReplicaNodeIds()
	for i, r := range next {
		n, ok := st.nodes[r]
		if !ok || n.Role != arbiterv1.NodeRole_NODE_ROLE_REPLICA {
			return nil, fmt.Errorf("channel %q: next replica %d is not a replica node", id, r)
		}
		if slices.Contains(next[:i], r) {
			return nil, fmt.Errorf("channel %q: next replica %d listed twice", id, r)
		}
	}
	if l := pc.GetLeaderNodeId(); l != 0 && !slices.Contains(replicas, l) && !slices.Contains(next, l) {
		return nil, fmt.Errorf("channel %q: leader %d not in replica set", id, l)
	}
	if pc.GetEpoch() == 0 {
		return nil, fmt.Errorf("channel %q: epoch 0", id)
	}
	if s := pc.GetState(); s <= arbiterv1.ChannelState_CHANNEL_STATE_UNSPECIFIED || int(s) >= len(st.byState) {
		return nil, fmt.Errorf("channel %q: state %v", id, s)
	}
	stores := pc.GetReplicaStoreIds()
	for _, r := range slices.Sorted(maps.Keys(stores)) {
		if !slices.Contains(replicas, r) {
			return nil, fmt.Errorf("channel %q: store id for node %d, which is not a replica", id, r)
		}
		if stores[r] == 0 {
			return nil, fmt.Errorf("channel %q: store id 0 for replica %d", id, r)
		}
	}
	created, err := commandTime(pc.GetCreateTime())
	if err != nil {
		return nil, fmt.Errorf("channel %q create time: %w", id, err)
	}
	ch := &Channel{
		ID:         id,
		GroupID:    pc.GetGroupId(),
		Slot:       pc.GetSlot(),
		Replicas:   slices.Clone(replicas),
		Leader:     pc.GetLeaderNodeId(),
		LeaderTerm: pc.GetLeaderTerm(),
		Epoch:      pc.GetEpoch(),
		State:      pc.GetState(),
		LastSeq:    pc.GetLastSeq(),
		CreateTime: created,
		Revision:   pc.GetRevision(),
	}
	if len(stores) > 0 {
		ch.ReplicaStoreIDs = maps.Clone(stores)
	}
	if len(next) > 0 {
		ch.NextReplicas = slices.Clone(next)
	}
	return ch, nil
}
