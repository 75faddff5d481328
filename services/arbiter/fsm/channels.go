package fsm

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// MaxChannelIDLen is the longest valid channel id.
const MaxChannelIDLen = 128

// ValidChannelID reports whether id matches [A-Za-z0-9_.:@-]{1,128}. Ids end up in URLs, log
// keys and metric labels, so the alphabet is kept to what needs no escaping anywhere.
func ValidChannelID(id string) bool {
	if len(id) == 0 || len(id) > MaxChannelIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '_', c == '.', c == ':', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// SlotOf returns the slot of a channel: the 32-bit FNV-1a hash of its id (as hash/fnv's
// New32a computes it) modulo 256. The hash is part of the on-disk contract: changing it would
// move every channel to another channelctl, so it is spelled out here rather than borrowed.
func SlotOf(channelID string) uint32 {
	const (
		offset32 = 2166136261
		prime32  = 16777619
	)
	h := uint32(offset32)
	for i := 0; i < len(channelID); i++ {
		h ^= uint32(channelID[i])
		h *= prime32
	}
	return h % NumSlots
}

func (f *FSM) createChannel(c *arbiterv1.CreateChannelCommand) (CreateChannelResult, error) {
	id, rf := c.GetChannelId(), c.GetReplicationFactor()
	if !ValidChannelID(id) {
		return CreateChannelResult{}, fmt.Errorf("create channel %q: %w: want [A-Za-z0-9_.:@-]{1,%d}", id, ErrInvalidChannelID, MaxChannelIDLen)
	}
	if rf == 0 {
		return CreateChannelResult{}, fmt.Errorf("create channel %q: %w: replication factor 0", id, ErrInvalidArgument)
	}
	now, err := commandTime(c.GetTime())
	if err != nil {
		return CreateChannelResult{}, fmt.Errorf("create channel %q: %w", id, err)
	}
	if ch, ok := f.st.channels[id]; ok {
		return CreateChannelResult{Channel: ch.clone(), Revision: f.st.revision}, nil
	}
	if limit := c.GetMaxChannels(); limit > 0 && uint64(len(f.st.channels)) >= limit {
		return CreateChannelResult{}, fmt.Errorf("create channel %q: %w: the cluster holds %d channels, its cap (--max-channels)",
			id, ErrChannelLimit, len(f.st.channels))
	}
	replicas, err := f.st.place(int(rf))
	if err != nil {
		return CreateChannelResult{}, fmt.Errorf("create channel %q: %w", id, err)
	}
	ch := &Channel{
		ID:         id,
		GroupID:    f.st.nextGroupID,
		Slot:       SlotOf(id),
		Replicas:   replicas,
		Epoch:      1,
		State:      arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED,
		CreateTime: now,
		// The group will be created on the stores the replicas have now.
		ReplicaStoreIDs: f.st.storesOf(replicas),
	}
	f.st.nextGroupID++
	f.st.addChannel(ch)
	ch.Revision = f.st.revision + 1
	f.emit(Event{Kind: EventChannel, Channel: *ch})
	return CreateChannelResult{Channel: ch.clone(), Created: true, Revision: f.st.revision}, nil
}

// storesOf returns the registered store of each of the replicas that named one, nil when none
// did.
func (st *state) storesOf(replicas []uint64) map[uint64]uint64 {
	var m map[uint64]uint64
	for _, r := range replicas {
		if s := st.nodes[r].StoreID; s != 0 {
			if m == nil {
				m = make(map[uint64]uint64, len(replicas))
			}
			m[r] = s
		}
	}
	return m
}

// addChannel indexes a new channel and charges its load; the channel must be valid.
func (st *state) addChannel(ch *Channel) {
	st.channels[ch.ID] = ch
	st.index.insert(ch.Slot, ch.ID)
	st.byState[ch.State]++
	for _, r := range ch.Replicas {
		st.nodes[r].Channels++
	}
	st.linkPeers(ch.Replicas, +1)
	if ch.Leader != 0 {
		st.nodes[ch.Leader].Leaders++
	}
}

// linkPeers adds (delta +1) or removes (delta -1) one shared channel between every pair of
// replicas.
func (st *state) linkPeers(replicas []uint64, delta int) {
	for _, a := range replicas {
		for _, b := range replicas {
			if a == b {
				continue
			}
			m := st.peers[a]
			if m == nil {
				m = make(map[uint64]uint32)
				st.peers[a] = m
			}
			if delta > 0 {
				m[b]++
			} else if m[b]--; m[b] == 0 {
				delete(m, b)
				if len(m) == 0 {
					delete(st.peers, a)
				}
			}
		}
	}
}

// place picks rf distinct alive replica nodes, least loaded first, spreading over distinct
// zones before reusing one. Nodes without a zone count as one zone "". Ties go to the lower id
// so every member picks the same nodes.
func (st *state) place(rf int) ([]uint64, error) {
	cands := make([]*Node, 0, len(st.nodeIDs))
	for _, id := range st.nodeIDs {
		if n := st.nodes[id]; n.placeable() {
			cands = append(cands, n)
		}
	}
	if rf > len(cands) {
		return nil, fmt.Errorf("%w: replication factor %d, %d alive replica nodes", ErrInsufficientReplicas, rf, len(cands))
	}
	// Stable: candidates are already in id order, which breaks ties.
	slices.SortStableFunc(cands, func(a, b *Node) int { return cmp.Compare(a.Channels, b.Channels) })

	picked := make([]uint64, 0, rf)
	used := make([]bool, len(cands))
	zones := make(map[string]bool, rf)
	// One pass in load order takes, for each zone not yet used, its least loaded node; a
	// second pass fills up with the least loaded of the rest when zones run out.
	for i, n := range cands {
		if len(picked) == rf {
			break
		}
		if !zones[n.Zone] {
			zones[n.Zone], used[i] = true, true
			picked = append(picked, n.ID)
		}
	}
	for i, n := range cands {
		if len(picked) == rf {
			break
		}
		if !used[i] {
			used[i] = true
			picked = append(picked, n.ID)
		}
	}
	return picked, nil
}

// checkReplicaSet checks a replica set a change names (what: "replica" or "next replica"):
// known replica nodes, each once, and every node new to the channel able to take channels. A
// member of the channel's next set was placeable when the claim named it, and raft may count it
// already: the record rolling forward must not be refused because it died or drains since.
func (st *state) checkReplicaSet(what string, ids []uint64, cur *Channel) error {
	for i, r := range ids {
		n, ok := st.nodes[r]
		switch {
		case !ok:
			return fmt.Errorf("%w: %s %d: %w", ErrInvalidChange, what, r, ErrUnknownNode)
		case n.Role != arbiterv1.NodeRole_NODE_ROLE_REPLICA:
			return fmt.Errorf("%w: node %d is a %v, not a replica", ErrInvalidChange, r, n.Role)
		case slices.Contains(ids[:i], r):
			return fmt.Errorf("%w: %s %d listed twice", ErrInvalidChange, what, r)
		case !slices.Contains(cur.Replicas, r) && !slices.Contains(cur.NextReplicas, r) && !n.placeable():
			return fmt.Errorf("%w: new replica %d is %v and cannot take channels", ErrInvalidChange, r, n.State)
		}
	}
	return nil
}

func (f *FSM) compareAndSet(c *arbiterv1.CompareAndSetChannelsCommand) CompareAndSetResult {
	changes := c.GetChanges()
	res := CompareAndSetResult{Results: make([]ChangeResult, len(changes))}
	for i, ch := range changes {
		res.Results[i] = f.applyChange(c.GetNodeId(), ch)
	}
	res.Revision = f.st.revision
	return res
}

// applyChange validates one change completely before touching anything, so a refusal leaves
// no trace.
func (f *FSM) applyChange(requester uint64, chg *arbiterv1.ChannelChange) ChangeResult {
	st := f.st
	id := chg.GetChannelId()
	res := ChangeResult{ChannelID: id}
	cur, ok := st.channels[id]
	refuse := func(format string, args ...any) ChangeResult {
		res.Err = fmt.Errorf("channel %q: "+format, append([]any{id}, args...)...)
		if cur != nil {
			res.Channel = cur.clone()
		}
		return res
	}
	if !ok {
		return refuse("%w", ErrUnknownChannel)
	}
	// Fencing: a channelctl that lost the slot (it was declared dead, or slots were
	// rebalanced) may still be acting on an old view; only the current owner may decide.
	if owner := st.slots[cur.Slot].Owner; requester == 0 || owner != requester {
		return refuse("%w: slot %d is owned by node %d, not node %d", ErrNotSlotOwner, cur.Slot, owner, requester)
	}
	if chg.GetExpectedEpoch() != cur.Epoch {
		return refuse("%w: epoch is %d, expected %d", ErrStaleEpoch, cur.Epoch, chg.GetExpectedEpoch())
	}

	replicas := cur.Replicas
	replicasChanged := false
	if ids := chg.GetReplicaNodeIds(); len(ids) > 0 {
		if err := st.checkReplicaSet("replica", ids, cur); err != nil {
			return refuse("%w", err)
		}
		replicasChanged = !slices.Equal(ids, cur.Replicas)
		replicas = ids
	}
	// The set raft's configuration moves to (a repair's claim) until a change records the
	// replica set itself; see arbiterv1.Channel.next_replica_node_ids.
	next := cur.NextReplicas
	ids := chg.GetNextReplicaNodeIds()
	switch {
	case len(ids) > 0 && chg.GetClearNextReplicas():
		return refuse("%w: next replicas both set and cleared", ErrInvalidChange)
	case len(ids) > 0 && len(chg.GetReplicaNodeIds()) > 0:
		return refuse("%w: replicas and next replicas set together", ErrInvalidChange)
	case len(ids) > 0:
		if err := st.checkReplicaSet("next replica", ids, cur); err != nil {
			return refuse("%w", err)
		}
		next = ids
	case chg.GetClearNextReplicas() || len(chg.GetReplicaNodeIds()) > 0:
		next = nil
	}
	leader := cur.Leader
	if chg.LeaderNodeId != nil {
		leader = chg.GetLeaderNodeId()
	}
	if leader != 0 && !slices.Contains(replicas, leader) && !slices.Contains(next, leader) {
		return refuse("%w: leader %d is not in the replica set %v (next %v)", ErrInvalidChange, leader, replicas, next)
	}
	if leader != cur.Leader && leader != 0 && st.nodes[leader].Liveness == arbiterv1.NodeState_NODE_STATE_DEAD {
		return refuse("%w: new leader %d is dead", ErrInvalidChange, leader)
	}
	term := cur.LeaderTerm
	if chg.LeaderTerm != nil {
		// Raft terms only grow; a smaller one comes from a decision made on an old view.
		if chg.GetLeaderTerm() < cur.LeaderTerm {
			return refuse("%w: leader term %d is behind the recorded %d", ErrInvalidChange, chg.GetLeaderTerm(), cur.LeaderTerm)
		}
		term = chg.GetLeaderTerm()
	}
	chState := cur.State
	if chg.State != nil {
		chState = chg.GetState()
		if chState <= arbiterv1.ChannelState_CHANNEL_STATE_UNSPECIFIED || int(chState) >= len(st.byState) {
			return refuse("%w: state %v", ErrInvalidChange, chState)
		}
	}
	lastSeq := cur.LastSeq
	if chg.LastSeq != nil {
		// Committed sequences never go back (acknowledged messages are never lost), so a
		// smaller one is a stale report.
		if chg.GetLastSeq() < cur.LastSeq {
			return refuse("%w: last seq %d is behind the recorded %d", ErrInvalidChange, chg.GetLastSeq(), cur.LastSeq)
		}
		lastSeq = chg.GetLastSeq()
	}
	stores := cur.ReplicaStoreIDs
	if set := chg.GetReplicaStoreIds(); len(set) > 0 || replicasChanged {
		// In key order, so every member names the same entry when several are wrong.
		for _, r := range slices.Sorted(maps.Keys(set)) {
			if !slices.Contains(replicas, r) {
				return refuse("%w: store id for node %d, which is not in the replica set %v", ErrInvalidChange, r, replicas)
			}
			if set[r] == 0 {
				return refuse("%w: store id 0 for replica %d", ErrInvalidChange, r)
			}
		}
		stores = mergeStores(cur.ReplicaStoreIDs, replicas, set)
	}

	if replicasChanged {
		for _, r := range cur.Replicas {
			st.nodes[r].Channels--
		}
		st.linkPeers(cur.Replicas, -1)
		// A fresh slice: events and readers may still hold the old one.
		cur.Replicas = slices.Clone(replicas)
		for _, r := range cur.Replicas {
			st.nodes[r].Channels++
		}
		st.linkPeers(cur.Replicas, +1)
	}
	if leader != cur.Leader {
		if cur.Leader != 0 {
			st.nodes[cur.Leader].Leaders--
		}
		if leader != 0 {
			st.nodes[leader].Leaders++
		}
		cur.Leader = leader
	}
	st.byState[cur.State]--
	st.byState[chState]++
	cur.State, cur.LeaderTerm, cur.LastSeq = chState, term, lastSeq
	// A new map (or the old one untouched): events and readers may still hold the old one.
	cur.ReplicaStoreIDs = stores
	if !slices.Equal(next, cur.NextReplicas) {
		// A fresh slice, as for Replicas.
		cur.NextReplicas = slices.Clone(next)
	}
	cur.Epoch++
	cur.Revision = st.revision + 1
	f.emit(Event{Kind: EventChannel, Channel: *cur})
	res.Succeeded = true
	res.Channel = cur.clone()
	return res
}

// mergeStores returns a new store map: the entries of cur whose node is still one of the
// replicas (a replica that left takes its store's claim with it), overwritten and extended by
// set. Nil when empty, as channels keep it.
func mergeStores(cur map[uint64]uint64, replicas []uint64, set map[uint64]uint64) map[uint64]uint64 {
	out := make(map[uint64]uint64, len(replicas))
	for r, s := range cur {
		if slices.Contains(replicas, r) {
			out[r] = s
		}
	}
	maps.Copy(out, set)
	if len(out) == 0 {
		return nil
	}
	return out
}
