package multiraft

import (
	"errors"
	"fmt"
)

var (
	// ErrStopped is returned once the host has stopped: Run returned or a storage or apply
	// error made it stop.
	ErrStopped = errors.New("multiraft: host stopped")
	// ErrRunning is returned by ProcessRound on a host that is not manual, and by a second
	// Run.
	ErrRunning = errors.New("multiraft: host is driven by Run")
	// ErrGroupNotFound is returned for a group that is not loaded on this host.
	ErrGroupNotFound = errors.New("multiraft: group not loaded")
	// ErrNotQuiescent is returned when UnloadGroup is refused because the group still has
	// work in flight or a replica that has not caught up.
	ErrNotQuiescent = errors.New("multiraft: group not quiescent")
	// ErrCampaignIgnored is returned when raft silently ignored an ordered campaign: the
	// local replica is a learner, is not in the group, or has conf changes to apply.
	ErrCampaignIgnored = errors.New("multiraft: campaign ignored by raft")
	// ErrLeadershipLost is returned to a proposal whose leader stepped down before the entry
	// was known to be committed. The entry may still commit under the next leader: the
	// caller must retry with its idempotency key, not assume the entry is gone.
	ErrLeadershipLost = errors.New("multiraft: leadership lost before the entry committed")
	// ErrProposalLost is returned to a proposal whose log position was committed with
	// another leader's entry: the proposal was truncated away and will never commit.
	ErrProposalLost = errors.New("multiraft: entry replaced by another leader's entry")
	// ErrOverloaded is returned when a proposal is refused because the host's proposal
	// queue or its append backlog is full. Nothing was proposed; retry later.
	ErrOverloaded = errors.New("multiraft: overloaded")
	// ErrConfChangeRefused is returned to a conf change that raft would not take: another
	// conf change is not applied yet, or the change is invalid for the current
	// configuration. Nothing was committed for it.
	ErrConfChangeRefused = errors.New("multiraft: conf change refused")
	// ErrEmptyProposal is returned for a proposal without data: empty entries are raft's
	// own (a new leader's first entry), so the Applier can skip them blindly.
	ErrEmptyProposal = errors.New("multiraft: empty proposal")
)

// NotLeaderError is returned when an operation needs the local replica to lead the group and
// it does not. LeaderID is the leader the local replica knows of (0 when none) in Term.
type NotLeaderError struct {
	GroupID  uint64
	LeaderID uint64
	Term     uint64
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == 0 {
		return fmt.Sprintf("multiraft: group %d: not leader, no known leader at term %d", e.GroupID, e.Term)
	}
	return fmt.Sprintf("multiraft: group %d: not leader, leader is %d at term %d", e.GroupID, e.LeaderID, e.Term)
}
