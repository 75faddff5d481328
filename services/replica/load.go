package replica

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// Loading and unloading channels' groups: specs, restored state, store checks and the epoch
// fence.

// Load loads channels' groups (creating them when new), restoring each channel's state from
// its checkpoint. Per channel errors are returned in order; a nil entry means loaded.
func (e *Engine) Load(ctx context.Context, specs []*replicav1.GroupSpec) []error {
	errs := make([]error, len(specs))
	var (
		hostSpecs []multiraft.GroupSpec
		loading   []int
	)
	var writes []raftstore.StateWrite
	for i, sp := range specs {
		if sp.GetJoin() {
			// The control tier rejoins a copy that failed here: it is discarded first, and
			// loads below as a new replica would (see reset.go).
			e.mu.RLock()
			failed := e.byID[sp.GetChannelId()]
			e.mu.RUnlock()
			if failed != nil && failed.failed.Load() != nil {
				if err := e.resetFailed(ctx, failed); err != nil {
					errs[i] = err
					continue
				}
			}
		}
		ch, w, err := e.prepare(sp)
		if err != nil {
			errs[i] = err
			continue
		}
		if ch == nil { // already loaded
			errs[i] = e.failure(sp.GetChannelId())
			if errs[i] == nil && !sp.GetJoin() {
				errs[i] = e.admit(ctx, sp.GetChannelId())
			}
			continue
		}
		writes = append(writes, w...)
		spec := multiraft.GroupSpec{GroupID: ch.group, Voters: ch.currentVoters()}
		if ch.join {
			spec = multiraft.GroupSpec{GroupID: ch.group, Join: true}
			if e.cfg.StoreID != 0 {
				// Whether this node is new to the group or its store replaced an earlier one
				// the configuration still counts, it takes no part in elections until the
				// leader's conf change adding this store admits it (see multiraft.GroupSpec).
				spec.AdmitToken = multiraft.StoreToken(e.cfg.StoreID)
				ch.probation.Store(true)
			}
		}
		hostSpecs = append(hostSpecs, spec)
		loading = append(loading, i)
	}
	if len(writes) > 0 {
		if err := e.cfg.Store.SaveState(writes); err != nil {
			for _, i := range loading {
				errs[i] = fmt.Errorf("replica: record group spec: %w", err)
				e.forget(specs[i].GetChannelId())
			}
			return errs
		}
	}
	if len(hostSpecs) > 0 {
		// Not cancellable: an install the host has queued runs even after the caller gives
		// up, so the load must see it through and learn its outcome. Forgetting a channel
		// whose group then lands in the host would fail its first Apply, and with it the host.
		ctx := context.WithoutCancel(ctx)
		if err := e.host.LoadGroups(ctx, hostSpecs); err != nil {
			// The host reports failures together; find out which groups made it.
			for _, i := range loading {
				if _, serr := e.host.Status(ctx, specs[i].GetGroupId()); serr != nil {
					errs[i] = fmt.Errorf("replica: load %s: %w", specs[i].GetChannelId(), err)
					e.forget(specs[i].GetChannelId())
				}
			}
		}
	}
	return errs
}

// admit ends the probation of a loaded channel that joined its group (see Load): a load that
// is not a join, which names this store or none, comes from a record that counts this store
// as the channel's replica here.
func (e *Engine) admit(ctx context.Context, channelID string) error {
	ch, err := e.channel(channelID)
	if err != nil || !ch.probation.Load() {
		return nil // unloaded since, or not on probation
	}
	if err := e.host.Admit(context.WithoutCancel(ctx), ch.group); err != nil {
		return fmt.Errorf("replica: admit %s: %w", channelID, err)
	}
	ch.probation.Store(false)
	return nil
}

// prepare registers a channel about to be loaded: its spec, peers and restored state.
func (e *Engine) prepare(sp *replicav1.GroupSpec) (*channel, []raftstore.StateWrite, error) {
	if sp.GetChannelId() == "" || sp.GetGroupId() == 0 || len(sp.GetReplicas()) == 0 {
		return nil, nil, fmt.Errorf("%w: group spec needs a channel id, a group id and replicas", ErrInvalid)
	}
	if id := sp.GetStoreId(); id != 0 && e.cfg.StoreID != 0 && id != e.cfg.StoreID {
		// Checked before anything, the loaded case included: a group this store joined is
		// not yet the one the record counts, so it must not report a position for elections.
		return nil, nil, fmt.Errorf("%w: the record of %s names store %016x on node %d, this is store %016x: the node rejoins the group as a new replica",
			ErrStoreReplaced, sp.GetChannelId(), id, e.cfg.NodeID, e.cfg.StoreID)
	}
	voters := make([]uint64, 0, len(sp.GetReplicas()))
	for _, p := range sp.GetReplicas() {
		voters = append(voters, p.GetNodeId())
	}
	slices.Sort(voters)
	if _, ok := slices.BinarySearch(voters, e.cfg.NodeID); !ok {
		return nil, nil, fmt.Errorf("%w: node %d is not a replica of %s", ErrInvalid, e.cfg.NodeID, sp.GetChannelId())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if ch := e.byID[sp.GetChannelId()]; ch != nil && ch.group != sp.GetGroupId() {
		return nil, nil, fmt.Errorf("%w: %s is loaded as group %d, not %d", ErrInvalid, ch.id, ch.group, sp.GetGroupId())
	}
	// Addresses are refreshed even for a loaded channel: a peer that restarted elsewhere is
	// found again through the next load order.
	for _, p := range sp.GetReplicas() {
		if p.GetAddress() != "" && p.GetNodeId() != e.cfg.NodeID {
			e.addresses[p.GetNodeId()] = p.GetAddress()
			if e.peers != nil {
				e.peers.SetPeer(p.GetNodeId(), p.GetAddress())
			}
		}
	}
	if ch := e.byID[sp.GetChannelId()]; ch != nil {
		if ch.reset.Load() && !sp.GetJoin() {
			return nil, nil, fmt.Errorf("%w: %s", ErrCopyReset, sp.GetChannelId())
		}
		ch.seeEpoch(sp.GetEpoch())
		return nil, nil, nil
	}
	reset, err := e.isReset(sp.GetGroupId())
	if err != nil {
		return nil, nil, err
	}
	if reset && !sp.GetJoin() {
		return nil, nil, fmt.Errorf("%w: %s", ErrCopyReset, sp.GetChannelId())
	}
	log := chanlog.New(e.cfg.Dedup)
	cpData, err := e.cfg.Store.GetState(sp.GetGroupId(), []byte{kindCheckpoint})
	if err != nil {
		return nil, nil, fmt.Errorf("replica: read checkpoint of %s: %w", sp.GetChannelId(), err)
	}
	if cpData != nil {
		var cp replicav1.ChannelCheckpoint
		if err := proto.Unmarshal(cpData, &cp); err != nil {
			return nil, nil, fmt.Errorf("replica: decode checkpoint of %s: %w", sp.GetChannelId(), err)
		}
		records, err := e.dedupRecords(sp.GetGroupId())
		if err != nil {
			return nil, nil, fmt.Errorf("replica: read dedup records of %s: %w", sp.GetChannelId(), err)
		}
		if log, err = chanlog.Restore(e.cfg.Dedup, &cp, records); err != nil {
			return nil, nil, fmt.Errorf("replica: restore %s: %w", sp.GetChannelId(), err)
		}
	}
	// The epoch fence starts at the newest epoch known for the channel: this load's, or the
	// one the previous load stored (a late order of an earlier hibernation must stay refused
	// after an unload or a restart). The spec is stored with it.
	fence := sp.GetEpoch()
	if prev, err := e.cfg.Store.GetState(sp.GetGroupId(), []byte{kindSpec}); err != nil {
		return nil, nil, fmt.Errorf("replica: read spec of %s: %w", sp.GetChannelId(), err)
	} else if prev != nil {
		var old replicav1.GroupSpec
		if err := proto.Unmarshal(prev, &old); err != nil {
			return nil, nil, fmt.Errorf("replica: decode spec of %s: %w", sp.GetChannelId(), err)
		}
		fence = max(fence, old.GetEpoch())
	}
	if fence != sp.GetEpoch() {
		sp = proto.Clone(sp).(*replicav1.GroupSpec)
		sp.Epoch = fence
	}
	ch := &channel{id: sp.GetChannelId(), group: sp.GetGroupId(), spec: sp, join: sp.GetJoin(), voters: voters, log: log,
		checkpointedAt: log.AppliedIndex(), notify: make(chan struct{}), unloaded: make(chan struct{})}
	ch.lastSeq.Store(log.LastSeq())
	ch.appliedIndex.Store(log.AppliedIndex())
	ch.epoch.Store(fence)
	ch.reset.Store(reset)
	ch.lastActivity.Store(e.cfg.Now().UnixNano())
	e.byID[ch.id] = ch
	e.byGroup[ch.group] = ch
	specData, err := proto.Marshal(sp)
	if err != nil {
		return nil, nil, fmt.Errorf("replica: encode spec: %w", err)
	}
	gid := make([]byte, 8)
	binary.BigEndian.PutUint64(gid, ch.group)
	return ch, []raftstore.StateWrite{
		{GroupID: ch.group, Key: []byte{kindSpec}, Value: specData},
		{GroupID: 0, Key: channelKey(ch.id), Value: gid},
	}, nil
}

// failure is the error of a loaded channel that failed, nil otherwise.
func (e *Engine) failure(channelID string) error {
	e.mu.RLock()
	ch := e.byID[channelID]
	e.mu.RUnlock()
	if ch == nil {
		return nil
	}
	return ch.failure()
}

func (e *Engine) forget(channelID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ch := e.byID[channelID]; ch != nil {
		delete(e.byID, channelID)
		delete(e.byGroup, ch.group)
	}
}

// Unload hibernates a channel here: refused unless its group is at rest (see
// multiraft.Host.UnloadGroup); its state is checkpointed so a later load resumes exactly.
func (e *Engine) Unload(ctx context.Context, channelID string) error {
	ch, err := e.channel(channelID)
	if err != nil {
		return err
	}
	if err := e.host.UnloadGroup(ctx, ch.group); err != nil {
		return fmt.Errorf("replica: unload %s: %w", channelID, err)
	}
	// The group is out of the host: nothing applies to ch.log any more.
	w, err := checkpointWrite(ch)
	if err == nil {
		err = e.cfg.Store.SaveState(w)
	}
	e.forget(channelID)
	close(ch.unloaded)
	if err != nil {
		return fmt.Errorf("replica: checkpoint %s: %w", channelID, err)
	}
	return nil
}
