package multiraft

import (
	"encoding/binary"

	"go.etcd.io/raft/v3"
)

// Linearizable reads: ReadIndex requests batched per group per round.

// readIndex queues a read confirmation (Host.ReadIndexAsync) for the group's next Ready.
func (s *shard) readIndex(id uint64, p *Proposal) {
	g, err := s.lookup(id)
	if err != nil {
		p.finish(0, err)
		return
	}
	if bs := g.rn.BasicStatus(); bs.RaftState != raft.StateLeader {
		p.finish(0, &NotLeaderError{GroupID: id, LeaderID: bs.Lead, Term: bs.GetTerm()})
		return
	}
	g.readBatch = append(g.readBatch, p)
	s.markDirty(g)
}

// issueReads hands the reads queued this round to raft as one ReadIndex: one heartbeat to each
// peer confirms them all.
func (s *shard) issueReads(g *group) {
	s.readSeq++
	if g.pendingReads == nil {
		g.pendingReads = make(map[uint64][]*Proposal)
	}
	g.pendingReads[s.readSeq] = g.readBatch
	g.readBatch = nil
	g.rn.ReadIndex(binary.BigEndian.AppendUint64(nil, s.readSeq))
}

// finishReads answers the reads raft confirmed with rs: a quorum acknowledged this replica's
// leadership after they were issued, and rs.Index is the commit index as of then.
func (s *shard) finishReads(g *group, rs raft.ReadState) {
	if len(rs.RequestCtx) != 8 {
		return
	}
	seq := binary.BigEndian.Uint64(rs.RequestCtx)
	for _, p := range g.pendingReads[seq] {
		p.finish(rs.Index, nil)
	}
	delete(g.pendingReads, seq)
}

// failReads fails every read of the group not confirmed yet: raft forgets them when its
// leader steps down.
func failReads(g *group, err error) {
	for _, p := range g.readBatch {
		p.finish(0, err)
	}
	for _, ps := range g.pendingReads {
		for _, p := range ps {
			p.finish(0, err)
		}
	}
	g.readBatch, g.pendingReads = nil, nil
}
