package multiraft

import (
	"errors"
	"fmt"
	"slices"
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

// ErrGroupFailed is matched (errors.Is) by every *GroupFailedError: the operation was on a
// group this host failed and no longer runs.
var ErrGroupFailed = errors.New("multiraft: group failed")

// ErrNotFailed is returned by ResetGroup for a group that has not failed on this host.
var ErrNotFailed = errors.New("multiraft: group has not failed")

// GroupFailedError says that one group failed on this host at a log index and why: the
// Applier found an entry it cannot apply (corrupt, or failing its checksum), a committed conf
// change could not be applied, or raft could not read the group's log. The host stops running
// the group (see Applier.Apply) and returns this error for it from then on. It matches
// ErrGroupFailed and wraps Err.
type GroupFailedError struct {
	GroupID uint64
	// Index is the log index of the entry that failed, 0 when not known.
	Index uint64
	Err   error
}

func (e *GroupFailedError) Error() string {
	return fmt.Sprintf("multiraft: group %d failed at index %d: %v", e.GroupID, e.Index, e.Err)
}

func (e *GroupFailedError) Unwrap() []error { return []error{ErrGroupFailed, e.Err} }

// FailedGroupsError is what Applier.Apply returns to fail some groups of a batch and only
// them; see Applier.Apply.
type FailedGroupsError struct {
	Groups []*GroupFailedError
}

func (e *FailedGroupsError) Error() string {
	if len(e.Groups) == 1 {
		return e.Groups[0].Error()
	}
	return fmt.Sprintf("multiraft: %d groups failed, first: %v", len(e.Groups), e.Groups[0])
}

func (e *FailedGroupsError) Unwrap() []error {
	out := make([]error, len(e.Groups))
	for i, g := range e.Groups {
		out[i] = g
	}
	return out
}

// groupFailures returns the groups err fails, if it is a failure of groups only: a
// *FailedGroupsError naming at least one group, or a *GroupFailedError, as returned, not
// wrapped. Wrapping or joining it with other errors makes it an error that stops the host,
// which is the safe reading of an error the host cannot attribute to groups.
func groupFailures(err error) ([]*GroupFailedError, bool) {
	switch e := err.(type) {
	case *FailedGroupsError:
		if len(e.Groups) == 0 || slices.Contains(e.Groups, nil) {
			return nil, false
		}
		return e.Groups, true
	case *GroupFailedError:
		return []*GroupFailedError{e}, true
	}
	return nil, false
}
