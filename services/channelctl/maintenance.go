package channelctl

import (
	"context"
	"maps"
	"slices"
	"time"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

// Background upkeep of the channels in the owned slots: replica-set repair after a node stays
// dead, and leader balance after a node comes back or joins. Both only hand events to the
// machines, which check everything again (a repair needs a live leader, a move a caught-up
// target) and commit every step in the arbiter; this file decides what to ask and how fast.

const (
	// repairBackoff is how long a channel whose repair was ordered waits before it is ordered
	// again (the order was refused, failed, or is still running).
	repairBackoff = 5 * time.Second
	// repairPassEvery spaces the scans for channels to repair: each scan walks every channel of
	// the owned slots.
	repairPassEvery = time.Second
	// maxBalancePasses bounds the passes after one trigger: a target that never catches up
	// must not keep the planner going forever.
	maxBalancePasses = 30
	// balancePassEvery spaces balance passes while a pass still finds moves to make, so that
	// the moves of one pass settle before the next counts leaders.
	balancePassEvery = 2 * time.Second
)

// nodeChangedForUpkeep records a replica node's death or return for the repair and balance
// timers, and reloads the groups of a node that came back. It runs on the run goroutine, with
// the node's previous record (nil when new).
func (c *Controller) nodeChangedForUpkeep(ctx context.Context, prev, n *arbiterv1.Node) {
	if n.GetRole() != arbiterv1.NodeRole_NODE_ROLE_REPLICA {
		return
	}
	restarted := prev != nil && n.GetIncarnation() > prev.GetIncarnation()
	returned := prev.GetState() == arbiterv1.NodeState_NODE_STATE_DEAD && n.GetState() != arbiterv1.NodeState_NODE_STATE_DEAD
	if restarted || returned {
		c.rejoin(ctx, n.GetNodeId())
	}
	now := c.cfg.Now()
	dead := n.GetState() == arbiterv1.NodeState_NODE_STATE_DEAD
	switch {
	case dead:
		if _, ok := c.deadSince[n.GetNodeId()]; !ok {
			c.deadSince[n.GetNodeId()] = now
		}
	default:
		delete(c.deadSince, n.GetNodeId())
		draining := n.GetState() == arbiterv1.NodeState_NODE_STATE_DRAINING && prev.GetState() != arbiterv1.NodeState_NODE_STATE_DRAINING
		if draining {
			// A draining node may not lead: its leaders move away now (the planner moves
			// leaders off nodes outside the eligible ones first).
			c.balanceAt, c.balancePasses = now, 0
			return
		}
		if (prev == nil || returned || restarted) && n.GetState() == arbiterv1.NodeState_NODE_STATE_ALIVE && c.balanceAt.IsZero() {
			// A node that just came back is still catching up; moving leaders to it at once
			// would only have the move checks refuse.
			c.balanceAt = now.Add(c.cfg.BalanceDelay)
			c.balancePasses = 0
		}
	}
}

// rejoinBatch is how many groups one LoadGroups of a rejoin carries.
const rejoinBatch = 1000

// rejoin loads on a replica node that came back (declared dead and alive again, or restarted
// under a new incarnation) the groups of the active channels it belongs to. Nothing else would:
// elections load groups only on the replicas they gather, and an active channel has no election
// coming, so the node would stay out of its groups, a follower short, until the next one. Loads
// are idempotent; a failed one is logged and the next election or activation loads it anyway.
func (c *Controller) rejoin(ctx context.Context, node uint64) {
	var specs []*replicav1.GroupSpec
	for _, ch := range c.channels {
		if ch.GetState() != arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE || !slices.Contains(ch.GetReplicaNodeIds(), node) {
			continue
		}
		spec := &replicav1.GroupSpec{ChannelId: ch.GetChannelId(), GroupId: ch.GetGroupId(), Epoch: ch.GetEpoch()}
		for id, addr := range c.addresses(ch.GetReplicaNodeIds()) {
			spec.Replicas = append(spec.Replicas, &replicav1.Peer{NodeId: id, Address: addr})
		}
		specs = append(specs, spec)
	}
	if len(specs) == 0 {
		return
	}
	c.cfg.Log.InfoContext(ctx, "replica node came back; loading its active groups", "node", node, "groups", len(specs))
	go func() {
		for chunk := range slices.Chunk(specs, rejoinBatch) {
			c.rejoinChunk(ctx, node, chunk)
		}
	}()
}

// rejoinRetryFor bounds how long a rejoin keeps trying: the node registers with the arbiter
// a moment before it serves, and may be slow to start.
const rejoinRetryFor = time.Minute

func (c *Controller) rejoinChunk(ctx context.Context, node uint64, chunk []*replicav1.GroupSpec) {
	deadline := c.cfg.Now().Add(rejoinRetryFor)
	wait := c.cfg.RetryAfter
	for {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.RPCTimeout)
		resp, err := c.call(cctx, node, func(ctx context.Context, cl replicav1.ReplicaControlServiceClient) (any, error) {
			return cl.LoadGroups(ctx, &replicav1.LoadGroupsRequest{Groups: chunk})
		})
		cancel()
		if err == nil {
			for _, r := range resp.(*replicav1.LoadGroupsResponse).GetResults() {
				if r.GetError() != nil {
					c.cfg.Log.WarnContext(ctx, "could not reload a group on a returning node", "node", node,
						"channel", r.GetChannelId(), "err", groupErr(r.GetError()))
				}
			}
			return
		}
		if ctx.Err() != nil || c.cfg.Now().After(deadline) {
			c.cfg.Log.WarnContext(ctx, "could not reload groups on a returning node", "node", node, "groups", len(chunk), "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// upkeep returns the repair and balance orders due now.
func (c *Controller) upkeep(now time.Time) []posted {
	return append(c.repairs(now), c.balance(now)...)
}

// repairs orders a new replica for channels with a replica dead longer than ReplaceDeadAfter,
// at most MaxRepairs at a time. A hibernated channel is activated first: a repair needs a
// leader, and a channel left with two replicas would lose data to one more failure even while
// nobody uses it.
func (c *Controller) repairs(now time.Time) []posted {
	if now.Sub(c.lastRepairPass) < repairPassEvery {
		return nil
	}
	overdue := map[uint64]bool{}
	for n, since := range c.deadSince {
		if now.Sub(since) >= c.cfg.ReplaceDeadAfter {
			overdue[n] = true
		}
	}
	if len(overdue) == 0 {
		return nil
	}
	c.lastRepairPass = now
	budget := c.cfg.MaxRepairs
	for _, m := range c.machines {
		if m.Repairing() {
			budget--
		}
	}
	load, candidates := c.replicaLoad()
	var out []posted
	for _, id := range slices.Sorted(maps.Keys(c.channels)) {
		if budget <= 0 {
			break
		}
		ch := c.channels[id]
		var dead uint64
		for _, r := range ch.GetReplicaNodeIds() {
			if overdue[r] {
				dead = r
				break
			}
		}
		if dead == 0 || now.Sub(c.repairTried[id]) < repairBackoff {
			continue
		}
		state := ch.GetState()
		if m := c.machines[id]; m != nil {
			if m.Busy() {
				continue
			}
			state = m.State()
		}
		var ev machine.Event
		switch state {
		case arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE:
			with := pickReplica(candidates, load, ch.GetReplicaNodeIds())
			if with == 0 {
				continue // no live node outside the set; nothing to do until one joins
			}
			load[with]++
			ev = machine.Repair{Dead: dead, With: with}
		case arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED:
			ev = machine.Activate{}
		default:
			continue
		}
		c.repairTried[id] = now
		budget--
		out = append(out, posted{channel: id, event: ev, ensure: true})
	}
	return out
}

// replicaLoad returns the replica nodes that may take a new replica (alive, not draining), and
// how many channels each holds as far as the arbiter reported.
func (c *Controller) replicaLoad() (map[uint64]uint64, []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	load := map[uint64]uint64{}
	var nodes []uint64
	for id, n := range c.nodes {
		if n.GetRole() == arbiterv1.NodeRole_NODE_ROLE_REPLICA && n.GetState() == arbiterv1.NodeState_NODE_STATE_ALIVE {
			nodes = append(nodes, id)
			load[id] = n.GetLoad().GetChannels()
		}
	}
	slices.Sort(nodes)
	return load, nodes
}

// pickReplica is the least loaded candidate outside set (lowest id on ties), 0 if none.
func pickReplica(candidates []uint64, load map[uint64]uint64, set []uint64) uint64 {
	var best uint64
	for _, n := range candidates {
		if slices.Contains(set, n) {
			continue
		}
		if best == 0 || load[n] < load[best] {
			best = n
		}
	}
	return best
}

// balance plans leader moves once BalanceDelay after a replica node came back or joined, at
// most BalanceMoves per pass, and plans again while a pass still finds that many.
func (c *Controller) balance(now time.Time) []posted {
	if c.balanceAt.IsZero() || now.Before(c.balanceAt) {
		return nil
	}
	c.balanceAt = time.Time{}
	_, nodes := c.replicaLoad()
	var chans []machine.BalanceChannel
	for id, ch := range c.channels {
		state, leader := ch.GetState(), ch.GetLeaderNodeId()
		if m := c.machines[id]; m != nil {
			if m.Busy() || m.Stalled() {
				continue
			}
			state, leader = m.State(), m.Channel().GetLeaderNodeId()
		}
		if state != arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE {
			continue
		}
		// Positions are left to each machine's move check, which refuses a lagging target.
		chans = append(chans, machine.BalanceChannel{ID: id, Replicas: ch.GetReplicaNodeIds(), Leader: leader})
	}
	moves := machine.PlanBalance(nodes, chans, c.cfg.BalanceMoves)
	out := make([]posted, 0, len(moves))
	for _, mv := range moves {
		out = append(out, posted{channel: mv.ChannelID, event: machine.MoveLeader{Target: mv.To}, ensure: true})
	}
	// Plan again while there is anything to move: moves refused because their target was still
	// catching up get another chance, within a bounded number of passes.
	if len(moves) > 0 && c.balancePasses < maxBalancePasses {
		c.balancePasses++
		c.balanceAt = now.Add(balancePassEvery)
	}
	if len(moves) > 0 {
		c.cfg.Log.Info("balancing leaders", "moves", len(moves), "nodes", nodes)
	}
	return out
}
