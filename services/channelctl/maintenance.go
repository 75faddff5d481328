package channelctl

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"time"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

// Background upkeep of the channels in the owned slots: replica-set repair after a node stays
// dead, a rejoin as soon as a live replica's node registers a store other than the one a
// channel's record names for it (its disk was wiped or replaced) or reports its copy of the
// channel failed (failed_copies.go), and leader balance after a node comes back or joins. All
// only hand events to the machines, which check everything again (a repair needs a live
// leader, a move a caught-up target) and commit every step in the arbiter; these files decide
// what to ask and how fast.

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
	// reconcilePassEvery spaces the scans for joint records to reconcile (see reconciles).
	reconcilePassEvery = 30 * time.Second
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
		c.rejoin(ctx, n)
	}
	alive := n.GetState() == arbiterv1.NodeState_NODE_STATE_ALIVE
	if n.GetStoreId() != 0 && alive && (prev.GetStoreId() != n.GetStoreId() || prev.GetState() != n.GetState()) {
		// A store registered anew, or a node alive again: its channels' records may name
		// another store. The next repair pass looks, without waiting for ReplaceDeadAfter.
		c.storeCheck = true
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
//
// Each load names the store the channel's record holds for the node. Channels whose record
// names a store other than the one the node registered are left out: the node's store was
// replaced, it would refuse the load, and those channels take it back through a rejoin repair
// (repairs).
func (c *Controller) rejoin(ctx context.Context, n *arbiterv1.Node) {
	node := n.GetNodeId()
	specs, replaced := c.rejoinSpecs(node, n.GetStoreId(), nil)
	if replaced > 0 {
		c.cfg.Log.InfoContext(ctx, "replica node came back with a new store; its channels rejoin through repairs",
			"node", node, "store", n.GetStoreId(), "channels", replaced)
	}
	if len(specs) == 0 {
		return
	}
	c.cfg.Log.InfoContext(ctx, "replica node came back; loading its active groups", "node", node, "groups", len(specs))
	c.loadInBackground(ctx, node, specs)
}

// loadInBackground loads specs on node, rejoinBatch groups per call, each call retried for a
// while (rejoinChunk), without holding up the run goroutine.
func (c *Controller) loadInBackground(ctx context.Context, node uint64, specs []*replicav1.GroupSpec) {
	go func() {
		for chunk := range slices.Chunk(specs, rejoinBatch) {
			c.rejoinChunk(ctx, node, chunk)
		}
	}()
}

// rejoinSpecs is the loads of the active channels node belongs to (of the given slots; of
// every owned slot when slots is nil), each naming the store the record holds for it, and how
// many channels were left out because their record names a store other than store, the
// node's own.
func (c *Controller) rejoinSpecs(node, store uint64, slots []uint32) ([]*replicav1.GroupSpec, int) {
	var (
		specs    []*replicav1.GroupSpec
		replaced int
	)
	for _, id := range slices.Sorted(maps.Keys(c.channels)) {
		ch := c.channels[id]
		if !slices.Contains(machine.Union(ch), node) || slots != nil && !slices.Contains(slots, ch.GetSlot()) {
			continue
		}
		switch ch.GetState() {
		case arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE:
		case arbiterv1.ChannelState_CHANNEL_STATE_ACTIVATING, arbiterv1.ChannelState_CHANNEL_STATE_ELECTING:
			// The election under way may have gathered without the node; once it settles,
			// nothing would load the group there (loadPending).
			if slots == nil {
				c.pendingLoads[id] = appendNew(c.pendingLoads[id], node)
			}
			continue
		default:
			continue
		}
		spec, ok := c.loadSpec(ch, node, store)
		if !ok {
			replaced++
			continue
		}
		specs = append(specs, spec)
	}
	return specs, replaced
}

// loadSpec is the load of ch's group on node, whose store is store: a join naming no store
// when only the channel's next replica set lists the node, else naming the store the record
// holds for it. ok is false when the record names another store than the node's (it was
// replaced, and the node takes the channel back through a rejoin repair).
func (c *Controller) loadSpec(ch *arbiterv1.Channel, node, store uint64) (_ *replicav1.GroupSpec, ok bool) {
	spec := &replicav1.GroupSpec{ChannelId: ch.GetChannelId(), GroupId: ch.GetGroupId(), Epoch: ch.GetEpoch()}
	switch {
	case slices.Contains(machine.Joining(ch), node):
		// Only the next replica set lists the node (a repair under way or cut short): it may
		// hold nothing yet, so it loads as a join, naming no store, and learns the group from
		// the leader if raft's configuration counts it.
		spec.Join = true
	case storeReplaced(ch.GetReplicaStoreIds()[node], store):
		// The watch may not have delivered a rejoin this channelctl just recorded.
		if ch = c.newestRecord(ch); storeReplaced(ch.GetReplicaStoreIds()[node], store) {
			return nil, false
		}
		spec.Epoch, spec.StoreId = ch.GetEpoch(), ch.GetReplicaStoreIds()[node]
	default:
		spec.StoreId = ch.GetReplicaStoreIds()[node]
	}
	for id, addr := range c.addresses(machine.Union(ch)) {
		spec.Replicas = append(spec.Replicas, &replicav1.Peer{NodeId: id, Address: addr})
	}
	return spec, true
}

// loadPending loads ch's group, now that the channel settled, on the replica nodes that came
// back while it was electing or activating (rejoinSpecs): the election may have gathered
// without them, and no other load would reach them while the channel stays active (make
// verify FAULTS=powerloss, seeds 1 and 2: a replica whose power came back while its channel
// elected never held that group again). A channel that hibernated needs nothing: activation
// loads every live replica.
func (c *Controller) loadPending(ctx context.Context, ch *arbiterv1.Channel) {
	nodes := c.pendingLoads[ch.GetChannelId()]
	switch ch.GetState() {
	case arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE:
	case arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED:
		delete(c.pendingLoads, ch.GetChannelId())
		return
	default:
		return
	}
	delete(c.pendingLoads, ch.GetChannelId())
	c.mu.Lock()
	var live []*arbiterv1.Node
	for _, n := range nodes {
		if rec := c.nodes[n]; rec != nil && rec.GetState() != arbiterv1.NodeState_NODE_STATE_DEAD {
			live = append(live, rec)
		}
	}
	c.mu.Unlock()
	for _, n := range live {
		if !slices.Contains(machine.Union(ch), n.GetNodeId()) {
			continue
		}
		if spec, ok := c.loadSpec(ch, n.GetNodeId(), n.GetStoreId()); ok {
			c.loadInBackground(ctx, n.GetNodeId(), []*replicav1.GroupSpec{spec})
		}
	}
}

// appendNew appends v to s unless s holds it.
func appendNew(s []uint64, v uint64) []uint64 {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// reloadSlots loads, on every live replica node, the groups of the active channels of slots
// that this channelctl just took over or started with. A node's return is acted on only by
// the channelctl that owns the slot when the watch delivers it (rejoin), and only for as long
// as that channelctl lives: one that died or lost the slot in the meantime leaves the node out
// of its groups, a follower short, until an election happens to load them (found by make
// verify SEED=3 FAULTS=all: a replica restarted while its channelctl was killed never took its
// group back). Loads are idempotent, so the new owner simply loads them all again.
func (c *Controller) reloadSlots(ctx context.Context, slots []uint32) {
	c.mu.Lock()
	var live []*arbiterv1.Node
	for _, n := range c.nodes {
		if n.GetRole() == arbiterv1.NodeRole_NODE_ROLE_REPLICA && n.GetState() != arbiterv1.NodeState_NODE_STATE_DEAD {
			live = append(live, n)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(live, func(a, b *arbiterv1.Node) int { return cmp.Compare(a.GetNodeId(), b.GetNodeId()) })
	for _, n := range live {
		node := n.GetNodeId()
		specs, _ := c.rejoinSpecs(node, n.GetStoreId(), slots)
		if len(specs) == 0 {
			continue
		}
		c.cfg.Log.InfoContext(ctx, "loading the groups of taken-over slots on a replica", "node", node, "groups", len(specs))
		c.loadInBackground(ctx, node, specs)
	}
}

// storeReplaced reports whether a replica's store is known to differ from the one a record
// names for it; an unknown store (0) on either side is no evidence.
func storeReplaced(recorded, current uint64) bool {
	return recorded != 0 && current != 0 && recorded != current
}

// newestRecord is the channel's newest record here: its machine's when it has one (a machine
// sees its own compare-and-sets before the watch delivers them), else ch.
func (c *Controller) newestRecord(ch *arbiterv1.Channel) *arbiterv1.Channel {
	if m := c.machines[ch.GetChannelId()]; m != nil {
		return m.Channel()
	}
	return ch
}

// nodeStores is the store each live replica node registered, for those that registered one.
func (c *Controller) nodeStores() map[uint64]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[uint64]uint64{}
	for id, n := range c.nodes {
		if n.GetRole() == arbiterv1.NodeRole_NODE_ROLE_REPLICA && n.GetState() == arbiterv1.NodeState_NODE_STATE_ALIVE && n.GetStoreId() != 0 {
			out[id] = n.GetStoreId()
		}
	}
	return out
}

// namesReplacedStore reports whether ch names, for one of its replicas, a store other than
// the one the replica's live node registered.
func (c *Controller) namesReplacedStore(ch *arbiterv1.Channel) bool {
	if len(ch.GetReplicaStoreIds()) == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for r, recorded := range ch.GetReplicaStoreIds() {
		if n := c.nodes[r]; n.GetState() == arbiterv1.NodeState_NODE_STATE_ALIVE && storeReplaced(recorded, n.GetStoreId()) {
			return true
		}
	}
	return false
}

// replacedMembers is the replicas of ch whose live node registered a store other than the one
// the record names for it, in the record's order.
func replacedMembers(ch *arbiterv1.Channel, stores map[uint64]uint64) []uint64 {
	var out []uint64
	for _, r := range ch.GetReplicaNodeIds() {
		if storeReplaced(ch.GetReplicaStoreIds()[r], stores[r]) {
			out = append(out, r)
		}
	}
	return out
}

// rejoinRetryFor bounds how long a rejoin keeps trying: the node registers with the arbiter
// a moment before it serves, and may be slow to start.
const rejoinRetryFor = time.Minute

func (c *Controller) rejoinChunk(ctx context.Context, node uint64, chunk []*replicav1.GroupSpec) {
	deadline := c.cfg.Now().Add(rejoinRetryFor)
	wait := c.cfg.RetryAfter
	for {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.RPCTimeout)
		resp, err := callReplica(cctx, c, node, replicav1.ReplicaControlServiceClient.LoadGroups,
			&replicav1.LoadGroupsRequest{Groups: chunk})
		cancel()
		if err == nil {
			for _, r := range resp.GetResults() {
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

// upkeep returns the repair, balance and reconciliation orders due now.
func (c *Controller) upkeep(now time.Time) []posted {
	return slices.Concat(c.repairs(now), c.balance(now), c.reconciles(now))
}

// reconciles checks the leader of each active channel whose record still names a next replica
// set that no running repair is about to settle: a check finding the leader on the record's
// set has the machine reconcile the record with raft (machine/reconcile.go), one finding it on
// the next set rolls the record forward. Without it, a busy channel whose repair was abandoned
// and never ordered again (its dead replica came back) would keep a next set for good: idle
// channels reconcile in their hibernation check, busy ones only here.
func (c *Controller) reconciles(now time.Time) []posted {
	if now.Sub(c.lastReconcilePass) < reconcilePassEvery {
		return nil
	}
	c.lastReconcilePass = now
	var out []posted
	for id, ch := range c.channels {
		if len(ch.GetNextReplicaNodeIds()) == 0 || now.Sub(c.repairTried[id]) < reconcilePassEvery {
			continue
		}
		if m := c.machines[id]; m != nil {
			if m.Busy() || m.State() != arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE || len(m.Channel().GetNextReplicaNodeIds()) == 0 {
				continue
			}
		} else if ch.GetState() != arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE {
			continue
		}
		out = append(out, posted{channel: id, event: machine.CheckLeader{}, ensure: true})
	}
	return out
}

// repairs orders a new replica for channels with a replica dead longer than ReplaceDeadAfter,
// and a rejoin (machine.Repair with Dead == With) for channels with a live replica whose node
// registered a store other than the one the record names for it, at most MaxRepairs at a time.
// A rejoin does not wait: the node is alive, and its store is known to be the wrong one as soon
// as it registers. A hibernated channel is activated first: a repair needs a leader, and a
// channel left with two replicas would lose data to one more failure even while nobody uses it.
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
	if len(overdue) == 0 && !c.storeCheck {
		return nil
	}
	c.lastRepairPass = now
	stores := c.nodeStores()
	// replaced: some channel still names a store its node no longer has, so the next pass
	// looks again.
	replaced := false
	budget := c.repairBudget()
	load, candidates := c.replicaLoad()
	var (
		out     []posted
		rejoins int
	)
	for _, id := range slices.Sorted(maps.Keys(c.channels)) {
		if budget <= 0 {
			replaced = replaced || c.storeCheck // not looked at: look again
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
		var rejoin []uint64
		if dead == 0 {
			if rejoin = replacedMembers(ch, stores); len(rejoin) > 0 {
				// The machine's record may already hold the new store (a rejoin it recorded
				// that the watch has not delivered yet).
				ch = c.newestRecord(ch)
				rejoin = replacedMembers(ch, stores)
			}
			if len(rejoin) == 0 {
				continue
			}
			replaced = true
		}
		if now.Sub(c.repairTried[id]) < repairBackoff {
			continue
		}
		state, leader := ch.GetState(), ch.GetLeaderNodeId()
		if m := c.machines[id]; m != nil {
			if m.Busy() {
				continue
			}
			state = m.State()
		}
		var ev machine.Event
		switch {
		case state == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE && dead != 0:
			with := resumedReplica(ch, dead, candidates)
			if with == 0 {
				with = pickReplica(candidates, load, ch.GetReplicaNodeIds())
			}
			if with == 0 {
				continue // no live node outside the set; nothing to do until one joins
			}
			load[with]++
			ev = machine.Repair{Dead: dead, With: with}
		case state == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE:
			i := slices.IndexFunc(rejoin, func(r uint64) bool { return r != leader })
			if i < 0 {
				// Only the leader's store was replaced. It cannot rejoin its own group, and it
				// does not serve it either (its loads are refused): its leadership is checked
				// now, which elects another replica, rather than when a client is turned away;
				// a later pass rejoins it under the new leader.
				ev = machine.CheckLeader{}
				break
			}
			ev = machine.Repair{Dead: rejoin[i], With: rejoin[i]}
			rejoins++
		case state == arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED:
			ev = machine.Activate{}
		default:
			continue
		}
		c.repairTried[id] = now
		budget--
		out = append(out, posted{channel: id, event: ev, ensure: true})
	}
	c.storeCheck = replaced
	if rejoins > 0 {
		c.cfg.Log.Info("rejoining replicas whose store was replaced", "channels", rejoins)
	}
	return out
}

// repairBudget is how many more repairs may start now: MaxRepairs less those running.
func (c *Controller) repairBudget() int {
	budget := c.cfg.MaxRepairs
	for _, m := range c.machines {
		if m.Repairing() {
			budget--
		}
	}
	return budget
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
// resumedReplica is the replica that an earlier repair of dead, cut short, was adding (the one
// node the channel's next replica set lists in place of dead), when it may still take channels:
// ordering the same repair again finishes it (each step already done is a no-op), where
// another replica would take raft's configuration somewhere the record never named. 0 when
// there is none.
func resumedReplica(ch *arbiterv1.Channel, dead uint64, candidates []uint64) uint64 {
	joining := machine.Joining(ch)
	if len(joining) != 1 || slices.Contains(ch.GetNextReplicaNodeIds(), dead) || !slices.Contains(candidates, joining[0]) {
		return 0
	}
	return joining[0]
}

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
