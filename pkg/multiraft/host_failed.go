package multiraft

import (
	"context"
	"fmt"
	"maps"
	"slices"
)

// Groups that failed on this host alone (see Applier.Apply), and their reset.

// failGroups fails groups alone (see Applier.Apply): it records them, so that the stages
// drop their work from now on, and has their workers drop them.
func (h *Host) failGroups(fs []*GroupFailedError) {
	var fresh []*GroupFailedError
	h.failMu.Lock()
	if h.failed == nil {
		h.failed = make(map[uint64]*GroupFailedError)
	}
	for _, f := range fs {
		if h.failed[f.GroupID] == nil {
			h.failed[f.GroupID] = f
			fresh = append(fresh, f)
		}
	}
	h.anyFailed.Store(len(h.failed) > 0)
	h.failMu.Unlock()
	for _, f := range fresh {
		h.log.Error("raft group failed: it no longer applies, votes or acknowledges on this node, and stays unloaded",
			"group", f.GroupID, "index", f.Index, "err", f.Err)
		s := h.shardFor(f.GroupID)
		// The worker also drops it on its next touch of the group, whichever comes first.
		s.pushOp(func() { s.dropFailed(f.GroupID) })
	}
}

// failure returns the failure of a group, nil if it has not failed.
func (h *Host) failure(groupID uint64) *GroupFailedError {
	if !h.anyFailed.Load() {
		return nil
	}
	h.failMu.RLock()
	defer h.failMu.RUnlock()
	return h.failed[groupID]
}

// Failure returns the *GroupFailedError of a group that failed on this host (see
// Applier.Apply), or nil. A failed group stays failed until the process exits or
// ResetGroup discards it.
func (h *Host) Failure(groupID uint64) error {
	if f := h.failure(groupID); f != nil {
		return f
	}
	return nil
}

// forgetFailure ends the failure of a group whose data ResetGroup deleted.
func (h *Host) forgetFailure(groupID uint64) {
	h.failMu.Lock()
	defer h.failMu.Unlock()
	delete(h.failed, groupID)
	h.anyFailed.Store(len(h.failed) > 0)
}

// ResetGroup discards this replica's copy of a group that failed here (see Applier.Apply):
// its log, hard state, snapshot, configuration and state records go, and the failure is
// forgotten, so that the group can be loaded again, with GroupSpec.Join and an AdmitToken:
// its copy is gone, and the votes and entries the configuration counts on it for with it.
// Anything of the group queued in the stages before the reset is handled, or dropped as
// failed, before its data goes. Resetting a group that has not failed is refused: a copy
// that serves must not vanish under its peers.
//
// The caller must make sure, before calling, that a restart cannot load the group without
// Join (the replica keeps its own mark): a crash between the delete and the rejoin would
// otherwise bootstrap an empty log as a voter.
func (h *Host) ResetGroup(ctx context.Context, groupID uint64) error {
	if h.failure(groupID) == nil {
		return fmt.Errorf("multiraft: reset group %d: %w", groupID, ErrNotFailed)
	}
	s := h.shardFor(groupID)
	done := make(chan error, 1)
	// From the worker: the group is dropped there first, so nothing more of it is queued
	// behind the reset.
	if err := h.exec(ctx, s, func() error {
		s.dropFailed(groupID)
		h.appends.push([]appendTask{{group: groupID, reset: &resetTask{done: done}}})
		return nil
	}); err != nil {
		return fmt.Errorf("multiraft: reset group %d: %w", groupID, err)
	}
	if h.cfg.Manual {
		// The caller is the goroutine that runs the rounds (see ProcessRound): the reset
		// reaches the worker again in the round after the stages' drains.
		for len(done) == 0 {
			if _, err := h.ProcessRound(); err != nil {
				return fmt.Errorf("multiraft: reset group %d: %w", groupID, err)
			}
		}
	}
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("multiraft: reset group %d: delete: %w", groupID, err)
		}
		h.log.Warn("raft group reset: its copy here was discarded; it may join again", "group", groupID)
		return nil
	case <-h.stopped:
		return fmt.Errorf("multiraft: reset group %d: %w", groupID, ErrStopped)
	case <-ctx.Done():
		return fmt.Errorf("multiraft: reset group %d: %w", groupID, ctx.Err())
	}
}

// FailedGroups lists the groups that failed on this host, in increasing order.
func (h *Host) FailedGroups() []uint64 {
	h.failMu.RLock()
	defer h.failMu.RUnlock()
	ids := slices.Collect(maps.Keys(h.failed))
	slices.Sort(ids)
	return ids
}
