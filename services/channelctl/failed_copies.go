package channelctl

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

// Repair of failed copies (issue 12 item 5). A replica whose copy of a channel's log fails its
// checksum fails that group alone and keeps it failed until the control tier rejoins it from
// its peers; nothing tells the control tier but the replica itself, when asked. So every
// failedScanEvery each live replica node is asked once (one call per node, not per channel)
// for the groups that failed there or were reset and wait to rejoin, and each of them that a
// channel of the owned slots lists on that node is handed to the channel's machine as a rejoin
// (machine.Repair with Dead == With), with the same budget and backoff as the other repairs.
// The machine checks everything again; a refused or failed rejoin is ordered again by a later
// scan, after repairBackoff.

// failedScanEvery spaces the scans for failed copies.
const failedScanEvery = 5 * time.Second

// failedCopy is a channel whose copy failed (or was reset) on a replica node.
type failedCopy struct {
	node    uint64
	channel string
}

// failedScan is a finished scan's report to run.
type failedScan struct{ copies []failedCopy }

// scanFailedCopies starts a scan when one is due and none is running; its report comes back to
// run as a posted failedScan. It runs on the run goroutine.
func (c *Controller) scanFailedCopies(ctx context.Context, now time.Time) {
	if c.failedScanning || now.Sub(c.lastFailedScan) < failedScanEvery || len(c.channels) == 0 {
		return
	}
	nodes := c.liveReplicaNodes()
	if len(nodes) == 0 {
		return
	}
	c.lastFailedScan, c.failedScanning = now, true
	go func() {
		found := c.findFailedCopies(ctx, nodes)
		select {
		case c.events <- posted{failed: &failedScan{copies: found}}:
		case <-ctx.Done():
		}
	}()
}

// liveReplicaNodes is the replica nodes that serve: alive, or draining (which still holds its
// replicas and so may hold a failed copy).
func (c *Controller) liveReplicaNodes() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for id, n := range c.nodes {
		live := n.GetState() == arbiterv1.NodeState_NODE_STATE_ALIVE || n.GetState() == arbiterv1.NodeState_NODE_STATE_DRAINING
		if n.GetRole() == arbiterv1.NodeRole_NODE_ROLE_REPLICA && live {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// findFailedCopies asks each node, in parallel, for its failed groups.
func (c *Controller) findFailedCopies(ctx context.Context, nodes []uint64) []failedCopy {
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		out []failedCopy
	)
	for _, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, c.cfg.RPCTimeout)
			defer cancel()
			resp, err := callReplica(cctx, c, node, replicav1.ReplicaControlServiceClient.GetGroupStatus,
				&replicav1.GetGroupStatusRequest{Failed: true})
			if err != nil {
				// Unreachable (the arbiter's liveness covers that), or a replica too old to
				// know failed groups; the next scan asks again.
				c.cfg.Log.DebugContext(ctx, "could not ask a replica for its failed groups", "node", node, "err", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range resp.GetResults() {
				if failedOrReset(r) {
					out = append(out, failedCopy{node: node, channel: r.GetChannelId()})
				}
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b failedCopy) int {
		return cmp.Or(cmp.Compare(a.channel, b.channel), cmp.Compare(a.node, b.node))
	})
	return out
}

// failedOrReset reports whether a result of GetGroupStatus{failed} is a copy to rejoin: one
// that failed (DataLoss) or was reset. Anything else, say from a replica that ignores the
// field and reports healthy groups, is not: rejoining a healthy copy costs it a catch-up.
func failedOrReset(r *replicav1.GetGroupStatusResult) bool {
	return r.GetStatus().GetCopyReset() || (r.GetError() != nil && codes.Code(r.GetError().GetCode()) == codes.DataLoss)
}

// repairFailedCopies orders the rejoins of a scan's failed copies and returns the actions they
// produced. It runs on the run goroutine.
//
// A failed copy on the channel's leader cannot rejoin (its leader would have to take itself out
// of its own group), and the leader no longer serves the group: its machine checks the leader
// first (machine.CheckLeader), which elects another replica, and a later scan rejoins it. A
// hibernated channel is activated first, as for the other repairs: the rejoin needs a leader.
func (c *Controller) repairFailedCopies(ctx context.Context, found []failedCopy) []machine.Action {
	c.failedScanning = false
	now := c.cfg.Now()
	budget := c.repairBudget()
	var actions []machine.Action
	for _, f := range found {
		ch := c.channels[f.channel]
		if ch == nil {
			continue // another channelctl's
		}
		// A copy on a node the record does not list is left over from an earlier replica set:
		// nothing of the channel counts on it.
		if ch = c.newestRecord(ch); !slices.Contains(ch.GetReplicaNodeIds(), f.node) {
			continue
		}
		if budget <= 0 {
			break // the next scan finds the rest again
		}
		if now.Sub(c.repairTried[f.channel]) < repairBackoff {
			continue
		}
		state := ch.GetState()
		if m := c.machines[f.channel]; m != nil {
			if m.Busy() {
				continue
			}
			state = m.State()
		}
		var (
			ev  machine.Event
			how string
		)
		switch {
		case state == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE && ch.GetLeaderNodeId() == f.node:
			ev, how = machine.CheckLeader{}, "it leads: its leadership is checked first"
		case state == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE:
			ev, how = machine.Repair{Dead: f.node, With: f.node}, "rejoin ordered"
		case state == arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED:
			ev, how = machine.Activate{}, "activating the channel to rejoin it"
		default:
			continue // an election or hibernation is under way; a later scan looks again
		}
		c.repairTried[f.channel] = now
		budget--
		c.cfg.Log.InfoContext(ctx, "failed copy of a channel found on a replica; repairing it from its peers",
			"channel", f.channel, "node", f.node, "action", how)
		actions = append(actions, c.handle(ctx, posted{channel: f.channel, event: ev, ensure: true})...)
	}
	return actions
}
