package arbiter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/triarch-io/triarch/pkg/multiraft"
)

// The leader's side of a rejoin (RejoinMember; the member's side is in join.go), the same
// steps as the replica tier's rejoin of a channel replica (services/replica/membership.go):
//
//  1. a member that is a voter leaves the configuration: the leader's record of what the old
//     store acknowledged goes with it (kept, raft would count the new store for entries it
//     does not hold and send it commit indexes beyond its log);
//  2. it comes back as a learner whose conf change carries the new store's id (admitting it:
//     it votes again only as a voter, and holds what the leader sends from now on);
//  3. once its log reaches the leader's last index as of the start of the wait, it becomes a
//     voter again, with the same id.
//
// Each step is skipped when done. What this leader did itself in its current term is
// remembered (slot); a member in the configuration that this leader did not add with the
// same store in this term leaves first, as its place may be an earlier store's: a repeated
// rejoin then costs one more catch-up, never a wrong place.

// rejoinSlot is a member's place as this leader last gave it.
type rejoinSlot struct {
	term  uint64
	token []byte
	voter bool
	index uint64
}

// rejoins serialises rejoins on the leader (raft takes one conf change at a time) and
// remembers the places it gave.
type rejoins struct {
	sem   chan struct{}
	mu    sync.Mutex
	slots map[uint64]rejoinSlot
}

func newRejoins() *rejoins {
	return &rejoins{sem: make(chan struct{}, 1), slots: map[uint64]rejoinSlot{}}
}

func (r *rejoins) slot(member uint64) (rejoinSlot, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sl, ok := r.slots[member]
	return sl, ok
}

func (r *rejoins) record(member uint64, sl rejoinSlot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slots[member] = sl
}

func (r *rejoins) forget(member uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.slots, member)
}

// rejoinMember gives member's place to the store whose token is given; see above. It
// returns the index of the change that made the member a voter with that store, or, when
// that was done before, an index at or after it.
func (s *Service) rejoinMember(ctx context.Context, member uint64, token []byte) (uint64, error) {
	select {
	case s.rejoins.sem <- struct{}{}:
		defer func() { <-s.rejoins.sem }()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	st, err := s.leaderStatus(ctx)
	if err != nil {
		return 0, err
	}
	sl, ok := s.rejoins.slot(member)
	known := ok && sl.term == st.Term && bytes.Equal(sl.token, token)
	voter, learner := slices.Contains(st.ConfState.GetVoters(), member), slices.Contains(st.ConfState.GetLearners(), member)
	if known && voter {
		if sl.voter {
			return sl.index, nil
		}
		// This leader's promotion committed but its caller gave up before it was applied:
		// the applied index is at or after it.
		return st.Applied, nil
	}
	if (voter || learner) && !known {
		if voter {
			if err := s.othersInContact(st, member); err != nil {
				return 0, err
			}
		}
		s.rejoins.forget(member)
		if _, err := s.confChange(ctx, raftpb.ConfChangeRemoveNode, member, nil); err != nil {
			return 0, err
		}
		s.log.Logger.InfoContext(ctx, "rejoin: member removed from the metadata group", "member", member, "was_voter", voter)
		if st, err = s.leaderStatus(ctx); err != nil {
			return 0, err
		}
	}
	if !slices.Contains(st.ConfState.GetVoters(), member) && !slices.Contains(st.ConfState.GetLearners(), member) {
		index, err := s.confChange(ctx, raftpb.ConfChangeAddLearnerNode, member, token)
		if err != nil {
			return 0, err
		}
		s.rejoins.record(member, rejoinSlot{term: st.Term, token: token, index: index})
		s.log.Logger.InfoContext(ctx, "rejoin: member added back as a learner with its new store", "member", member, "index", index)
	}
	if err := s.host.WaitCaughtUp(ctx, metaGroup, member); err != nil {
		var nl *multiraft.NotLeaderError
		if errors.As(err, &nl) {
			return 0, &NotLeaderError{LeaderID: nl.LeaderID}
		}
		return 0, err
	}
	index, err := s.confChange(ctx, raftpb.ConfChangeAddNode, member, token)
	if err != nil {
		return 0, err
	}
	s.rejoins.record(member, rejoinSlot{term: st.Term, token: token, voter: true, index: index})
	s.log.Logger.InfoContext(ctx, "rejoin: member caught up and is a voter again", "member", member, "index", index)
	return index, nil
}

// leaderStatus returns the metadata group's status on this member, NotLeaderError unless it
// leads.
func (s *Service) leaderStatus(ctx context.Context) (multiraft.Status, error) {
	st, err := s.host.Status(ctx, metaGroup)
	if err != nil {
		return st, err
	}
	if st.Leader != s.cfg.NodeID {
		return st, &NotLeaderError{LeaderID: st.Leader}
	}
	return st, nil
}

// othersInContact refuses to remove member while another voter has not acknowledged this
// leader for an election timeout: without it, the configuration left (two voters of three)
// would have no quorum until it is back.
func (s *Service) othersInContact(st multiraft.Status, member uint64) error {
	timeout := s.cfg.TickInterval * time.Duration(s.cfg.ElectionTicks)
	for _, v := range st.ConfState.GetVoters() {
		if v == member || v == s.cfg.NodeID {
			continue
		}
		if at, ok := st.LastAcked[v]; !ok || time.Since(at) > timeout {
			return status.Errorf(codes.Unavailable, "member %d has not answered the leader for %v: removing member %d now "+
				"would leave the metadata group without a quorum; the rejoin waits until it is back", v, timeout, member)
		}
	}
	return nil
}

// confChange proposes a single change and returns its index once applied here.
func (s *Service) confChange(ctx context.Context, typ raftpb.ConfChangeType, member uint64, token []byte) (uint64, error) {
	cc := &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: typ.Enum(), NodeId: new(member)}}, Context: token}
	index, err := s.host.ProposeConfChange(ctx, metaGroup, cc)
	if err != nil {
		var nl *multiraft.NotLeaderError
		switch {
		case errors.As(err, &nl):
			return 0, &NotLeaderError{LeaderID: nl.LeaderID}
		case errors.Is(err, multiraft.ErrConfChangeRefused):
			return 0, status.Errorf(codes.Unavailable, "%s of member %d: %v", typ, member, err)
		}
		return 0, fmt.Errorf("%s of member %d: %w", typ, member, err)
	}
	return index, nil
}
