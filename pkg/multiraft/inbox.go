package multiraft

import (
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// A shard's inbox: what other goroutines hand its worker (messages, proposals, storage
// completions, operations, ticks), taken whole at the start of each round.

// inbox is what a worker takes at the start of a round.
type inbox struct {
	// local are completions from the storage stages; they are never dropped.
	local       []localDone
	props       []*Proposal
	ops         []func()
	ticks       int
	unreachable []peer
	// snapSent are the MsgSnaps handed to the Transport, to report to raft as sent.
	snapSent []peer
	msgs     []Envelope
}

type peer struct{ group, node uint64 }

// acceptable says whether a message may come from a peer. Local message types and types the
// host does not use are refused: a peer's MsgProp in particular would put entries into the
// leader's log behind the host's back, and a forged local sender would be stepped as if it
// came from this node's storage stages.
func (s *shard) acceptable(e Envelope) bool {
	m := e.Msg
	if m == nil || e.GroupID == 0 || m.GetTo() != s.h.cfg.NodeID {
		return false
	}
	if from := m.GetFrom(); from == 0 || raft.IsLocalMsgTarget(from) || from == s.h.cfg.NodeID {
		return false
	}
	switch m.GetType() {
	case raftpb.MessageType_MsgApp, raftpb.MessageType_MsgAppResp,
		raftpb.MessageType_MsgVote, raftpb.MessageType_MsgVoteResp,
		raftpb.MessageType_MsgPreVote, raftpb.MessageType_MsgPreVoteResp,
		raftpb.MessageType_MsgHeartbeat, raftpb.MessageType_MsgHeartbeatResp,
		raftpb.MessageType_MsgSnap, raftpb.MessageType_MsgTimeoutNow:
		return true
	}
	return false
}

func (s *shard) pushMsgs(envs []Envelope) {
	dropped := 0
	s.mu.Lock()
	for _, e := range envs {
		if s.closed || len(s.in.msgs) >= s.h.cfg.MaxInboxMessages || !s.acceptable(e) {
			dropped++
			continue
		}
		s.in.msgs = append(s.in.msgs, e)
	}
	s.mu.Unlock()
	if dropped > 0 {
		s.h.log.Debug("dropped incoming raft messages", "count", dropped)
	}
	if dropped < len(envs) {
		s.wake()
	}
}

func (s *shard) pushProposal(p *Proposal) {
	s.mu.Lock()
	var err error
	switch {
	case s.closed:
		err = s.h.stopErr()
	case len(s.in.props) >= s.h.cfg.MaxPendingProposals:
		err = fmt.Errorf("multiraft: group %d: %d proposals queued: %w", p.group, len(s.in.props), ErrOverloaded)
	default:
		s.in.props = append(s.in.props, p)
	}
	s.mu.Unlock()
	if err != nil {
		p.finish(0, err)
		return
	}
	s.wake()
}

func (s *shard) pushOp(op func()) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.in.ops = append(s.in.ops, op)
	s.mu.Unlock()
	s.wake()
	return true
}

func (s *shard) pushLocal(done []localDone) {
	s.mu.Lock()
	if !s.closed {
		s.in.local = append(s.in.local, done...)
	}
	s.mu.Unlock()
	s.wake()
}

func (s *shard) pushUnreachable(groupID, nodeID uint64) {
	s.mu.Lock()
	// Reports only speed recovery up; past the message bound they are noise.
	if !s.closed && len(s.in.unreachable) < s.h.cfg.MaxInboxMessages {
		s.in.unreachable = append(s.in.unreachable, peer{groupID, nodeID})
	}
	s.mu.Unlock()
	s.wake()
}

func (s *shard) pushSnapSent(sent []peer) {
	s.mu.Lock()
	if !s.closed {
		s.in.snapSent = append(s.in.snapSent, sent...)
	}
	s.mu.Unlock()
	s.wake()
}

func (s *shard) addTick() {
	s.mu.Lock()
	s.in.ticks++
	s.mu.Unlock()
	s.wake()
}

func (in *inbox) empty() bool {
	return len(in.local) == 0 && len(in.props) == 0 && len(in.ops) == 0 && in.ticks == 0 &&
		len(in.unreachable) == 0 && len(in.snapSent) == 0 && len(in.msgs) == 0
}

func (s *shard) pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.in.empty()
}

// take swaps the inbox for the spare one, leaving peer messages and proposals beyond
// MaxRoundItems queued for the next round. Completions, operations and ticks are always
// taken whole: they are few, and completions free raft's flow control.
func (s *shard) take() inbox {
	limit := s.h.cfg.MaxRoundItems
	s.mu.Lock()
	in := s.in
	s.in, s.spare = s.spare, inbox{}
	if len(in.msgs) > limit {
		s.in.msgs = append(s.in.msgs, in.msgs[limit:]...)
		clear(in.msgs[limit:])
		in.msgs = in.msgs[:limit]
	}
	if len(in.props) > limit {
		s.in.props = append(s.in.props, in.props[limit:]...)
		clear(in.props[limit:])
		in.props = in.props[:limit]
	}
	s.mu.Unlock()
	return in
}

func (s *shard) recycle(in inbox) {
	clear(in.local)
	clear(in.props)
	clear(in.ops)
	clear(in.unreachable)
	clear(in.snapSent)
	clear(in.msgs)
	s.spare = inbox{
		local:       in.local[:0],
		props:       in.props[:0],
		ops:         in.ops[:0],
		unreachable: in.unreachable[:0],
		snapSent:    in.snapSent[:0],
		msgs:        in.msgs[:0],
	}
}
