package multiraft

import (
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// sanitize fixes what in a peer's message would make raft panic rather than refuse it,
// before the message reaches raft: a frame forged or corrupted on the way must not fail the
// group it names (issue 17). Raft checks most fields against the log itself and refuses
// what does not fit; what it trusts is checked here.
//
// A heartbeat's commit index: raft commits up to it (commitTo) and panics when it lies past
// the log. A leader sends the lesser of its commit index and what this replica acknowledged
// holding, which g.lastIndex covers (it counts every entry raft handed over in a Ready, and
// an entry is acknowledged only once persisted from one). A heartbeat beyond it keeps its
// term and is answered, but commits nothing: committing up to the end of this log instead
// could commit entries the leader's log holds differently. Losing a genuine commit index
// only delays the commit to the next append or heartbeat.
func (s *shard) sanitize(g *group, m *raftpb.Message) *raftpb.Message {
	if m.GetType() != raftpb.MessageType_MsgHeartbeat || m.GetCommit() <= g.lastIndex {
		return m
	}
	s.h.log.Warn("dropped the commit index of a heartbeat past this log",
		"group", g.id, "from", m.GetFrom(), "term", m.GetTerm(), "commit", m.GetCommit(), "last_index", g.lastIndex)
	// The transport's message may be shared; the copy is the only one changed.
	m = proto.Clone(m).(*raftpb.Message)
	m.Commit = new(uint64(0))
	return m
}
