package channelctl

import (
	"context"
	"slices"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
)

// handler adapts the controller to gRPC.
type handler struct {
	channelctlv1.UnimplementedChannelControlServiceServer
	c *Controller
}

func (h *handler) ResolveChannel(ctx context.Context, req *channelctlv1.ResolveChannelRequest) (*channelctlv1.ResolveChannelResponse, error) {
	res, err := h.c.Resolve(ctx, req.GetChannelId(), req.GetCreateIfMissing(), req.GetReplicationFactor(), req.GetStaleLeaderNodeId())
	if err != nil {
		return nil, err
	}
	ch := res.Channel
	out := &channelctlv1.ResolveChannelResponse{
		ChannelId: ch.GetChannelId(), GroupId: ch.GetGroupId(), LeaderNodeId: ch.GetLeaderNodeId(),
		LeaderAddress: res.LeaderAddress, LeaderTerm: ch.GetLeaderTerm(), Epoch: ch.GetEpoch(),
	}
	ids := slices.Clone(ch.GetReplicaNodeIds())
	slices.Sort(ids)
	for _, id := range ids {
		out.Replicas = append(out.Replicas, &channelctlv1.Replica{NodeId: id, Address: res.Addresses[id]})
	}
	return out, nil
}

func (h *handler) GetChannelState(ctx context.Context, req *channelctlv1.GetChannelStateRequest) (*channelctlv1.GetChannelStateResponse, error) {
	got, err := h.c.cfg.Arbiter.GetChannel(ctx, &arbiterv1.GetChannelRequest{ChannelId: req.GetChannelId()})
	if err != nil {
		return nil, err
	}
	h.c.mu.Lock()
	owner := h.c.slots[got.GetChannel().GetSlot()].GetOwnerNodeId()
	h.c.mu.Unlock()
	return &channelctlv1.GetChannelStateResponse{Channel: got.GetChannel(), OwnerNodeId: owner}, nil
}

func (h *handler) Instruct(ctx context.Context, req *channelctlv1.InstructRequest) (*channelctlv1.InstructResponse, error) {
	res, err := h.c.Instruct(ctx, req.GetInstructions())
	if err != nil {
		return nil, err
	}
	return &channelctlv1.InstructResponse{Results: res}, nil
}
