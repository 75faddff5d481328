package channelctl

import (
	"context"
	"slices"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

// changesPerCall matches the replica's parallelism for ChangeReplicas (parallelGroups).
const changesPerCall = 64

// startChanges sends the round's replica set changes, keyed by the leader that changes its
// group. They run outside the round: a change waits for new replicas to catch up, and the
// rest of the round (a failover, say) must not wait for it. Calls carry at most
// changesPerCall changes, each call with its own timeout: the replica runs that many at once,
// so a longer call would start its tail late and time it out.
func (c *Controller) startChanges(ctx context.Context, byLeader map[uint64][]machine.ChangeReplicas) {
	for leader, acts := range byLeader {
		for chunk := range slices.Chunk(acts, changesPerCall) {
			go c.changeReplicas(ctx, leader, chunk)
		}
	}
}

// changeReplicas sends one ChangeReplicas to a leader and reports each channel's outcome.
func (c *Controller) changeReplicas(ctx context.Context, leader uint64, acts []machine.ChangeReplicas) {
	cctx, cancel := context.WithTimeout(ctx, c.cfg.RepairTimeout)
	defer cancel()
	req := &replicav1.ChangeReplicasRequest{}
	for _, a := range acts {
		adds := c.addresses([]uint64{a.Add})
		req.Changes = append(req.Changes, &replicav1.ReplicaChange{ChannelId: a.ChannelID, AddNodeId: a.Add,
			AddAddress: adds[a.Add], RemoveNodeId: a.Remove, Voters: a.Voters, Epoch: a.Epoch, AddStoreId: a.AddStoreID})
	}
	results, err := callBatch(cctx, c, leader, replicav1.ReplicaControlServiceClient.ChangeReplicas, req, len(acts))
	for i, a := range acts {
		ev := machine.ReplicasChanged{Epoch: a.Epoch, Err: err}
		if err == nil {
			res := results[i]
			ev.Status, ev.Err = res.GetStatus(), groupErr(res.GetError())
		}
		select {
		case c.events <- posted{channel: a.ChannelID, event: ev}:
		case <-ctx.Done():
			return
		}
	}
}
