package machine

import (
	"cmp"
	"fmt"
	"slices"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// Position is where one replica's copy of a channel's raft log stands.
type Position struct {
	LastTerm  uint64
	LastIndex uint64
	Commit    uint64
	Applied   uint64
}

// PositionOf reads a replica's reported status; a nil status is the empty log.
func PositionOf(st *replicav1.GroupStatus) Position {
	return Position{
		LastTerm:  st.GetLastTerm(),
		LastIndex: st.GetLastIndex(),
		Commit:    st.GetCommit(),
		Applied:   st.GetApplied(),
	}
}

// Compare orders positions the way raft's vote check does, by last term and then last index.
// Commit and applied are left out on purpose: raft only lets a candidate win whose log is at
// least as up to date by (term, index), so ranking by anything else could pick a replica that
// the others then refuse to vote for.
func (p Position) Compare(q Position) int {
	if c := cmp.Compare(p.LastTerm, q.LastTerm); c != 0 {
		return c
	}
	return cmp.Compare(p.LastIndex, q.LastIndex)
}

func (p Position) String() string {
	return fmt.Sprintf("(term %d, index %d, commit %d, applied %d)", p.LastTerm, p.LastIndex, p.Commit, p.Applied)
}

// CaughtUp reports whether target holds the whole log of leader. Equal last term and index are
// enough: by raft's log matching property two logs agreeing on the term of their last entry and
// its index are identical up to it.
func CaughtUp(leader, target Position) bool {
	return target.LastTerm == leader.LastTerm && target.LastIndex >= leader.LastIndex
}

// ChooseLeader picks the replica to order to campaign.
//
// Only replicas in replicaSet that are reachable count, and only when they are a strict majority
// of the set: committed entries are on a majority, so any majority holds at least one copy of
// each, and the most up-to-date member of it holds them all. Below a majority that proof is gone
// and ChooseLeader refuses with ErrNoMajority rather than guess. The chosen replica has the
// highest (last term, last index) among the reachable ones, so it is never behind a reachable
// replica; preferred wins only among the equally most up to date (so keeping the previous leader
// or spreading leaders never costs data), and the lowest node id breaks the remaining ties so
// that every channelctl decides the same way.
func ChooseLeader(replicaSet []uint64, positions map[uint64]Position, reachable map[uint64]bool, preferred uint64) (uint64, error) {
	members, err := memberSet(replicaSet)
	if err != nil {
		return 0, err
	}
	var up []uint64
	for _, n := range members {
		if !reachable[n] {
			continue
		}
		if _, ok := positions[n]; !ok {
			return 0, fmt.Errorf("replica %d: %w", n, ErrMissingPosition)
		}
		up = append(up, n)
	}
	if 2*len(up) <= len(members) {
		return 0, fmt.Errorf("%d of %d replicas reachable %v: %w", len(up), len(members), up, ErrNoMajority)
	}
	best := up[0] // up is sorted, so the first of equals is the lowest id
	for _, n := range up[1:] {
		if positions[n].Compare(positions[best]) > 0 {
			best = n
		}
	}
	if preferred != best && slices.Contains(up, preferred) && positions[preferred].Compare(positions[best]) == 0 {
		return preferred, nil
	}
	return best, nil
}

// memberSet returns the replica set sorted, refusing sets that could not come from the arbiter.
func memberSet(replicaSet []uint64) ([]uint64, error) {
	if len(replicaSet) == 0 {
		return nil, fmt.Errorf("empty: %w", ErrInvalidReplicaSet)
	}
	members := slices.Clone(replicaSet)
	slices.Sort(members)
	for i, n := range members {
		if n == 0 {
			return nil, fmt.Errorf("%v holds node 0: %w", replicaSet, ErrInvalidReplicaSet)
		}
		if i > 0 && members[i-1] == n {
			return nil, fmt.Errorf("%v holds node %d twice: %w", replicaSet, n, ErrInvalidReplicaSet)
		}
	}
	return members, nil
}

// ChooseJointLeader is ChooseLeader for a channel whose replica set is changing: replicaSet is
// the record's set and nextSet the set raft's configuration is moving to (empty: no change,
// and it is ChooseLeader). voters holds the voters each replica reports it applies
// (GroupStatus.voters; missing or empty: unknown). It returns the candidate and whether
// nextSet alone decided (a reachable replica applies it: the record may roll forward).
//
// While the change may or may not have happened, raft's voters are replicaSet, nextSet, or the
// two merged (the new replica promoted, the leaving one not yet removed). Committed entries are
// on a majority of whichever of these holds, and a majority of replicaSet and a majority of
// nextSet each meets every majority of the merged set too; so ChooseLeader's proof needs a
// reachable majority of each set, and refuses with ErrNoMajority without one. A replica that
// applies nextSet proves the change committed (raft applies only committed entries, and the
// change is the last one: a later one needs another repair, which names its own next set), so
// then nextSet alone decides, as after the record caught up. The converse does not hold: a
// replica that applies replicaSet may only lag, the change committed without it.
//
// Every reachable replica of the deciding sets counts for the majorities, but only one that
// reports itself a voter (or reports no configuration) is a candidate: a learner cannot
// campaign. Among the candidates the choice is ChooseLeader's: the highest (last term, last
// index), preferred among equals, else the lowest id.
func ChooseJointLeader(replicaSet, nextSet []uint64, positions map[uint64]Position, voters map[uint64][]uint64,
	reachable map[uint64]bool, preferred uint64) (uint64, bool, error) {
	members, err := memberSet(replicaSet)
	if err != nil {
		return 0, false, err
	}
	if len(nextSet) == 0 {
		c, err := ChooseLeader(members, positions, reachable, preferred)
		return c, false, err
	}
	next, err := memberSet(nextSet)
	if err != nil {
		return 0, false, fmt.Errorf("next replicas: %w", err)
	}
	if slices.Equal(members, next) {
		c, err := ChooseLeader(members, positions, reachable, preferred)
		return c, false, err
	}
	sets, nextApplied := [][]uint64{members, next}, false
	for _, n := range unionOf(members, next) {
		if reachable[n] && sameSet(voters[n], next) {
			sets, nextApplied = [][]uint64{next}, true
			break
		}
	}
	var decided []uint64
	for _, set := range sets {
		var up []uint64
		for _, n := range set {
			if !reachable[n] {
				continue
			}
			if _, ok := positions[n]; !ok {
				return 0, false, fmt.Errorf("replica %d: %w", n, ErrMissingPosition)
			}
			up = append(up, n)
		}
		if 2*len(up) <= len(set) {
			return 0, false, fmt.Errorf("%d of %d replicas of %v reachable %v: %w", len(up), len(set), set, up, ErrNoMajority)
		}
		decided = unionOf(decided, set)
	}
	var cands []uint64
	for _, n := range decided {
		if reachable[n] && (len(voters[n]) == 0 || slices.Contains(voters[n], n)) {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return 0, false, fmt.Errorf("no reachable voter among %v: %w", decided, ErrNoMajority)
	}
	best := cands[0] // sorted, so the first of equals is the lowest id
	for _, n := range cands[1:] {
		if positions[n].Compare(positions[best]) > 0 {
			best = n
		}
	}
	if preferred != best && slices.Contains(cands, preferred) && positions[preferred].Compare(positions[best]) == 0 {
		best = preferred
	}
	return best, nextApplied, nil
}

// unionOf is the sorted union of two sets.
func unionOf(a, b []uint64) []uint64 {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// sameSet reports whether a and b hold the same nodes, in any order; an empty a is never the
// same (an unknown configuration proves nothing).
func sameSet(a, b []uint64) bool {
	if len(a) == 0 || len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}
