package multiraft

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"

	"github.com/triarch-io/triarch/pkg/raftstore"
)

// group is one loaded raft group. Only the worker of its shard touches it.
type group struct {
	id uint64
	rn *raft.RawNode

	// role and lead mirror raft's SoftState as of the last Ready.
	role raft.StateType
	lead uint64
	// leaderPos is the group's position in its shard's leader list, -1 when not leading.
	leaderPos int

	// lastIndex and lastTerm are the last entry of the log, stable or not. They are exact
	// whenever raft has nothing unhandled (every new entry shows in a Ready), which is what
	// lets a proposal know the index raft gives it.
	lastIndex uint64
	lastTerm  uint64

	// applyFloor is the Applier's applied index when it is above the stored commit index
	// (the apply stage may finish before the commit index is saved); raft delivers those
	// entries again and the host keeps them from the Applier.
	applyFloor uint64

	// appending and applying count messages handed to the stages whose completions have
	// not come back; a group is only unloaded when both are zero. Snapshot installs and
	// configuration records count as appends.
	appending int
	applying  int

	// confState is raft's configuration as of max(raft's applied index, confFloor): the
	// configuration the group was loaded with, then every conf change applied since and every
	// snapshot raft installed.
	confState *raftpb.ConfState
	// confFloor is the index up to which conf changes are already in confState: the index of
	// the configuration record the group was loaded from, or of the last snapshot raft
	// installed. Entries at or below it that raft still hands to the apply stage (it resumes
	// no later than the Applier, which may lag the record) are not applied to raft again.
	confFloor uint64
	// confRecorded is the index of the newest configuration record queued for the Store.
	confRecorded uint64
	// restoring is set while a snapshot raft installed is being persisted and restored: the
	// group's Ready is not taken until then, so that nothing raft emits after the snapshot
	// (entries to apply after it above all) overtakes the restore.
	restoring bool
	// sinceSnapshot counts the entries handed to the apply stage since the last snapshot.
	sinceSnapshot uint64

	// waiters are the proposals of this replica in index order, until applied or failed.
	waiters []*Proposal
	// unverified are the waiters proposed since the last Ready, whose predicted position is
	// checked against the entries of the next one.
	unverified []*Proposal

	// admit is the token that admits a group on probation (GroupSpec.AdmitToken); nil once
	// admitted or when loaded without one. probeCredit allows the next append beyond the log
	// through while on probation (see probation).
	admit       []byte
	probeCredit bool

	// acked is when each peer last answered this replica's appends or heartbeats in its
	// current leadership term (kept while it leads, cleared when it stops): contact within
	// this group, which a leader's serving rule counts (Status.LastAcked).
	acked map[uint64]time.Time
	// leaderTerm is the term acked is of (see shard.recordAck).
	leaderTerm uint64

	// readBatch are the reads queued this round (Host.ReadIndexAsync); pendingReads are those
	// handed to raft, by the context of their ReadIndex, until raft confirms or forgets them.
	readBatch    []*Proposal
	pendingReads map[uint64][]*Proposal

	dirty  bool
	loaded bool
}

// newGroup builds a group's RawNode from its stored state. It does not touch any shard, so
// it runs on the caller's goroutine and the worker only installs the result.
//
// Raft must start from a configuration and an applied index that agree: the configuration
// given to raft includes exactly the conf changes up to raft's applied index, and raft hands
// every later committed entry to the apply stage, whose conf changes the host applies to
// raft. The newest configuration record in the Store (at index confIndex) and the Applier's
// applied index need not agree: either may be ahead after a crash (the record is written
// after the conf change is applied, the Applier makes its state durable when it likes). So
// raft resumes at the lowest of the two (and of the stored commit index, which raft requires),
// and the gap above it is covered by two floors: the Applier does not see entries up to its
// applied index again (applyFloor), and raft does not see conf changes up to confIndex again
// (confFloor), which its configuration already holds.
func (h *Host) newGroup(id uint64, log raftstore.Log) (*group, error) {
	hs, _, err := log.InitialState()
	if err != nil {
		return nil, fmt.Errorf("multiraft: group %d: initial state: %w", id, err)
	}
	first, err := log.FirstIndex()
	if err != nil {
		return nil, fmt.Errorf("multiraft: group %d: first index: %w", id, err)
	}
	last, err := log.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("multiraft: group %d: last index: %w", id, err)
	}
	lastTerm, err := log.Term(last)
	if err != nil {
		return nil, fmt.Errorf("multiraft: group %d: term of %d: %w", id, last, err)
	}
	confIndex, cs, err := h.cfg.Store.ConfState(id)
	if err != nil {
		return nil, fmt.Errorf("multiraft: group %d: configuration: %w", id, err)
	}
	applied, err := h.cfg.Applier.Applied(id)
	if err != nil {
		return nil, fmt.Errorf("multiraft: group %d: applied index: %w", id, err)
	}
	compacted := first - 1 // raft starts no earlier than here
	switch {
	case applied > last:
		return nil, fmt.Errorf("multiraft: group %d: applier is at %d beyond the log's last index %d", id, applied, last)
	case confIndex < compacted:
		// The conf changes between the record and the compaction point are gone.
		return nil, fmt.Errorf("multiraft: group %d: configuration recorded at %d, before the log's first index %d", id, confIndex, first)
	case applied < compacted && compacted > BootstrapIndex:
		// The entries the Applier needs next are compacted: only the snapshot has them.
		if applied, err = h.restoreStored(id, log, applied, first); err != nil {
			return nil, err
		}
	}
	raftApplied := min(applied, confIndex, hs.GetCommit())
	if raftApplied <= compacted {
		raftApplied = 0 // raft starts at the compaction point anyway
	}
	start := max(raftApplied, compacted)
	g := &group{
		id:           id,
		role:         raft.StateFollower,
		leaderPos:    -1,
		lastIndex:    last,
		lastTerm:     lastTerm,
		confState:    cs,
		confRecorded: confIndex,
	}
	if applied > start {
		g.applyFloor = applied
	}
	if confIndex > start {
		g.confFloor = confIndex
	}
	storage := confLog{Log: log, cs: cloneConfState(cs)}
	if g.rn, err = newRawNode(h.cfg.raftConfig(id, raftApplied, storage)); err != nil {
		return nil, fmt.Errorf("multiraft: group %d: %w", id, err)
	}
	return g, nil
}

// restoreStored hands the stored snapshot to a Snapshotter whose state is behind the log's
// compaction point, and returns the index it is at then.
func (h *Host) restoreStored(id uint64, log raftstore.Log, applied, first uint64) (uint64, error) {
	if h.snapshotter == nil {
		return 0, fmt.Errorf("multiraft: group %d: applier is at %d, before the log's first index %d, and cannot restore a snapshot", id, applied, first)
	}
	snap, err := log.Snapshot()
	if err != nil {
		return 0, fmt.Errorf("multiraft: group %d: stored snapshot: %w", id, err)
	}
	idx := snap.GetMetadata().GetIndex()
	if idx+1 < first {
		return 0, fmt.Errorf("multiraft: group %d: stored snapshot at %d, before the log's first index %d", id, idx, first)
	}
	if err := h.snapshotter.Restore(id, snap); err != nil {
		return 0, fmt.Errorf("multiraft: group %d: restore snapshot at %d: %w", id, idx, err)
	}
	h.log.Info("restored a group from its stored snapshot", "group", id, "index", idx, "applier_was_at", applied)
	return idx, nil
}

// confLog is a group's log as raft sees it: its InitialState carries the configuration the
// host resumes from (the newest record; see newGroup) rather than the snapshot's.
type confLog struct {
	raftstore.Log
	cs *raftpb.ConfState
}

func (l confLog) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	hs, _, err := l.Log.InitialState()
	return hs, l.cs, err
}

// newRawNode turns raft's panics on unreadable or inconsistent stored state into an error,
// so that one bad group does not take down every other group of the replica.
func newRawNode(c *raft.Config) (rn *raft.RawNode, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("restore raft state: %v", r)
		}
	}()
	return raft.NewRawNode(c)
}

// quiescence says why the group is not at rest, or "" when it is.
func (g *group) quiescence() string {
	switch {
	case g.appending > 0 || g.applying > 0:
		return fmt.Sprintf("%d appends and %d applies in flight", g.appending, g.applying)
	case len(g.waiters) > 0:
		return fmt.Sprintf("%d proposals pending", len(g.waiters))
	case g.rn.HasReady():
		return "raft has unhandled state"
	}
	bs := g.rn.BasicStatus()
	if c := bs.GetCommit(); c != g.lastIndex || bs.Applied != c {
		return fmt.Sprintf("last index %d, commit %d, applied %d", g.lastIndex, c, bs.Applied)
	}
	if bs.RaftState != raft.StateLeader {
		return ""
	}
	reason := ""
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if reason == "" && pr.Match != g.lastIndex {
			reason = fmt.Sprintf("replica %d matches %d of %d", id, pr.Match, g.lastIndex)
		}
	})
	return reason
}

func (g *group) status(self uint64) Status {
	bs := g.rn.BasicStatus()
	st := Status{
		GroupID:        g.id,
		NodeID:         self,
		Role:           bs.RaftState,
		Term:           bs.GetTerm(),
		Vote:           bs.GetVote(),
		Leader:         bs.Lead,
		LastIndex:      g.lastIndex,
		LastTerm:       g.lastTerm,
		Commit:         bs.GetCommit(),
		Applied:        bs.Applied,
		LeadTransferee: bs.LeadTransferee,
		ConfState:      cloneConfState(g.confState),
		OnProbation:    g.admit != nil,
	}
	if bs.RaftState == raft.StateLeader {
		st.LastAcked = maps.Clone(g.acked)
		st.Progress = make(map[uint64]FollowerProgress)
		g.rn.WithProgress(func(id uint64, typ raft.ProgressType, pr tracker.Progress) {
			st.Progress[id] = FollowerProgress{
				Match:   pr.Match,
				Next:    pr.Next,
				State:   pr.State,
				Learner: typ == raft.ProgressTypeLearner,
			}
		})
	}
	return st
}

// cloneConfState copies cs, with every field set as raft expects, without protobuf
// reflection: Status copies the configuration on every call. The host never changes a
// ConfState it holds; copies are for what it hands out.
func cloneConfState(cs *raftpb.ConfState) *raftpb.ConfState {
	return &raftpb.ConfState{
		Voters:         slices.Clone(cs.GetVoters()),
		Learners:       slices.Clone(cs.GetLearners()),
		VotersOutgoing: slices.Clone(cs.GetVotersOutgoing()),
		LearnersNext:   slices.Clone(cs.GetLearnersNext()),
		AutoLeave:      new(cs.GetAutoLeave()),
	}
}
