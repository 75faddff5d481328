package multiraft

import (
	"fmt"

	"go.etcd.io/raft/v3"
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
	// not come back; a group is only unloaded when both are zero.
	appending int
	applying  int

	// waiters are the proposals of this replica in index order, until applied or failed.
	waiters []*Proposal
	// unverified are the waiters proposed since the last Ready, whose predicted position is
	// checked against the entries of the next one.
	unverified []*Proposal

	dirty  bool
	loaded bool
}

// newGroup builds a group's RawNode from its stored state. It does not touch any shard, so
// it runs on the caller's goroutine and the worker only installs the result.
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
	applied, err := h.cfg.Applier.Applied(id)
	if err != nil {
		return nil, fmt.Errorf("multiraft: group %d: applied index: %w", id, err)
	}
	snapIndex := first - 1
	switch {
	case applied > last:
		return nil, fmt.Errorf("multiraft: group %d: applier is at %d beyond the log's last index %d", id, applied, last)
	case applied < snapIndex && snapIndex > BootstrapIndex:
		return nil, fmt.Errorf("multiraft: group %d: applier is at %d, before the log's first index %d", id, applied, first)
	}
	// raft refuses an applied index beyond the stored commit index; resume raft from the
	// commit index and keep the gap from the Applier instead.
	raftApplied, floor := applied, uint64(0)
	if raftApplied > hs.GetCommit() {
		raftApplied, floor = hs.GetCommit(), applied
	}
	if raftApplied <= snapIndex {
		raftApplied = 0 // raft starts at the snapshot anyway
	}
	rn, err := newRawNode(h.cfg.raftConfig(id, raftApplied, log))
	if err != nil {
		return nil, fmt.Errorf("multiraft: group %d: %w", id, err)
	}
	return &group{
		id:         id,
		rn:         rn,
		role:       raft.StateFollower,
		leaderPos:  -1,
		lastIndex:  last,
		lastTerm:   lastTerm,
		applyFloor: floor,
	}, nil
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
	}
	if bs.RaftState == raft.StateLeader {
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
