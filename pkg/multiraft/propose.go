package multiraft

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/confchange"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"
)

// Proposals: handed to raft per group, verified against what raft accepted, and settled
// when their entries are applied.

// verify checks that the entries of this round's proposals are where propose predicted:
// same index, term and data. A proposal that is not there (its leader stepped down and
// its entry was overwritten in the same round) fails instead of waiting on a position that
// now belongs to another entry.
func (s *shard) verify(g *group, m *raftpb.Message) {
	ents := m.GetEntries()
	for _, p := range g.unverified {
		ok := false
		if len(ents) > 0 && p.index >= ents[0].GetIndex() {
			if off := p.index - ents[0].GetIndex(); off < uint64(len(ents)) {
				e := ents[off]
				ok = e.GetIndex() == p.index && e.GetTerm() == p.term && bytes.Equal(e.GetData(), p.data)
			}
		}
		p.data = nil
		if !ok {
			s.h.log.Warn("proposal not found at its predicted position", "group", g.id, "index", p.index, "term", p.term)
			g.waiters = slices.DeleteFunc(g.waiters, func(w *Proposal) bool { return w == p })
			p.finish(0, fmt.Errorf("multiraft: group %d: entry %d: %w", g.id, p.index, ErrLeadershipLost))
		}
	}
	clear(g.unverified)
	g.unverified = g.unverified[:0]
}

// settle resolves the waiters of applied entries: the entry applied at a proposal's index
// is the proposal's exactly when it has the proposal's term.
func (s *shard) settle(g *group, applied []*raftpb.Entry) {
	n := 0
	for _, e := range applied {
		idx := e.GetIndex()
		for n < len(g.waiters) && g.waiters[n].index <= idx {
			p := g.waiters[n]
			n++
			if p.index == idx && p.term == e.GetTerm() {
				p.finish(idx, nil)
			} else {
				p.finish(0, fmt.Errorf("multiraft: group %d: entry %d: %w", g.id, p.index, ErrProposalLost))
			}
		}
	}
	if n == 0 {
		return
	}
	clear(g.waiters[:n])
	g.waiters = g.waiters[n:]
	if len(g.waiters) == 0 {
		g.waiters = nil // let the backing array go
	}
}

// propose hands the proposals queued this round to raft, per group as few MsgProps as
// MaxProposalBatchBytes allows. The index each entry gets is known in advance: once raft has
// nothing unhandled the group's last index is exact, and a leader appends a MsgProp's
// entries right after it, in order, at its current term.
func (s *shard) propose(props []*Proposal) {
	slices.SortStableFunc(props, func(a, b *Proposal) int { return cmp.Compare(a.group, b.group) })
	for len(props) > 0 {
		n := 1
		for n < len(props) && props[n].group == props[0].group {
			n++
		}
		s.proposeGroup(props[0].group, props[:n])
		props = props[n:]
	}
}

func (s *shard) proposeGroup(id uint64, props []*Proposal) {
	g, err := s.lookup(id)
	if err != nil {
		for _, p := range props {
			p.finish(0, err)
		}
		return
	}
	if g.rn.HasReady() && !s.handleReady(g) { // makes lastIndex exact
		for _, p := range props {
			p.finish(0, s.h.Failure(id))
		}
		return
	}
	bs := g.rn.BasicStatus()
	if bs.RaftState != raft.StateLeader {
		err := &NotLeaderError{GroupID: id, LeaderID: bs.Lead, Term: bs.GetTerm()}
		for _, p := range props {
			p.finish(0, err)
		}
		return
	}
	term := bs.GetTerm()
	limit := s.h.cfg.MaxProposalBatchBytes
	for len(props) > 0 {
		// A conf change goes alone, so that raft's verdict on it is its own.
		n, size := 1, uint64(len(props[0].data))
		for !props[0].conf && n < len(props) && !props[n].conf && size+uint64(len(props[n].data)) <= limit {
			size += uint64(len(props[n].data))
			n++
		}
		batch := props[:n]
		props = props[n:]
		ents := make([]*raftpb.Entry, n)
		for i, p := range batch {
			ents[i] = &raftpb.Entry{Data: p.data}
		}
		conf := batch[0].conf
		if conf {
			if err := validConfChange(g.confState, batch[0].data); err != nil {
				batch[0].finish(0, fmt.Errorf("multiraft: group %d: %w: %w", id, ErrConfChangeRefused, err))
				continue
			}
			ents[0].Type = raftpb.EntryType_EntryConfChangeV2.Enum()
		}
		err := g.rn.Step(&raftpb.Message{
			Type:    raftpb.MessageType_MsgProp.Enum(),
			From:    proto.Uint64(s.h.cfg.NodeID),
			Entries: ents,
		})
		if err != nil {
			// raft.ErrProposalDropped: over MaxUncommittedEntriesSize or a transfer is on.
			for _, p := range batch {
				p.finish(0, fmt.Errorf("multiraft: group %d: propose: %w", id, err))
			}
			continue
		}
		g.lastTerm = term
		if conf && ents[0].GetType() != raftpb.EntryType_EntryConfChangeV2 {
			// Raft appended an empty entry in its place: a conf change may not be applied
			// yet (an earlier one, or one in the log the leader has not applied since its
			// election).
			g.lastIndex++
			batch[0].finish(0, fmt.Errorf("multiraft: group %d: %w: a conf change may be pending", id, ErrConfChangeRefused))
			continue
		}
		for _, p := range batch {
			g.lastIndex++
			p.index, p.term = g.lastIndex, term
		}
		g.waiters = append(g.waiters, batch...)
		g.unverified = append(g.unverified, batch...)
	}
	s.markDirty(g)
}

// validConfChange checks the encoded ConfChangeV2 against the configuration as raft would
// when applying it, so that a change raft cannot apply (it panics on those) is refused
// before it is committed. No other conf change can come between: raft takes one only when
// every earlier one is applied.
func validConfChange(cs *raftpb.ConfState, data []byte) error {
	cc := new(raftpb.ConfChangeV2)
	if err := proto.Unmarshal(data, cc); err != nil {
		return fmt.Errorf("decode conf change: %w", err)
	}
	chg := confchange.Changer{Tracker: tracker.MakeProgressTracker(1, 0), LastIndex: 1}
	cfg, trk, err := confchange.Restore(chg, cs)
	if err != nil {
		return fmt.Errorf("current configuration: %w", err)
	}
	chg.Tracker.Config, chg.Tracker.Progress = cfg, trk
	if cc.LeaveJoint() {
		_, _, err = chg.LeaveJoint()
	} else if autoLeave, joint := cc.EnterJoint(); joint {
		_, _, err = chg.EnterJoint(autoLeave, cc.GetChanges()...)
	} else {
		_, _, err = chg.Simple(cc.GetChanges()...)
	}
	return err
}
