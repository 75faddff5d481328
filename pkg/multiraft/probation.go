package multiraft

import (
	"bytes"
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Probation: a replica whose store lost what the configuration counts on it for takes no
// part in elections or commits until a conf change carrying its token admits it.

// probation filters what a group on probation (GroupSpec.AdmitToken) takes from its peers:
// no vote requests and no leadership transfers (its vote may be one an earlier store of this
// node already gave in the same term, and its log may lack what that store acknowledged), and
// heartbeats without their commit index, which the leader sends as what it believes this
// replica holds (raft would panic on one beyond the log, or commit entries this log holds
// differently). The heartbeat itself is still answered, so the leader keeps probing with
// appends, whose commit index raft checks against this log.
//
// An append beyond the end of this log is answered at most once per heartbeat: a leader that
// believes this replica holds more than it does (the old store's match index) answers each
// rejection with the same append at once, a loop at network speed until it removes this
// replica, while a leader that merely probes needs one answer per step. Returns nil to drop m.
func (g *group) probation(m *raftpb.Message) *raftpb.Message {
	switch m.GetType() {
	case raftpb.MessageType_MsgVote, raftpb.MessageType_MsgPreVote, raftpb.MessageType_MsgTimeoutNow:
		return nil
	case raftpb.MessageType_MsgApp:
		if m.GetIndex() > g.lastIndex {
			if !g.probeCredit {
				return nil
			}
			g.probeCredit = false
		}
	case raftpb.MessageType_MsgHeartbeat:
		g.probeCredit = true
		if m.GetCommit() == 0 && len(m.GetContext()) == 0 {
			return m
		}
		// The transport's message may be shared; the copy is the only one changed. The
		// context goes too: the answer would count towards a read's confirmation of the
		// leader (ReadIndex), which a vote of the earlier store may already have deposed.
		m = proto.Clone(m).(*raftpb.Message)
		m.Commit = new(uint64(0))
		m.Context = nil
	}
	return m
}

// Admits reports whether e is the conf change that admits replica self on probation with
// token (see GroupSpec.AdmitToken): it adds self, as a voter or a learner, and carries the
// token as its context.
func Admits(e *raftpb.Entry, self uint64, token []byte) bool {
	if e.GetType() != raftpb.EntryConfChangeV2 {
		return false
	}
	var cc raftpb.ConfChangeV2
	if proto.Unmarshal(e.GetData(), &cc) != nil || !bytes.Equal(cc.GetContext(), token) {
		return false
	}
	for _, c := range cc.GetChanges() {
		switch c.GetType() {
		case raftpb.ConfChangeType_ConfChangeAddNode, raftpb.ConfChangeType_ConfChangeAddLearnerNode:
			if c.GetNodeId() == self {
				return true
			}
		}
	}
	return false
}

// admitSnapshot makes a snapshot whose configuration lacks this replica acceptable to raft,
// which otherwise drops it, by adding the replica as a learner.
//
// A leader sends snapshots only to replicas of its applied configuration, so a snapshot
// lacks this replica only when the replica was added after the snapshot's index: a joining
// replica that is sent the group's bootstrap state, or a replica added after the leader's
// last snapshot. The conf change that added it is then committed after the snapshot, and
// this replica replays it with every other entry after the snapshot. Each change names the
// state it gives a replica (voter, learner, removed) whatever the replica was, so from the
// first change that names this replica on, the configuration is exactly the group's; before
// it, the only difference is this replica being a learner, which lets it take entries but
// neither vote for itself nor campaign. (etcd solves the same problem on the leader, by
// replacing the snapshot with a fresh one of its applied state.)
func (s *shard) admitSnapshot(g *group, m *raftpb.Message) *raftpb.Message {
	if raft.IsEmptySnap(m.GetSnapshot()) {
		return m
	}
	self := s.h.cfg.NodeID
	cs := m.GetSnapshot().GetMetadata().GetConfState()
	for _, set := range [][]uint64{cs.GetVoters(), cs.GetLearners(), cs.GetVotersOutgoing()} {
		if slices.Contains(set, self) {
			return m
		}
	}
	// The transport's message may be shared; the copy is the only one changed.
	m = proto.Clone(m).(*raftpb.Message)
	md := raftpb.EnsureSnapshotMetadata(m.GetSnapshot().GetMetadata())
	md.ConfState = raftpb.EnsureConfState(md.ConfState)
	md.ConfState.Learners = append(md.ConfState.Learners, self)
	slices.Sort(md.ConfState.Learners)
	s.h.log.Info("admitting a snapshot from before this replica was added, as a learner",
		"group", g.id, "index", md.GetIndex(), "conf", cs.String())
	return m
}
