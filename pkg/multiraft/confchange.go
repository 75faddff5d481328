package multiraft

import (
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Configuration changes applied to raft, and the records of the configuration the store
// keeps beside the log.

// confRecordInterval is how many applied entries go by, at most, between two configuration
// records of a group, bounding what a restart after a crash replays through raft (see
// newGroup). A record costs one small unsynced write.
const confRecordInterval = 1024

// record queues for the append stage what the Store should know once last is applied: the
// snapshot the apply stage took there, or else the configuration after a conf change or
// after confRecordInterval entries. confState is as of last: every conf change up to it was
// applied to raft, in order, before this.
func (s *shard) record(g *group, last *raftpb.Entry, taken *takenSnapshot, confChanged bool) {
	idx := last.GetIndex()
	if idx < g.confFloor {
		// Raft already has a later configuration (a snapshot it installed, or the one it
		// was loaded with): confState is not the one as of idx.
		return
	}
	rec := &recordTask{}
	switch {
	case taken != nil && taken.index == idx:
		rec.snap = &raftpb.Snapshot{
			Metadata: &raftpb.SnapshotMetadata{
				Index:     new(idx),
				Term:      new(last.GetTerm()),
				ConfState: g.confState,
			},
			Data: taken.data,
		}
		if keep := s.h.cfg.SnapshotKeepEntries; idx >= keep {
			rec.compact = idx + 1 - keep
		}
	case confChanged || idx >= g.confRecorded+confRecordInterval:
		if idx <= g.confRecorded {
			return
		}
		rec.conf = &confRecord{index: idx, cs: g.confState}
	default:
		return
	}
	g.confRecorded = max(g.confRecorded, idx)
	g.appending++
	s.appends = append(s.appends, appendTask{group: g.id, rec: rec})
}

// applyConfChange applies the conf change in e, if it holds one, to raft and returns the new
// configuration. Raft panics on a change its configuration cannot take; ProposeConfChange
// refuses those, but a committed one (proposed by another host), or one that does not decode,
// must fail its group with an error, not the process.
func applyConfChange(rn *raft.RawNode, e *raftpb.Entry) (cs *raftpb.ConfState, err error) {
	var cc raftpb.ConfChangeI
	switch e.GetType() {
	case raftpb.EntryConfChange:
		v1 := new(raftpb.ConfChange)
		if err := proto.Unmarshal(e.GetData(), v1); err != nil {
			return nil, fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
		}
		cc = v1
	case raftpb.EntryConfChangeV2:
		v2 := new(raftpb.ConfChangeV2)
		if err := proto.Unmarshal(e.GetData(), v2); err != nil {
			return nil, fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
		}
		cc = v2
	default:
		return nil, nil
	}
	defer func() {
		if r := recover(); r != nil {
			cs, err = nil, fmt.Errorf("apply conf change at %d: %v", e.GetIndex(), r)
		}
	}()
	return rn.ApplyConfChange(cc), nil
}
