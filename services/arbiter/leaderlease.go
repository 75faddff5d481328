package arbiter

import (
	"fmt"
	"slices"
	"time"
)

// The leader lease of the metadata group: how long a member that leads may still act for the
// group without hearing from a quorum, so that a deposed leader stops renewing node leases
// before anyone else can lead.
//
// Followers run CheckQuorum and PreVote, so one that heard from the leader within an election
// timeout E (by its own ticks) refuses to vote for anyone else. A follower's acknowledgement
// reaching the leader at time a means it heard from the leader at some time before a, so no
// successor can be elected before roughly a + E, less that follower's one-way delay and its
// clock drift over E. The leader renews node leases only while a quorum acknowledged it
// within leaseWindow = E/2 (the remaining E/2 covers delay and drift), so its last renewal
// comes before any successor's first act. The successor gives every node a full lease from its
// takeover (liveness.Tracker.ResetAll) before it may declare anyone dead, so no node can still
// hold a lease from the deposed leader when its channels are re-elected.

// leaseWindow is how recently a quorum must have acknowledged this member's leadership for it
// to renew node leases.
func (s *Service) leaseWindow() time.Duration {
	return time.Duration(s.cfg.ElectionTicks) * s.cfg.TickInterval / 2
}

// voters are the members of the metadata group.
func (s *Service) voters() []uint64 {
	if len(s.cfg.Peers) == 0 {
		return []uint64{s.cfg.NodeID}
	}
	ids := make([]uint64, 0, len(s.cfg.Peers))
	for id := range s.cfg.Peers {
		ids = append(ids, id)
	}
	return ids
}

// quorumAckedAt is the latest time by which a majority of voters had acknowledged self's
// leadership: self counts as acknowledging at now, every other voter at its last
// acknowledgement (never, when absent).
func quorumAckedAt(now time.Time, self uint64, voters []uint64, acked map[uint64]time.Time) time.Time {
	times := make([]time.Time, 0, len(voters))
	for _, v := range voters {
		if v == self {
			times = append(times, now)
			continue
		}
		times = append(times, acked[v]) // zero when never
	}
	slices.SortFunc(times, func(a, b time.Time) int { return b.Compare(a) }) // newest first
	return times[len(times)/2]
}

// checkLeaderLease returns an error unless a quorum acknowledged this member's leadership
// within the lease window. The caller has checked that raft says this member leads.
func (s *Service) checkLeaderLease(now time.Time) error {
	at := quorumAckedAt(now, s.cfg.NodeID, s.voters(), s.acked())
	if age := now.Sub(at); age >= s.leaseWindow() {
		return &ErrLeaseLapsed{Age: age, Window: s.leaseWindow()}
	}
	return nil
}

// ErrLeaseLapsed: this member leads by raft's account but has not heard from a quorum within
// the lease window; it may already have been replaced.
type ErrLeaseLapsed struct{ Age, Window time.Duration }

func (e *ErrLeaseLapsed) Error() string {
	if e.Age > 24*time.Hour {
		return fmt.Sprintf("this arbiter member leads but no quorum has acknowledged it yet (window %v)", e.Window)
	}
	return fmt.Sprintf("this arbiter member leads but no quorum acknowledged it for %v (window %v): it may have been replaced",
		e.Age.Round(time.Millisecond), e.Window)
}
