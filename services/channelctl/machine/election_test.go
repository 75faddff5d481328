package machine

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func pos(term, index uint64) Position {
	return Position{LastTerm: term, LastIndex: index, Commit: index, Applied: index}
}

func set(nodes ...uint64) map[uint64]bool {
	s := map[uint64]bool{}
	for _, n := range nodes {
		s[n] = true
	}
	return s
}

func TestChooseLeader(t *testing.T) {
	three := []uint64{1, 2, 3}
	for name, tc := range map[string]struct {
		replicas  []uint64
		positions map[uint64]Position
		reachable map[uint64]bool
		preferred uint64
		want      uint64
		err       error
	}{
		"highest index wins": {three, map[uint64]Position{1: pos(5, 100), 2: pos(5, 103), 3: pos(5, 101)}, set(1, 2, 3), 0, 2, nil},
		"higher term beats longer log": {three, map[uint64]Position{1: pos(4, 500), 2: pos(5, 10), 3: pos(4, 499)},
			set(1, 2, 3), 1, 2, nil},
		"commit and applied do not rank": {three, map[uint64]Position{
			1: {LastTerm: 5, LastIndex: 100, Commit: 100, Applied: 100},
			2: {LastTerm: 5, LastIndex: 101, Commit: 90, Applied: 80},
			3: {LastTerm: 5, LastIndex: 100, Commit: 100, Applied: 100}}, set(1, 2, 3), 1, 2, nil},
		"preferred among equals": {three, map[uint64]Position{1: pos(5, 100), 2: pos(5, 100), 3: pos(5, 100)}, set(1, 2, 3), 3, 3, nil},
		"preferred behind is not chosen": {three, map[uint64]Position{1: pos(5, 100), 2: pos(5, 99), 3: pos(5, 100)},
			set(1, 2, 3), 2, 1, nil},
		"ties by lowest id":            {three, map[uint64]Position{1: pos(5, 99), 2: pos(5, 100), 3: pos(5, 100)}, set(1, 2, 3), 0, 2, nil},
		"preferred unreachable":        {three, map[uint64]Position{1: pos(5, 100), 2: pos(5, 100), 3: pos(5, 100)}, set(1, 2), 3, 1, nil},
		"preferred outside the set":    {three, map[uint64]Position{1: pos(5, 100), 2: pos(5, 100), 9: pos(5, 100)}, set(1, 2, 9), 9, 1, nil},
		"unreachable ahead is ignored": {three, map[uint64]Position{1: pos(6, 200), 2: pos(5, 100), 3: pos(5, 90)}, set(2, 3), 0, 2, nil},
		"positions of non-members ignored": {three, map[uint64]Position{2: pos(5, 100), 3: pos(5, 90), 4: pos(9, 900)},
			set(2, 3, 4), 4, 2, nil},
		"two of three is a majority": {three, map[uint64]Position{1: pos(5, 100), 3: pos(5, 100)}, set(1, 3), 0, 1, nil},
		"one of three is not":        {three, map[uint64]Position{1: pos(5, 100)}, set(1), 1, 0, ErrNoMajority},
		"none":                       {three, nil, nil, 0, 0, ErrNoMajority},
		"two of four is not":         {[]uint64{1, 2, 3, 4}, map[uint64]Position{1: pos(5, 1), 2: pos(5, 1)}, set(1, 2), 0, 0, ErrNoMajority},
		"three of five is":           {[]uint64{5, 4, 3, 2, 1}, map[uint64]Position{1: pos(5, 1), 2: pos(5, 2), 5: pos(5, 2)}, set(1, 2, 5), 5, 5, nil},
		"single replica":             {[]uint64{7}, map[uint64]Position{7: pos(1, 1)}, set(7), 0, 7, nil},
		"reachable without position": {three, map[uint64]Position{1: pos(5, 100), 2: pos(5, 100)}, set(1, 2, 3), 0, 0, ErrMissingPosition},
		"empty replica set":          {nil, nil, nil, 0, 0, ErrInvalidReplicaSet},
		"duplicate replica":          {[]uint64{1, 2, 2}, map[uint64]Position{1: pos(1, 1), 2: pos(1, 1)}, set(1, 2), 0, 0, ErrInvalidReplicaSet},
		"node zero":                  {[]uint64{0, 1, 2}, map[uint64]Position{1: pos(1, 1), 2: pos(1, 1)}, set(1, 2), 0, 0, ErrInvalidReplicaSet},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ChooseLeader(tc.replicas, tc.positions, tc.reachable, tc.preferred)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				require.Zero(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

// TestChooseLeaderNeverBehind checks ChooseLeader against its definition on random inputs:
// with a reachable majority the choice is reachable, in the set, has the greatest (term, index)
// of all reachable replicas, is the preferred one when that is equally up to date, and is
// otherwise the lowest id among the most up to date; without a majority there is no choice.
// Small ranges make ties, unreachable replicas ahead, and missing majorities common.
func TestChooseLeaderNeverBehind(t *testing.T) {
	rng := rand.New(rand.NewPCG(20300101, 5))
	var chose, refused int
	for i := range 20000 {
		size := 1 + rng.IntN(7)
		perm := rng.Perm(9)
		replicas := make([]uint64, size)
		for j := range replicas {
			replicas[j] = uint64(perm[j] + 1)
		}
		positions := map[uint64]Position{}
		reachable := map[uint64]bool{}
		for _, n := range replicas {
			positions[n] = Position{LastTerm: 1 + rng.Uint64N(3), LastIndex: rng.Uint64N(6)}
			reachable[n] = rng.IntN(4) != 0
		}
		preferred := uint64(rng.IntN(11))

		got, err := ChooseLeader(replicas, positions, reachable, preferred)

		var up []uint64
		for _, n := range replicas {
			if reachable[n] {
				up = append(up, n)
			}
		}
		if 2*len(up) <= len(replicas) {
			require.ErrorIs(t, err, ErrNoMajority, "case %d: %v reachable of %v", i, up, replicas)
			refused++
			continue
		}
		require.NoError(t, err, "case %d", i)
		chose++
		require.True(t, reachable[got] && slices.Contains(replicas, got), "case %d: chose %d, reachable %v", i, got, up)
		var maxes []uint64
		for _, n := range up {
			require.LessOrEqual(t, positions[n].Compare(positions[got]), 0,
				"case %d: chose %d at %v but reachable %d is at %v", i, got, positions[got], n, positions[n])
			if positions[n].Compare(positions[got]) == 0 {
				maxes = append(maxes, n)
			}
		}
		want := slices.Min(maxes)
		if slices.Contains(maxes, preferred) {
			want = preferred
		}
		require.Equal(t, want, got, "case %d: most up to date %v, preferred %d", i, maxes, preferred)
	}
	// The generator must exercise both outcomes, or the test proves nothing.
	require.Greater(t, chose, 5000)
	require.Greater(t, refused, 1000)
}

func TestCaughtUp(t *testing.T) {
	require.True(t, CaughtUp(pos(5, 100), pos(5, 100)))
	require.False(t, CaughtUp(pos(5, 100), pos(5, 99)))
	require.False(t, CaughtUp(pos(5, 100), pos(4, 100)), "same index in an older term is a different log")
	require.False(t, CaughtUp(pos(5, 100), pos(4, 120)))
}
