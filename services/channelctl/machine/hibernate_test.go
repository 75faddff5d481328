package machine

import (
	"testing"

	"github.com/stretchr/testify/require"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

func TestCanHibernate(t *testing.T) {
	three := []uint64{1, 2, 3}
	with := func(mut func(s map[uint64]*replicav1.GroupStatus)) map[uint64]*replicav1.GroupStatus {
		s := caughtUp()
		mut(s)
		return s
	}
	for name, tc := range map[string]struct {
		replicas []uint64
		statuses map[uint64]*replicav1.GroupStatus
		err      error
	}{
		"all caught up": {three, caughtUp(), nil},
		"no leader among them (all unloaded, read from disk)": {three, with(func(s map[uint64]*replicav1.GroupStatus) {
			s[1] = st(5, 100, 100)
		}), nil},
		"follower behind": {three, with(func(s map[uint64]*replicav1.GroupStatus) { s[3] = st(5, 99, 99) }), ErrNotCaughtUp},
		"follower ahead of the others (uncommitted tail)": {three, with(func(s map[uint64]*replicav1.GroupStatus) {
			s[3] = st(5, 101, 101)
		}), ErrNotCaughtUp},
		"same index, other term": {three, with(func(s map[uint64]*replicav1.GroupStatus) { s[2] = st(4, 100, 100) }), ErrNotCaughtUp},
		"not committed":          {three, with(func(s map[uint64]*replicav1.GroupStatus) { s[2].Commit = 99 }), ErrNotCaughtUp},
		"not applied":            {three, with(func(s map[uint64]*replicav1.GroupStatus) { s[2].Applied = 99 }), ErrNotCaughtUp},
		"leader sees a follower behind": {three, with(func(s map[uint64]*replicav1.GroupStatus) {
			s[1] = leaderSt(1, 5, 100, map[uint64]uint64{2: 100, 3: 97})
		}), ErrNotCaughtUp},
		"replica missing": {three, with(func(s map[uint64]*replicav1.GroupStatus) { delete(s, 2) }), ErrNotCaughtUp},
		"status of a non-member is ignored": {three, with(func(s map[uint64]*replicav1.GroupStatus) {
			s[9] = st(1, 1, 0)
		}), nil},
		"empty log everywhere": {three, map[uint64]*replicav1.GroupStatus{1: st(0, 0, 0), 2: st(0, 0, 0), 3: st(0, 0, 0)}, nil},
		"invalid replica set":  {nil, caughtUp(), ErrInvalidReplicaSet},
	} {
		t.Run(name, func(t *testing.T) {
			err := CanHibernate(tc.replicas, tc.statuses)
			if tc.err == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.err)
		})
	}
}
