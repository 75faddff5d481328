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
