package machine

import (
	"fmt"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// CanHibernate decides from the replicas' reported statuses whether a channel may be unloaded:
// every member of replicaSet must have reported, all must hold the same log (same last term and
// index), each must have committed and applied all of it, and a leader's progress must show
// every follower matching its last index. Anything less is ErrNotCaughtUp: a follower unloaded
// behind the leader would wake later with a gap that only a leader in memory could fill, and a
// replica with unapplied entries would lose its apply position's meaning on disk.
//
// The replicas check the same again when they unload (UnloadGroups refuses otherwise); this
// check is what keeps the channelctl from asking while a follower visibly lags.
func CanHibernate(replicaSet []uint64, statuses map[uint64]*replicav1.GroupStatus) error {
	members, err := memberSet(replicaSet)
	if err != nil {
		return err
	}
	var ref Position
	for i, n := range members {
		st := statuses[n]
		if st == nil {
			return fmt.Errorf("replica %d did not report: %w", n, ErrNotCaughtUp)
		}
		p := PositionOf(st)
		if p.Commit != p.LastIndex || p.Applied != p.LastIndex {
			return fmt.Errorf("replica %d at %v has not committed and applied its whole log: %w", n, p, ErrNotCaughtUp)
		}
		if i == 0 {
			ref = p
			continue
		}
		if p.LastTerm != ref.LastTerm || p.LastIndex != ref.LastIndex {
			return fmt.Errorf("replica %d at %v, replica %d at %v: %w", n, p, members[0], ref, ErrNotCaughtUp)
		}
	}
	for _, n := range members {
		st := statuses[n]
		if st.GetRole() != replicav1.Role_ROLE_LEADER {
			continue
		}
		for _, pr := range st.GetProgress() {
			if pr.GetNodeId() == n {
				continue
			}
			if pr.GetMatch() != st.GetLastIndex() {
				return fmt.Errorf("leader %d sees follower %d matching %d of %d: %w",
					n, pr.GetNodeId(), pr.GetMatch(), st.GetLastIndex(), ErrNotCaughtUp)
			}
		}
	}
	return nil
}
