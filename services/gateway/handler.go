package gateway

import (
	"context"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/arbiterclient"
	"github.com/triarch-io/triarch/pkg/auth"
)

// handler adapts the public API to the Router: it validates requests, fills defaults and
// converts between the public and the internal messages. Routing and retries are the Router's.
type handler struct {
	triarchv1.UnimplementedTriarchServiceServer
	r                  *Router
	defaultReplication uint32
	// noImplicitCreate: a send does not create its channel (--create-channels=false).
	noImplicitCreate bool
	// arbiter serves the channel index and the cluster's state; nil without --arbiters.
	arbiter *arbiterclient.Client
	// auth checks callers' credentials (authz.go); nil serves everyone.
	auth *auth.Authenticator
	// quotas bound each caller's calls (quota.go).
	quotas *quotas
}

func (h *handler) CreateChannel(ctx context.Context, req *triarchv1.CreateChannelRequest) (*triarchv1.CreateChannelResponse, error) {
	if err := h.authorize(ctx, auth.Create, req.GetChannelId()); err != nil {
		return nil, err
	}
	if err := ValidChannelID(req.GetChannelId()); err != nil {
		return nil, err
	}
	rf := req.GetReplicationFactor()
	if rf == 0 {
		rf = h.defaultReplication
	}
	if rf > MaxReplication {
		return nil, invalid("replication_factor %d: at most %d", rf, MaxReplication)
	}
	resp, err := h.r.Resolve(ctx, req.GetChannelId(), true, rf)
	if err != nil {
		return nil, err
	}
	ch := &triarchv1.Channel{
		ChannelId:    resp.GetChannelId(),
		LeaderNodeId: resp.GetLeaderNodeId(),
		LeaderTerm:   resp.GetLeaderTerm(),
		Epoch:        resp.GetEpoch(),
		State:        triarchv1.ChannelState_CHANNEL_STATE_ACTIVE,
	}
	for _, r := range resp.GetReplicas() {
		ch.ReplicaNodeIds = append(ch.ReplicaNodeIds, r.GetNodeId())
	}
	return &triarchv1.CreateChannelResponse{Channel: ch, Created: resp.GetCreated()}, nil
}

func (h *handler) GetChannel(ctx context.Context, req *triarchv1.GetChannelRequest) (*triarchv1.GetChannelResponse, error) {
	if err := h.authorize(ctx, auth.Read, req.GetChannelId()); err != nil {
		return nil, err
	}
	if err := ValidChannelID(req.GetChannelId()); err != nil {
		return nil, err
	}
	resp, err := h.r.ChannelState(ctx, req.GetChannelId())
	if err != nil {
		return nil, err
	}
	return &triarchv1.GetChannelResponse{Channel: publicChannel(resp.GetChannel())}, nil
}

// publicChannel converts the arbiter's record of a channel to the public one.
func publicChannel(c *arbiterv1.Channel) *triarchv1.Channel {
	return &triarchv1.Channel{
		ChannelId:      c.GetChannelId(),
		ReplicaNodeIds: c.GetReplicaNodeIds(),
		LeaderNodeId:   c.GetLeaderNodeId(),
		LeaderTerm:     c.GetLeaderTerm(),
		Epoch:          c.GetEpoch(),
		State:          publicState(c.GetState()),
		LastSeq:        c.GetLastSeq(),
		CreateTime:     c.GetCreateTime(),
	}
}

func publicState(s arbiterv1.ChannelState) triarchv1.ChannelState {
	switch s {
	case arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED:
		return triarchv1.ChannelState_CHANNEL_STATE_HIBERNATED
	case arbiterv1.ChannelState_CHANNEL_STATE_ACTIVATING:
		return triarchv1.ChannelState_CHANNEL_STATE_ACTIVATING
	case arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE:
		return triarchv1.ChannelState_CHANNEL_STATE_ACTIVE
	case arbiterv1.ChannelState_CHANNEL_STATE_ELECTING:
		return triarchv1.ChannelState_CHANNEL_STATE_ELECTING
	case arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATING:
		return triarchv1.ChannelState_CHANNEL_STATE_HIBERNATING
	}
	return triarchv1.ChannelState_CHANNEL_STATE_UNSPECIFIED
}

// ListChannels pages through the arbiter's channel index (channelctls only know their slots).
func (h *handler) ListChannels(ctx context.Context, req *triarchv1.ListChannelsRequest) (*triarchv1.ListChannelsResponse, error) {
	if err := h.authorize(ctx, auth.Admin, allChannels); err != nil {
		return nil, err
	}
	if h.arbiter == nil {
		return nil, status.Error(codes.Unavailable, "no arbiter configured (--arbiters): the channel index lives there")
	}
	size := req.GetPageSize()
	if size == 0 {
		size = 100
	}
	if size > 1000 {
		return nil, status.Errorf(codes.InvalidArgument, "page_size %d: at most 1000", size)
	}
	resp, err := h.arbiter.ListChannels(ctx, &arbiterv1.ListChannelsRequest{PageSize: size, PageToken: req.GetPageToken()})
	if err != nil {
		return nil, err
	}
	out := &triarchv1.ListChannelsResponse{NextPageToken: resp.GetNextPageToken()}
	for _, ch := range resp.GetChannels() {
		out.Channels = append(out.Channels, publicChannel(ch))
	}
	return out, nil
}

// GetCluster reports the arbiter's members, its node table and channel counts.
func (h *handler) GetCluster(ctx context.Context, _ *triarchv1.GetClusterRequest) (*triarchv1.GetClusterResponse, error) {
	if err := h.authorize(ctx, auth.Admin, allChannels); err != nil {
		return nil, err
	}
	if h.arbiter == nil {
		return nil, status.Error(codes.Unavailable, "no arbiter configured (--arbiters): the cluster's state lives there")
	}
	st, err := h.arbiter.GetClusterStatus(ctx, &arbiterv1.GetClusterStatusRequest{})
	if err != nil {
		return nil, err
	}
	out := &triarchv1.GetClusterResponse{ArbiterLeaderId: st.GetLeaderId(), ArbiterTerm: st.GetTerm(), Channels: st.GetChannels(),
		ActiveChannels:     st.GetChannelsByState()[arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE.String()],
		HibernatedChannels: st.GetChannelsByState()[arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED.String()]}
	for _, m := range st.GetMembers() {
		out.Arbiters = append(out.Arbiters, &triarchv1.ArbiterMember{Id: m.GetId(), Address: m.GetAddress(), Leader: m.GetLeader()})
	}
	for _, n := range st.GetNodes() {
		out.Nodes = append(out.Nodes, &triarchv1.NodeSummary{NodeId: n.GetNodeId(), Address: n.GetAddress(), Zone: n.GetZone(),
			Role:     strings.ToLower(strings.TrimPrefix(n.GetRole().String(), "NODE_ROLE_")),
			State:    strings.ToLower(strings.TrimPrefix(n.GetState().String(), "NODE_STATE_")),
			Channels: n.GetLoad().GetChannels(), Leaders: n.GetLoad().GetLeaders()})
	}
	return out, nil
}

func (h *handler) SendMessages(ctx context.Context, req *triarchv1.SendMessagesRequest) (*triarchv1.SendMessagesResponse, error) {
	if err := h.authorize(ctx, auth.Send, req.GetChannelId()); err != nil {
		return nil, err
	}
	if err := ValidChannelID(req.GetChannelId()); err != nil {
		return nil, err
	}
	generated, err := prepareBatch(req.GetMessages())
	if err != nil {
		return nil, err
	}
	if out, ok := plantedLostAck(req); ok {
		return out, nil
	}
	rs, err := h.r.Append(ctx, req.GetChannelId(), req.GetMessages())
	if err != nil {
		return nil, h.sendError(req.GetChannelId(), err)
	}
	out := &triarchv1.SendMessagesResponse{Results: make([]*triarchv1.SendResult, len(rs))}
	for i, r := range rs {
		out.Results[i] = &triarchv1.SendResult{
			Seq:                  r.GetSeq(),
			Duplicate:            r.GetDuplicate(),
			ClientMsgId:          req.GetMessages()[i].GetClientMsgId(),
			ClientMsgIdGenerated: generated[i],
		}
	}
	return out, nil
}

// sendError explains a send's NotFound when this gateway does not create channels on send.
func (h *handler) sendError(channel string, err error) error {
	if !h.noImplicitCreate || status.Code(err) != codes.NotFound {
		return err
	}
	return status.Errorf(codes.NotFound, "channel %s does not exist, and this gateway does not create channels on send "+
		"(--create-channels=false): create it first with CreateChannel (POST /v1/channels)", channel)
}

func (h *handler) ReadMessages(ctx context.Context, req *triarchv1.ReadMessagesRequest) (*triarchv1.ReadMessagesResponse, error) {
	if err := h.authorize(ctx, auth.Read, req.GetChannelId()); err != nil {
		return nil, err
	}
	if err := ValidChannelID(req.GetChannelId()); err != nil {
		return nil, err
	}
	from := max(req.GetFromSeq(), 1)
	limit := req.GetLimit()
	switch {
	case limit == 0:
		limit = DefaultReadLimit
	case limit > MaxReadLimit:
		limit = MaxReadLimit
	}
	resp, err := h.r.Read(ctx, req.GetChannelId(), from, limit)
	if err != nil {
		return nil, err
	}
	next := from
	if msgs := resp.GetMessages(); len(msgs) > 0 {
		next = msgs[len(msgs)-1].GetSeq() + 1
	}
	out := &triarchv1.ReadMessagesResponse{Messages: resp.GetMessages(), NextSeq: next, LastSeq: resp.GetLastSeq()}
	plantedStaleRead(out)
	return out, nil
}

// streamOpenHeader is the gRPC header a subscription sends once the channel is found; REST
// then starts its 200 response (see startStream).
const streamOpenHeader = "x-triarch-stream-open"

func (h *handler) SubscribeMessages(req *triarchv1.SubscribeMessagesRequest, stream grpc.ServerStreamingServer[triarchv1.SubscribeMessagesResponse]) error {
	release, err := h.admit(stream.Context(), auth.Subscribe, req.GetChannelId())
	defer release()
	if err != nil {
		return err
	}
	if err := ValidChannelID(req.GetChannelId()); err != nil {
		return err
	}
	var once sync.Once
	return h.r.Subscribe(stream.Context(), req.GetChannelId(), req.GetFromSeq(), Subscription{
		// Headers go out as soon as the channel is known to exist, so that a REST client sees
		// its 200 and the stream begin without waiting for the first message.
		Opened: func() { once.Do(func() { _ = stream.SendHeader(metadata.Pairs(streamOpenHeader, "1")) }) },
		Deliver: func(msgs []*triarchv1.Message) error {
			return stream.Send(&triarchv1.SubscribeMessagesResponse{Messages: msgs})
		},
	})
}
