package machine

import (
	"cmp"
	"slices"
)

// BalanceChannel is what leader balancing needs to know of an active channel.
type BalanceChannel struct {
	ID       string
	Replicas []uint64
	Leader   uint64
	// Positions are the replicas' reported positions; a replica without one is never a target,
	// since it cannot be shown to be caught up. Nil leaves the check to the channel's machine:
	// MoveLeader queries both replicas and refuses a lagging target before anything moves.
	Positions map[uint64]Position
}

// Move is one ordered leader transfer, fed to the channel's machine as MoveLeader{To}.
type Move struct {
	ChannelID string
	From, To  uint64
}

// PlanBalance plans at most maxMoves leader transfers that spread leaders evenly over nodes (the
// nodes allowed to lead: alive, not draining). Leaders on a node outside nodes move first, to
// the least-loaded caught-up replica. Then, while some node leads at least two more channels
// than another, a channel of the busiest node moves to the least busy replica that holds the
// leader's whole log; a lagging target is never chosen, because raft would pause the channel's
// writes until it caught up. Each channel moves at most once per plan, channels and nodes are
// taken in id order, so the plan is deterministic. maxMoves is the rate limit: a node coming
// back must not trigger thousands of transfers at once.
func PlanBalance(nodes []uint64, channels []BalanceChannel, maxMoves int) []Move {
	if maxMoves <= 0 || len(nodes) == 0 {
		return nil
	}
	eligible := map[uint64]bool{}
	count := map[uint64]int{}
	for _, n := range nodes {
		eligible[n] = true
		count[n] = 0
	}
	chans := slices.Clone(channels)
	slices.SortFunc(chans, func(a, b BalanceChannel) int { return cmp.Compare(a.ID, b.ID) })
	byLeader := map[uint64][]int{}
	for i, c := range chans {
		if eligible[c.Leader] {
			count[c.Leader]++
			byLeader[c.Leader] = append(byLeader[c.Leader], i)
		}
	}
	canTake := func(c BalanceChannel, to uint64) bool {
		if to == c.Leader || !eligible[to] || !slices.Contains(c.Replicas, to) {
			return false
		}
		if c.Positions == nil {
			return true
		}
		lp, ok1 := c.Positions[c.Leader]
		tp, ok2 := c.Positions[to]
		return ok1 && ok2 && CaughtUp(lp, tp)
	}
	byCount := func(desc bool) []uint64 {
		s := slices.Clone(nodes)
		slices.SortFunc(s, func(a, b uint64) int {
			c := cmp.Compare(count[a], count[b])
			if desc {
				c = -c
			}
			if c != 0 {
				return c
			}
			return cmp.Compare(a, b)
		})
		return s
	}

	var moves []Move
	moved := map[int]bool{}
	move := func(i int, to uint64) {
		c := chans[i]
		moves = append(moves, Move{ChannelID: c.ID, From: c.Leader, To: to})
		moved[i] = true
		if eligible[c.Leader] {
			count[c.Leader]--
		}
		count[to]++
	}

	// Leaders on nodes that may not lead.
	for i, c := range chans {
		if len(moves) >= maxMoves {
			return moves
		}
		if c.Leader == 0 || eligible[c.Leader] {
			continue
		}
		for _, to := range byCount(false) {
			if canTake(c, to) {
				move(i, to)
				break
			}
		}
	}

	// Even out.
	for len(moves) < maxMoves {
		found := false
	search:
		for _, from := range byCount(true) {
			for _, to := range byCount(false) {
				if count[from]-count[to] < 2 {
					break
				}
				for _, i := range byLeader[from] {
					if !moved[i] && canTake(chans[i], to) {
						move(i, to)
						found = true
						break search
					}
				}
			}
		}
		if !found {
			break
		}
	}
	return moves
}
