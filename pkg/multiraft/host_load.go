package multiraft

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/triarch-io/triarch/pkg/raftstore"
)

// Loading and unloading groups: bootstrapping new ones, restoring the others from the Store.

// BootstrapIndex is the log position of a new group's initial configuration. The host
// bootstraps a group by storing a snapshot at this index that holds only the voter set, so
// the first entry of a group's log, and the first entry the Applier sees, is
// BootstrapIndex+1.
const BootstrapIndex uint64 = 1

// GroupSpec names a group and, for a group with no data on this replica yet, how it starts:
// bootstrapped with Voters, or joining a running group.
type GroupSpec struct {
	GroupID uint64
	// Voters bootstraps a brand-new group; it must hold this node and be the same on every
	// replica. It is ignored for a group that already has data (raft's stored
	// configuration is authoritative).
	Voters []uint64
	// Join loads a group this replica is being added to (ProposeConfChange on its leader):
	// with no data here, the group starts with an empty log and no configuration, and
	// learns everything from the leader. It cannot campaign and does nothing until the
	// leader, once the conf change adding it is applied, reaches it: the leader finds
	// nothing in common with the empty log and sends its snapshot (the group's bootstrap
	// state at BootstrapIndex if it was never compacted, which every replica stores alike),
	// then the entries after it, conf changes included, which bring the configuration up to
	// date. Load before proposing the change, so the leader's first messages are not
	// dropped. Join is ignored for a group that already has data, and excludes Voters.
	// Until the leader has reached it, the group has no data: a reload (after UnloadGroup
	// or a restart) must Join again, as bootstrapping it with Voters would give it a
	// history of its own.
	Join bool
	// AdmitToken, when set, loads the group on probation: this replica's place in the
	// group's configuration may be an earlier store's (the node's disk was replaced), whose
	// votes and log this one does not hold, so until it is admitted the group grants no vote,
	// does not campaign or take a leadership transfer, and ignores the commit index of
	// heartbeats (a leader derives it from what it believes this replica holds). It is
	// admitted when it applies a conf change adding this node whose Context equals the token
	// (the leader re-adds a replaced store that way, after removing the old one), or by
	// Admit. Appends stay accepted: what they carry is checked against this log and truly
	// stored here. Ignored for a group already loaded.
	AdmitToken []byte
}

// LoadGroup loads one group; see LoadGroups.
func (h *Host) LoadGroup(ctx context.Context, spec GroupSpec) error {
	return h.LoadGroups(ctx, []GroupSpec{spec})
}

// LoadGroups loads groups into memory. A group with no data on this replica is bootstrapped
// with spec.Voters (the bootstrap state of all new groups is written in one Store.Save
// before they start), or starts empty with spec.Join. A group with data is restored from
// the Store with its newest recorded configuration, and the Applier resumes after what it
// reports applied; an Applier behind the log's compaction point is first restored from the
// stored snapshot (Snapshotter). Loading a loaded group does nothing. A group that failed on
// this host (see Applier.Apply) is refused with its *GroupFailedError. Groups that fail are
// reported together; the others are loaded.
func (h *Host) LoadGroups(ctx context.Context, specs []GroupSpec) error {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()

	ids := make([]uint64, 0, len(specs))
	for _, sp := range specs {
		ids = append(ids, sp.GroupID)
	}
	loaded, err := h.loadedAmong(ctx, ids)
	if err != nil {
		return err
	}

	type opened struct {
		id    uint64
		log   raftstore.Log
		admit []byte
	}
	var (
		errs  []error
		todo  []opened
		boots []raftstore.Update
	)
	seen := make(map[uint64]bool, len(specs))
	for _, sp := range specs {
		if seen[sp.GroupID] {
			continue
		}
		seen[sp.GroupID] = true
		if f := h.failure(sp.GroupID); f != nil {
			// Loading it again would apply past the entry it failed on, or fail again. A
			// group failed but not dropped yet by its worker also counts as failed, not loaded.
			errs = append(errs, f)
			continue
		}
		if loaded[sp.GroupID] {
			continue
		}
		if sp.GroupID == 0 {
			errs = append(errs, errors.New("multiraft: group id 0"))
			continue
		}
		log, err := h.cfg.Store.Open(sp.GroupID)
		if err != nil {
			errs = append(errs, fmt.Errorf("multiraft: group %d: open: %w", sp.GroupID, err))
			continue
		}
		empty, err := isEmptyLog(log)
		if err == nil && sp.Join && len(sp.Voters) > 0 {
			err = fmt.Errorf("join: voters %v given to a group that joins", sp.Voters)
		}
		if err == nil && empty && !sp.Join {
			var boot raftstore.Update
			if boot, err = h.bootstrapUpdate(sp); err == nil {
				boots = append(boots, boot)
			}
		}
		if err != nil {
			h.cfg.Store.Release(sp.GroupID)
			errs = append(errs, fmt.Errorf("multiraft: group %d: %w", sp.GroupID, err))
			continue
		}
		todo = append(todo, opened{sp.GroupID, log, slices.Clone(sp.AdmitToken)})
	}

	if len(boots) > 0 {
		h.saveMu.Lock()
		err := h.cfg.Store.Save(boots)
		h.saveMu.Unlock()
		if err != nil {
			for _, o := range todo {
				h.cfg.Store.Release(o.id)
			}
			return errors.Join(append(errs, fmt.Errorf("multiraft: bootstrap %d groups: %w", len(boots), err))...)
		}
	}

	perShard := make(map[*shard][]*group)
	for _, o := range todo {
		g, err := h.newGroup(o.id, o.log)
		if err != nil {
			h.cfg.Store.Release(o.id)
			errs = append(errs, err)
			continue
		}
		g.admit, g.probeCredit = o.admit, true
		s := h.shardFor(o.id)
		perShard[s] = append(perShard[s], g)
	}
	for _, s := range h.shards {
		gs := perShard[s]
		if len(gs) == 0 {
			continue
		}
		if err := h.exec(ctx, s, func() error { s.install(gs); return nil }); err != nil {
			// The install may still run later; the groups then load as asked.
			errs = append(errs, fmt.Errorf("multiraft: install %d groups: %w", len(gs), err))
		}
	}
	h.log.DebugContext(ctx, "groups loaded", "groups", len(todo), "bootstrapped", len(boots))
	return errors.Join(errs...)
}

func (h *Host) loadedAmong(ctx context.Context, ids []uint64) (map[uint64]bool, error) {
	byShard := make(map[*shard][]uint64)
	for _, id := range ids {
		s := h.shardFor(id)
		byShard[s] = append(byShard[s], id)
	}
	loaded := make(map[uint64]bool)
	for s, ids := range byShard {
		var found []uint64
		err := h.exec(ctx, s, func() error {
			for _, id := range ids {
				if s.groups[id] != nil {
					found = append(found, id)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, id := range found {
			loaded[id] = true
		}
	}
	return loaded, nil
}

// bootstrapUpdate writes a new group's voters as the ConfState of a snapshot at
// BootstrapIndex, with term 1. Every replica writes the very same state, so the logs agree
// at BootstrapIndex without any entry, and raft restores the voters from the Store on every
// reload (conf change entries in the log would only be replayed from the log, which a
// reload that resumes after the applied index skips).
func (h *Host) bootstrapUpdate(sp GroupSpec) (raftstore.Update, error) {
	voters := slices.Clone(sp.Voters)
	slices.Sort(voters)
	voters = slices.Compact(voters)
	if len(voters) == 0 || voters[0] == 0 {
		return raftstore.Update{}, fmt.Errorf("bootstrap: invalid voters %v", sp.Voters)
	}
	if _, ok := slices.BinarySearch(voters, h.cfg.NodeID); !ok {
		return raftstore.Update{}, fmt.Errorf("bootstrap: node %d not among voters %v", h.cfg.NodeID, voters)
	}
	return raftstore.Update{
		GroupID:   sp.GroupID,
		HardState: &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(BootstrapIndex)},
		Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
			Index:     proto.Uint64(BootstrapIndex),
			Term:      proto.Uint64(1),
			ConfState: &raftpb.ConfState{Voters: voters},
		}},
	}, nil
}

func isEmptyLog(log raftstore.Log) (bool, error) {
	hs, cs, err := log.InitialState()
	if err != nil {
		return false, fmt.Errorf("initial state: %w", err)
	}
	last, err := log.LastIndex()
	if err != nil {
		return false, fmt.Errorf("last index: %w", err)
	}
	return raft.IsEmptyHardState(hs) && last == 0 && len(cs.GetVoters()) == 0 && len(cs.GetLearners()) == 0, nil
}

// UnloadGroup drops a group from memory (hibernation) and releases it in the Store; its data
// stays there and LoadGroup brings it back. It is refused with ErrNotQuiescent unless the
// group is at rest: nothing in flight in the stages, no proposal pending, everything
// committed and applied, and on the leader every replica's log matching to the last index.
//
// The group's configuration as of its applied index is recorded in the Store first (unless
// already recorded), so that the reload resumes right there instead of replaying the
// entries since the last record.
func (h *Host) UnloadGroup(ctx context.Context, groupID uint64) error {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	s := h.shardFor(groupID)
	var rec *confRecord
	err := h.exec(ctx, s, func() (err error) {
		rec, err = s.unload(groupID)
		return err
	})
	if err != nil {
		// rec may still be written by an op that ran late; do not read it.
		return err
	}
	if rec != nil {
		if err := h.cfg.Store.SaveConfState(groupID, rec.index, rec.cs); err != nil {
			// Without the record a reload replays from an older one: slower, as correct.
			h.log.WarnContext(ctx, "record configuration on unload", "group", groupID, "err", err)
		}
	}
	h.cfg.Store.Release(groupID)
	return nil
}
