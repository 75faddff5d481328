package channelctl

import (
	"context"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

// Elections and leader moves: one call per node, each channel's outcome reported as soon as
// its node answered.

// campaign sends one Campaign per node.
func (x *roundCalls) campaign(byNode map[uint64][]machine.Campaign) {
	for node, acts := range byNode {
		x.goCall(func(ctx context.Context) {
			req := &replicav1.CampaignRequest{}
			for _, a := range acts {
				req.Orders = append(req.Orders, &replicav1.CampaignOrder{ChannelId: a.ChannelID, Epoch: a.Epoch})
			}
			results, err := callBatch(ctx, x.c, node, replicav1.ReplicaControlServiceClient.Campaign, req, len(acts))
			for i, a := range acts {
				ev := machine.CampaignResult{Node: node, Epoch: a.Epoch, Err: err}
				if err == nil {
					res := results[i]
					ev.Leader, ev.Term, ev.Err = res.GetLeader(), res.GetStatus().GetTerm(), groupErr(res.GetError())
					ev.Status = res.GetStatus()
				}
				x.emit(a.ChannelID, ev)
			}
		})
	}
}

// transfer sends one TransferLeader per leader that hands over.
func (x *roundCalls) transfer(byLeader map[uint64][]machine.TransferLeader) {
	for node, acts := range byLeader {
		x.goCall(func(ctx context.Context) {
			req := &replicav1.TransferLeaderRequest{}
			for _, a := range acts {
				req.Transfers = append(req.Transfers, &replicav1.Transfer{ChannelId: a.ChannelID, TargetNodeId: a.To, Epoch: a.Epoch})
			}
			results, err := callBatch(ctx, x.c, node, replicav1.ReplicaControlServiceClient.TransferLeader, req, len(acts))
			for i, a := range acts {
				ev := machine.TransferResult{Target: a.To, Epoch: a.Epoch, Err: err}
				if err == nil {
					ev.Err = groupErr(results[i].GetError())
				}
				x.emit(a.ChannelID, ev)
			}
		})
	}
}
