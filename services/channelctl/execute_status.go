package channelctl

import (
	"context"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

// status sends one GetGroupStatus per node for both the position queries and the leader
// confirmations of the round. It returns the tally of each channel queried (its event waits
// for all of its nodes) and emits each confirmation as its node answers.
func (x *roundCalls) status(query map[uint64][]machine.QueryPositions, confirm map[uint64][]machine.ConfirmLeader) map[string]*nodeAnswers {
	queries := map[string]*nodeAnswers{}
	nodes := map[uint64]bool{}
	for node, acts := range query {
		nodes[node] = true
		for _, a := range acts {
			if queries[a.ChannelID] == nil {
				queries[a.ChannelID] = newNodeAnswers(a.Epoch)
			}
		}
	}
	for node := range confirm {
		nodes[node] = true
	}
	for node := range nodes {
		x.goCall(func(ctx context.Context) {
			var ids []string
			for _, a := range query[node] {
				ids = append(ids, a.ChannelID)
			}
			for _, a := range confirm[node] {
				ids = append(ids, a.ChannelID)
			}
			// Results are matched by channel id: one missing reads as a nil status.
			resp, err := callReplica(ctx, x.c, node, replicav1.ReplicaControlServiceClient.GetGroupStatus,
				&replicav1.GetGroupStatusRequest{ChannelIds: ids})
			byID := map[string]*replicav1.GetGroupStatusResult{}
			if err == nil {
				for _, res := range resp.GetResults() {
					byID[res.GetChannelId()] = res
				}
			}
			x.mu.Lock()
			for _, a := range query[node] {
				q := queries[a.ChannelID]
				res := byID[a.ChannelID]
				switch {
				case err != nil:
					q.errs[node] = err
				case groupErr(res.GetError()) != nil:
					q.errs[node] = groupErr(res.GetError())
				default:
					q.statuses[node] = res.GetStatus()
				}
			}
			x.mu.Unlock()
			for _, a := range confirm[node] {
				// A failed call leaves leadership unknown; a group error from a node that
				// answered is a definite "does not serve it" and comes as a nil status.
				x.emit(a.ChannelID, machine.ConfirmResult{Node: node, Epoch: a.Epoch, Status: byID[a.ChannelID].GetStatus(), Err: err})
			}
		})
	}
	return queries
}
