package replica

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/multiraft"
)

// Group positions for the control tier, from the host when loaded and from disk when not.

// GroupStatus reports a channel's raft position here, from memory when loaded and from disk
// when hibernated.
func (e *Engine) GroupStatus(ctx context.Context, channelID string) (*replicav1.GroupStatus, error) {
	e.mu.RLock()
	ch := e.byID[channelID]
	e.mu.RUnlock()
	if ch != nil {
		if err := ch.failure(); err != nil {
			return nil, err
		}
		st, err := e.host.Status(ctx, ch.group)
		if err != nil {
			return nil, err
		}
		return e.statusProto(ch, st), nil
	}
	return e.diskStatus(channelID)
}

// GroupStatuses is GroupStatus for many channels, reading the loaded ones from the host in one
// operation per shard (the channelctl asks for thousands at once during a failover). Errors
// are per channel, in order.
func (e *Engine) GroupStatuses(ctx context.Context, channelIDs []string) ([]*replicav1.GroupStatus, []error) {
	out := make([]*replicav1.GroupStatus, len(channelIDs))
	errs := make([]error, len(channelIDs))
	loaded := map[int]*channel{}
	var groups []uint64
	e.mu.RLock()
	for i, id := range channelIDs {
		if ch := e.byID[id]; ch != nil {
			loaded[i] = ch
			groups = append(groups, ch.group)
		}
	}
	e.mu.RUnlock()
	sts, err := e.host.Statuses(ctx, groups)
	for i, id := range channelIDs {
		ch, ok := loaded[i]
		switch {
		case !ok:
			out[i], errs[i] = e.diskStatus(id)
		case ch.failure() != nil:
			// Reported as an error, never as a position: the control tier must not elect
			// this replica or count on it as a leader.
			errs[i] = ch.failure()
		case err != nil:
			errs[i] = err
		default:
			st, ok := sts[ch.group]
			if !ok {
				// Unloaded since: what is on disk is its position now.
				out[i], errs[i] = e.diskStatus(id)
				continue
			}
			out[i] = e.statusProto(ch, st)
		}
	}
	return out, errs
}

func (e *Engine) statusProto(ch *channel, st multiraft.Status) *replicav1.GroupStatus {
	out := &replicav1.GroupStatus{
		ChannelId: ch.id, GroupId: ch.group, Loaded: true, Role: roleProto(st.Role),
		Term: st.Term, Vote: st.Vote, LeaderNodeId: st.Leader, LastIndex: st.LastIndex, LastTerm: st.LastTerm,
		Commit: st.Commit, Applied: st.Applied, LastSeq: ch.lastSeq.Load(),
		LastActivityTime: timestamppb.New(time.Unix(0, ch.lastActivity.Load())),
		StoreId:          e.cfg.StoreID, CopyReset: ch.reset.Load(),
	}
	out.Voters, out.Learners = confStateIDs(st)
	if len(out.Voters) > 0 {
		// Followers learn of a changed replica set only from raft: refresh what the lease
		// check counts.
		ch.setVoters(out.Voters)
	}
	ids := make([]uint64, 0, len(st.Progress))
	for id := range st.Progress {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p := st.Progress[id]
		out.Progress = append(out.Progress, &replicav1.Progress{NodeId: id, Match: p.Match, Next: p.Next})
	}
	return out
}

// diskStatus reads a hibernated channel's position without loading it into the host.
func (e *Engine) diskStatus(channelID string) (*replicav1.GroupStatus, error) {
	gid, err := e.cfg.Store.GetState(0, channelKey(channelID))
	if err != nil {
		return nil, fmt.Errorf("replica: look up %s: %w", channelID, err)
	}
	if len(gid) != 8 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownChannel, channelID)
	}
	group := binary.BigEndian.Uint64(gid)
	log, err := e.cfg.Store.Open(group)
	if err != nil {
		return nil, fmt.Errorf("replica: open %s: %w", channelID, err)
	}
	defer e.cfg.Store.Release(group)
	hs, _, err := log.InitialState()
	if err != nil {
		return nil, err
	}
	last, err := log.LastIndex()
	if err != nil {
		return nil, err
	}
	lastTerm, err := log.Term(last)
	if err != nil {
		return nil, err
	}
	out := &replicav1.GroupStatus{ChannelId: channelID, GroupId: group, Role: replicav1.Role_ROLE_FOLLOWER,
		Term: hs.GetTerm(), Vote: hs.GetVote(), LastIndex: last, LastTerm: lastTerm, Commit: hs.GetCommit(),
		StoreId: e.cfg.StoreID}
	if out.CopyReset, err = e.isReset(group); err != nil {
		return nil, err
	}
	if cpData, err := e.cfg.Store.GetState(group, []byte{kindCheckpoint}); err == nil && cpData != nil {
		var cp replicav1.ChannelCheckpoint
		if proto.Unmarshal(cpData, &cp) == nil {
			out.Applied, out.LastSeq = cp.GetAppliedIndex(), cp.GetLastSeq()
		}
	}
	return out, nil
}

func roleProto(r raft.StateType) replicav1.Role {
	switch r {
	case raft.StateLeader:
		return replicav1.Role_ROLE_LEADER
	case raft.StateCandidate:
		return replicav1.Role_ROLE_CANDIDATE
	case raft.StatePreCandidate:
		return replicav1.Role_ROLE_PRE_CANDIDATE
	default:
		return replicav1.Role_ROLE_FOLLOWER
	}
}
