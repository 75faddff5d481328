package multiraft

import (
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/tracker"
)

// Operations on the shard's groups that run on its worker: install, unload, campaign,
// transfer, status and shutdown.

func (s *shard) lookup(id uint64) (*group, error) {
	if f := s.h.failure(id); f != nil {
		s.dropFailed(id)
		return nil, f
	}
	g := s.groups[id]
	if g == nil {
		return nil, fmt.Errorf("multiraft: group %d: %w", id, ErrGroupNotFound)
	}
	return g, nil
}

func (s *shard) install(gs []*group) {
	for _, g := range gs {
		if s.groups[g.id] != nil {
			continue
		}
		g.loaded = true
		s.groups[g.id] = g
		s.peak = max(s.peak, len(s.groups))
		s.markDirty(g) // entries committed but not applied come out in its first Ready
	}
}

// unload drops a quiescent group. It returns the configuration record to write before the
// Store releases the group, nil when the newest queued one is as of the applied index.
func (s *shard) unload(id uint64) (*confRecord, error) {
	g, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	if g.rn.HasReady() && !s.handleReady(g) {
		return nil, s.h.Failure(id)
	}
	if why := g.quiescence(); why != "" {
		return nil, fmt.Errorf("multiraft: group %d: %w: %s", id, ErrNotQuiescent, why)
	}
	var rec *confRecord
	// At rest everything is applied, so confState is the configuration as of applied.
	if applied := g.rn.BasicStatus().Applied; applied > g.confRecorded && applied >= g.confFloor {
		rec = &confRecord{index: applied, cs: g.confState}
	}
	if g.leaderPos >= 0 {
		s.dropLeader(g)
	}
	failReads(g, fmt.Errorf("multiraft: group %d: read: %w", id, ErrGroupNotFound))
	delete(s.groups, id)
	g.loaded = false
	g.rn = nil
	if n := len(s.groups); n == 0 || (s.peak >= 1024 && n <= s.peak/4) {
		s.groups = compacted(s.groups)
		s.peak = n
	}
	return rec, nil
}

func compacted(m map[uint64]*group) map[uint64]*group {
	fresh := make(map[uint64]*group, len(m))
	for k, v := range m {
		fresh[k] = v
	}
	return fresh
}

func (s *shard) campaign(id uint64) error {
	g, err := s.lookup(id)
	if err != nil {
		return err
	}
	if g.admit != nil {
		return fmt.Errorf("multiraft: group %d: %w (on probation until admitted)", id, ErrCampaignIgnored)
	}
	if err := g.rn.Campaign(); err != nil {
		return fmt.Errorf("multiraft: group %d: campaign: %w", id, err)
	}
	s.markDirty(g)
	if g.rn.BasicStatus().RaftState == raft.StateFollower {
		return fmt.Errorf("multiraft: group %d: %w (learner, not a voter, or conf changes to apply)", id, ErrCampaignIgnored)
	}
	return nil
}

func (s *shard) transferLeader(id, target uint64) error {
	g, err := s.lookup(id)
	if err != nil {
		return err
	}
	bs := g.rn.BasicStatus()
	if bs.RaftState != raft.StateLeader {
		return &NotLeaderError{GroupID: id, LeaderID: bs.Lead, Term: bs.GetTerm()}
	}
	if target == s.h.cfg.NodeID {
		return nil
	}
	voter := false
	g.rn.WithProgress(func(pid uint64, typ raft.ProgressType, _ tracker.Progress) {
		voter = voter || (pid == target && typ == raft.ProgressTypePeer)
	})
	if !voter {
		return fmt.Errorf("multiraft: group %d: transfer leader: node %d is not a voter", id, target)
	}
	g.rn.TransferLeader(target)
	s.markDirty(g)
	return nil
}

func (s *shard) status(id uint64) (Status, error) {
	g, err := s.lookup(id)
	if err != nil {
		return Status{}, err
	}
	// So LastIndex counts entries raft appended since the last round.
	if g.rn.HasReady() && !s.handleReady(g) {
		return Status{}, s.h.Failure(id)
	}
	return g.status(s.h.cfg.NodeID), nil
}

// shutdown fails everything pending. It runs after the worker has stopped.
func (s *shard) shutdown(err error) {
	s.mu.Lock()
	s.closed = true
	in := s.in
	s.in = inbox{}
	s.mu.Unlock()
	for _, p := range in.props {
		p.finish(0, err)
	}
	for _, g := range s.groups {
		for _, p := range g.waiters {
			p.finish(0, err)
		}
		g.waiters, g.unverified = nil, nil
		failReads(g, err)
	}
}
