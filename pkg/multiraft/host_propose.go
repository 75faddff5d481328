package multiraft

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Proposals and linearizable reads, queued to the group's worker.

// ReadIndex asks this replica, which must lead the group, to confirm with a quorum of the
// group that it still leads (raft's ReadIndex, ReadOnlySafe) and returns the commit index as
// of the request: once the Applier has applied up to it, a read of the state machine reflects
// every write acknowledged anywhere before the request began. A leader that another replica
// deposed without its knowing (a higher term elected behind its back) gets no confirmation
// from that quorum, and a new leader none until an entry of its own term is committed. Reads
// of a group queued in the same round share one confirmation (one heartbeat to each peer). It
// fails with *NotLeaderError on a replica that does not lead and with ErrLeadershipLost if it
// stops leading before the confirmation; one never confirmed waits until ctx ends.
func (h *Host) ReadIndex(ctx context.Context, groupID uint64) (uint64, error) {
	return h.ReadIndexAsync(groupID).Wait(ctx)
}

// ReadIndexAsync queues a ReadIndex and returns at once; the result is the handle's.
func (h *Host) ReadIndexAsync(groupID uint64) *Proposal {
	p := newProposal(groupID, nil)
	s := h.shardFor(groupID)
	if !s.pushOp(func() { s.readIndex(groupID, p) }) {
		p.finish(0, h.stopErr())
	}
	return p
}

// Propose proposes data to the group and returns its index once the entry is committed and
// applied locally. It fails with a *NotLeaderError when the local replica does not lead the
// group, and with an error wrapping raft.ErrProposalDropped, ErrLeadershipLost,
// ErrProposalLost, ErrOverloaded, ErrGroupNotFound or ErrStopped, or the ctx's, otherwise.
// Under ErrLeadershipLost and ctx errors the entry may still commit.
//
// Proposals queued for a group within one round go to raft together, as one MsgProp (or a
// few, see Config.MaxProposalBatchBytes). In manual mode use ProposeAsync.
func (h *Host) Propose(ctx context.Context, groupID uint64, data []byte) (uint64, error) {
	return h.ProposeAsync(groupID, data).Wait(ctx)
}

// ProposeAsync queues a proposal and returns at once; see Propose. data must not be
// modified after the call.
func (h *Host) ProposeAsync(groupID uint64, data []byte) *Proposal {
	p := newProposal(groupID, data)
	switch {
	case len(data) == 0:
		p.finish(0, fmt.Errorf("multiraft: group %d: %w", groupID, ErrEmptyProposal))
	case uint64(h.appends.backlog.Load()) > h.cfg.MaxAppendBacklogBytes:
		p.finish(0, fmt.Errorf("multiraft: group %d: append backlog full: %w", groupID, ErrOverloaded))
	default:
		h.shardFor(groupID).pushProposal(p)
	}
	return p
}

// ProposeConfChange proposes a membership change to the group and returns the index of its
// entry once it is applied locally: raft has switched to the new configuration (the host
// calls ApplyConfChange on every replica as it applies the entry) and the configuration is
// queued to be recorded in the Store, so reloads and restarts resume with it. The local
// replica must lead the group.
//
// Raft takes one change at a time: a change proposed while another is not yet applied, or
// one that is invalid for the current configuration (removing the last voter, a simple
// change of several voters at once, leaving a joint configuration that is not joint), fails
// with ErrConfChangeRefused before anything is committed. Several changes in one cc enter a
// joint configuration, which raft leaves on its own when cc.Transition is auto. Other errors
// are those of Propose. In manual mode use ProposeConfChangeAsync.
//
// To add a replica, load the group on its host with GroupSpec.Join, add it as a learner,
// wait until its Match reaches the leader's log (Status.Progress), then promote it with
// ConfChangeAddNode; a replica removed while it leads steps down once the change is applied.
func (h *Host) ProposeConfChange(ctx context.Context, groupID uint64, cc *raftpb.ConfChangeV2) (uint64, error) {
	return h.ProposeConfChangeAsync(groupID, cc).Wait(ctx)
}

// ProposeConfChangeAsync queues a conf change proposal and returns at once; see
// ProposeConfChange. It is queued with the proposals of ProposeAsync and keeps its place
// among them. cc is encoded at once; the caller may reuse it.
func (h *Host) ProposeConfChangeAsync(groupID uint64, cc *raftpb.ConfChangeV2) *Proposal {
	var data []byte
	err := errors.New("nil conf change") // an empty one would mean "leave the joint configuration"
	if cc != nil {
		data, err = proto.Marshal(cc)
	}
	p := newProposal(groupID, data)
	p.conf = true
	if err != nil {
		p.finish(0, fmt.Errorf("multiraft: group %d: encode conf change: %w", groupID, err))
		return p
	}
	h.shardFor(groupID).pushProposal(p)
	return p
}
