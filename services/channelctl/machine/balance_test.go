package machine

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func balanceChannels(ids string, leader uint64, positions map[uint64]Position) []BalanceChannel {
	var out []BalanceChannel
	for _, id := range ids {
		out = append(out, BalanceChannel{ID: string(id), Replicas: []uint64{1, 2, 3}, Leader: leader, Positions: positions})
	}
	return out
}

func TestPlanBalance(t *testing.T) {
	all := map[uint64]Position{1: pos(5, 100), 2: pos(5, 100), 3: pos(5, 100)}
	lag3 := map[uint64]Position{1: pos(5, 100), 2: pos(5, 100), 3: pos(5, 99)}

	t.Run("nodes came back: spread evenly", func(t *testing.T) {
		moves := PlanBalance([]uint64{1, 2, 3}, balanceChannels("abcdefghi", 1, all), 100)
		require.Equal(t, []Move{{"a", 1, 2}, {"b", 1, 3}, {"c", 1, 2}, {"d", 1, 3}, {"e", 1, 2}, {"f", 1, 3}}, moves)
	})
	t.Run("rate limited", func(t *testing.T) {
		moves := PlanBalance([]uint64{1, 2, 3}, balanceChannels("abcdefghi", 1, all), 2)
		require.Equal(t, []Move{{"a", 1, 2}, {"b", 1, 3}}, moves)
		require.Empty(t, PlanBalance([]uint64{1, 2, 3}, balanceChannels("abcdefghi", 1, all), 0))
	})
	t.Run("never to a lagging target", func(t *testing.T) {
		moves := PlanBalance([]uint64{1, 2, 3}, balanceChannels("abcdefghi", 1, lag3), 100)
		require.Equal(t, []Move{{"a", 1, 2}, {"b", 1, 2}, {"c", 1, 2}, {"d", 1, 2}}, moves)
	})
	t.Run("no reported positions, no moves", func(t *testing.T) {
		require.Empty(t, PlanBalance([]uint64{1, 2, 3}, balanceChannels("abcdefghi", 1, map[uint64]Position{}), 100))
	})
	t.Run("positions unknown: planned, the machine's move check decides", func(t *testing.T) {
		moves := PlanBalance([]uint64{1, 2, 3}, balanceChannels("abcdefghi", 1, nil), 100)
		require.Equal(t, []Move{{"a", 1, 2}, {"b", 1, 3}, {"c", 1, 2}, {"d", 1, 3}, {"e", 1, 2}, {"f", 1, 3}}, moves)
	})
	t.Run("balanced already", func(t *testing.T) {
		chans := append(balanceChannels("ab", 1, all), append(balanceChannels("cd", 2, all), balanceChannels("e", 3, all)...)...)
		require.Empty(t, PlanBalance([]uint64{1, 2, 3}, chans, 100))
	})
	t.Run("draining node gives every leader away", func(t *testing.T) {
		chans := balanceChannels("abcd", 1, all)
		chans = append(chans, BalanceChannel{ID: "e", Replicas: []uint64{1, 2, 3}, Leader: 1, Positions: map[uint64]Position{
			1: pos(5, 100), 2: pos(5, 90), 3: pos(4, 100)}})
		chans = append(chans, BalanceChannel{ID: "f", Replicas: []uint64{1, 2, 3}, Leader: 0, Positions: all})
		moves := PlanBalance([]uint64{2, 3}, chans, 100)
		require.Equal(t, []Move{{"a", 1, 2}, {"b", 1, 3}, {"c", 1, 2}, {"d", 1, 3}}, moves,
			"e has no caught-up replica elsewhere and stays; f is not active")
	})
	t.Run("target must be a replica", func(t *testing.T) {
		chans := []BalanceChannel{
			{ID: "a", Replicas: []uint64{1, 2, 3}, Leader: 1, Positions: all},
			{ID: "b", Replicas: []uint64{1, 2, 3}, Leader: 1, Positions: all},
			{ID: "c", Replicas: []uint64{1, 2, 3}, Leader: 1, Positions: all},
		}
		moves := PlanBalance([]uint64{1, 2, 3, 4}, chans, 100)
		for _, mv := range moves {
			require.NotEqual(t, uint64(4), mv.To)
		}
		require.Equal(t, []Move{{"a", 1, 2}, {"b", 1, 3}}, moves, "node 4 holds no replica, so 1/1/1/0 is as even as it gets")
	})
}

// TestPlanBalanceRules checks the plan on random clusters: each move goes to a caught-up replica
// allowed to lead, no channel moves twice, the limit holds, and the spread never gets worse.
func TestPlanBalanceRules(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range 300 {
		nodes := []uint64{1, 2, 3, 4, 5}
		eligible := nodes[:3+rng.IntN(3)]
		var chans []BalanceChannel
		for c := range 40 {
			perm := rng.Perm(5)
			replicas := []uint64{uint64(perm[0] + 1), uint64(perm[1] + 1), uint64(perm[2] + 1)}
			positions := map[uint64]Position{}
			for _, r := range replicas {
				positions[r] = pos(5, 100-rng.Uint64N(2))
			}
			leader := replicas[rng.IntN(3)]
			positions[leader] = pos(5, 100)
			chans = append(chans, BalanceChannel{ID: chanID(c), Replicas: replicas, Leader: leader, Positions: positions})
		}
		limit := rng.IntN(30)
		moves := PlanBalance(eligible, chans, limit)
		require.LessOrEqual(t, len(moves), limit)

		spread := func(leaderOf map[string]uint64) int {
			count := map[uint64]int{}
			for _, n := range eligible {
				count[n] = 0
			}
			for _, l := range leaderOf {
				if _, ok := count[l]; ok {
					count[l]++
				}
			}
			lo, hi := len(chans), 0
			for _, c := range count {
				lo, hi = min(lo, c), max(hi, c)
			}
			return hi - lo
		}
		leaderOf := map[string]uint64{}
		byID := map[string]BalanceChannel{}
		for _, c := range chans {
			leaderOf[c.ID] = c.Leader
			byID[c.ID] = c
		}
		onIneligible := 0
		for _, c := range chans {
			if !slices.Contains(eligible, c.Leader) {
				onIneligible++
			}
		}
		before := spread(leaderOf)
		seen := map[string]bool{}
		for _, mv := range moves {
			c := byID[mv.ChannelID]
			require.False(t, seen[mv.ChannelID], "case %d: %s moved twice", i, mv.ChannelID)
			seen[mv.ChannelID] = true
			require.Equal(t, c.Leader, mv.From)
			require.Contains(t, c.Replicas, mv.To, "case %d", i)
			require.Contains(t, eligible, mv.To, "case %d", i)
			require.True(t, CaughtUp(c.Positions[c.Leader], c.Positions[mv.To]), "case %d: %v lags", i, mv)
			leaderOf[mv.ChannelID] = mv.To
		}
		if onIneligible == 0 {
			require.LessOrEqual(t, spread(leaderOf), before, "case %d: balancing made the spread worse", i)
		}
	}
}
