package multiraft

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// Control operations on the host's groups, each run on the group's worker: elections, leader
// transfers, the admission of a joining store, status.

// Status is a snapshot of one group on this replica.
type Status struct {
	GroupID uint64
	NodeID  uint64
	Role    raft.StateType
	Term    uint64
	Vote    uint64
	// Leader is the leader this replica knows of in Term, 0 when none.
	Leader uint64
	// LastIndex and LastTerm are the position of the last entry of the local log, including
	// entries not yet on stable storage.
	LastIndex uint64
	LastTerm  uint64
	Commit    uint64
	Applied   uint64
	// LeadTransferee is the target of a leader transfer in progress, 0 when none.
	LeadTransferee uint64
	// Progress holds every replica's progress, the leader's own included; only on the leader.
	Progress map[uint64]FollowerProgress
	// ConfState is the group's configuration as this replica applies it: voters, learners
	// and, in a joint configuration, the outgoing voters. A copy.
	ConfState *raftpb.ConfState
	// OnProbation is set while the group waits to be admitted (GroupSpec.AdmitToken).
	OnProbation bool
	// LastAcked is when each peer last answered this leader's appends or heartbeats in its
	// current term (by this host's monotonic clock); only on the leader.
	LastAcked map[uint64]time.Time
}

// FollowerProgress is the leader's view of one replica.
type FollowerProgress struct {
	Match   uint64
	Next    uint64
	State   tracker.StateType
	Learner bool
}

// Campaign orders the local replica to campaign for leadership of the group, the only way
// besides a leader transfer for a group to elect anyone. It returns once raft has taken the
// order (the election itself completes as messages flow) and fails with ErrCampaignIgnored
// when raft ignored it. Raft still guards safety: a replica whose log is behind a majority's
// loses the pre-vote and goes back to follower.
func (h *Host) Campaign(ctx context.Context, groupID uint64) error {
	s := h.shardFor(groupID)
	return h.exec(ctx, s, func() error { return s.campaign(groupID) })
}

// StoreToken is the AdmitToken of a store: its id, 8 bytes big-endian. The replica and the
// arbiter load a joining store with it, and their leaders put it in the conf changes that add
// the store back, so the two sides agree on one encoding.
func StoreToken(storeID uint64) []byte { return binary.BigEndian.AppendUint64(nil, storeID) }

// catchUpPoll is how often WaitCaughtUp looks at the node's progress.
const catchUpPoll = 5 * time.Millisecond

// WaitCaughtUp waits, on the group's leader (this replica), until node's log reaches the
// leader's last index as it was when the wait began: node then holds everything committed so
// far and follows the rest like any follower, so making it a voter cannot make a quorum
// depend on a replica far behind. It fails with *NotLeaderError once this replica does not
// lead, and with ctx's error naming where node got to.
func (h *Host) WaitCaughtUp(ctx context.Context, groupID, node uint64) error {
	st, err := h.Status(ctx, groupID)
	if err != nil {
		return err
	}
	target := st.LastIndex
	t := time.NewTicker(catchUpPoll)
	defer t.Stop()
	for {
		if st.Leader != h.cfg.NodeID {
			return &NotLeaderError{GroupID: groupID, LeaderID: st.Leader, Term: st.Term}
		}
		if p, ok := st.Progress[node]; ok && p.Match >= target {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("multiraft: group %d: node %d catching up (at %d of %d): %w",
				groupID, node, st.Progress[node].Match, target, ctx.Err())
		case <-t.C:
		}
		if st, err = h.Status(ctx, groupID); err != nil {
			return err
		}
	}
}

// Admit ends the probation of a group loaded with GroupSpec.AdmitToken: the caller learned
// that this replica's store is the one the group's configuration counts (the control tier
// recorded it). Admitting a group not on probation does nothing.
func (h *Host) Admit(ctx context.Context, groupID uint64) error {
	s := h.shardFor(groupID)
	return h.exec(ctx, s, func() error {
		g, err := s.lookup(groupID)
		if err != nil {
			return err
		}
		if g.admit != nil {
			g.admit = nil
			h.log.InfoContext(ctx, "replica admitted to its group by the control tier", "group", groupID)
		}
		return nil
	})
}

// Campaigns is Campaign for many groups, with one queued operation per shard instead of one
// per group: an ordered failover campaigns thousands of groups on a node at once, and waiting
// for the worker once per group would take longer than the elections. The result holds an
// error for each group whose order failed.
func (h *Host) Campaigns(ctx context.Context, groupIDs []uint64) (map[uint64]error, error) {
	return collect(ctx, h, groupIDs, func(s *shard, id uint64) (error, bool) {
		err := s.campaign(id)
		return err, err != nil
	})
}

// Statuses is Status for many groups, one queued operation per shard (see Campaigns). Groups
// not loaded here are missing from the result.
func (h *Host) Statuses(ctx context.Context, groupIDs []uint64) (map[uint64]Status, error) {
	return collect(ctx, h, groupIDs, func(s *shard, id uint64) (Status, bool) {
		st, err := s.status(id)
		return st, err == nil
	})
}

// collect runs get for every group on its shard's worker, all shards at once, and gathers the
// values get reports.
func collect[V any](ctx context.Context, h *Host, groupIDs []uint64, get func(s *shard, id uint64) (V, bool)) (map[uint64]V, error) {
	var (
		mu  sync.Mutex
		out = make(map[uint64]V, len(groupIDs))
	)
	err := h.perShard(ctx, groupIDs, func(s *shard, ids []uint64) func() error {
		return func() error {
			local := make(map[uint64]V, len(ids))
			for _, id := range ids {
				if v, ok := get(s, id); ok {
					local[id] = v
				}
			}
			mu.Lock()
			maps.Copy(out, local)
			mu.Unlock()
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// perShard runs the operation op makes for the groups of each shard, on all shards at once,
// and waits for them all. Each operation writes to its own state, merged by the caller after;
// on an error (ctx ended, host stopped) an operation may still be running, so the caller must
// not read that state.
func (h *Host) perShard(ctx context.Context, groupIDs []uint64, op func(s *shard, ids []uint64) func() error) error {
	byShard := map[int][]uint64{}
	for _, id := range groupIDs {
		i := h.shardIndex(id)
		byShard[i] = append(byShard[i], id)
	}
	errs := make(chan error, len(byShard))
	for i, ids := range byShard {
		fn := op(h.shards[i], ids)
		go func() { errs <- h.exec(ctx, h.shards[i], fn) }()
	}
	var first error
	for range byShard {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// TransferLeader asks the local leader to hand leadership to target, which campaigns as soon
// as its log is caught up. The local replica must lead the group.
func (h *Host) TransferLeader(ctx context.Context, groupID, target uint64) error {
	s := h.shardFor(groupID)
	return h.exec(ctx, s, func() error { return s.transferLeader(groupID, target) })
}

// Status returns the state of one group on this replica.
func (h *Host) Status(ctx context.Context, groupID uint64) (Status, error) {
	s := h.shardFor(groupID)
	var st Status
	err := h.exec(ctx, s, func() (err error) {
		st, err = s.status(groupID)
		return err
	})
	if err != nil {
		// st may still be written by an op that ran late; do not read it.
		return Status{}, err
	}
	return st, nil
}

// Groups lists the groups loaded on this host, in increasing order.
func (h *Host) Groups(ctx context.Context) ([]uint64, error) {
	var ids []uint64
	for _, s := range h.shards {
		err := h.exec(ctx, s, func() error {
			for id := range s.groups {
				ids = append(ids, id)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(ids, cmp.Compare)
	return ids, nil
}
