package arbiter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/services/arbiter/fsm"
	"github.com/triarch-io/triarch/services/arbiter/liveness"
)

// handler adapts the arbiter to gRPC. Writes and heartbeats need the leader (leases live in
// the leader's memory); reads are served from this member's FSM, which may lag the leader by
// the entries not yet applied here.
type handler struct {
	arbiterv1.UnimplementedArbiterServiceServer
	s *Service
}

// toStatus maps arbiter errors to gRPC codes; NotLeader carries the leader's address so the
// shared client (pkg/arbiterclient) goes straight there.
func (h *handler) toStatus(err error) error {
	if err == nil {
		return nil
	}
	var nl *NotLeaderError
	switch {
	case errors.As(err, &nl):
		st, _ := status.New(codes.Unavailable, err.Error()).WithDetails(&arbiterv1.NotLeader{
			LeaderId: nl.LeaderID, LeaderAddress: h.s.cfg.Peers[nl.LeaderID]})
		return st.Err()
	case errors.Is(err, fsm.ErrInvalidArgument), errors.Is(err, fsm.ErrInvalidChannelID), errors.Is(err, fsm.ErrInvalidCommand),
		errors.Is(err, fsm.ErrInvalidChange):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, fsm.ErrUnknownNode), errors.Is(err, fsm.ErrUnknownChannel):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, fsm.ErrAddressConflict), errors.Is(err, fsm.ErrRoleConflict):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, fsm.ErrChannelLimit):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, fsm.ErrInsufficientReplicas):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, fsm.ErrCompacted):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.As(err, new(*ErrLeaseLapsed)):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unavailable, err.Error())
}

// leading returns NotLeaderError unless this member leads.
func (h *handler) leading(ctx context.Context) error {
	leader, _, err := h.s.repl.leader(ctx)
	if err != nil {
		return err
	}
	if leader != h.s.cfg.NodeID {
		return &NotLeaderError{LeaderID: leader}
	}
	return nil
}

// serving refuses reads while this member is not a voter of the metadata group off
// probation: its state machine may then be empty (a new store still catching up) and would
// answer that a channel does not exist. Unavailable sends clients to another member.
func (h *handler) serving() error {
	if h.s.admitted.Load() {
		return nil
	}
	return status.Errorf(codes.Unavailable, "arbiter member %d has not joined the metadata group yet (new or rejoining store); ask another member",
		h.s.cfg.NodeID)
}

// notLeaderDetail returns the NotLeader detail of a refusal, nil when it has none.
func notLeaderDetail(err error) *arbiterv1.NotLeader {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if nl, ok := d.(*arbiterv1.NotLeader); ok {
			return nl
		}
	}
	return nil
}

func (h *handler) nodeProto(n fsm.Node) *arbiterv1.Node {
	p := n.Proto()
	if exp, ok := h.s.tracker.Lease(n.ID); ok {
		p.LeaseExpireTime = timestamppb.New(exp)
	}
	return p
}

func (h *handler) RegisterNode(ctx context.Context, req *arbiterv1.RegisterNodeRequest) (*arbiterv1.RegisterNodeResponse, error) {
	now := h.s.now()
	if err := h.replaceLapsed(ctx, req, now); err != nil {
		return nil, h.toStatus(err)
	}
	res, err := h.s.repl.propose(ctx, fsm.RegisterNodeWithStoreCommand(req.GetNodeId(), req.GetRole(), req.GetAddress(), req.GetZone(), req.GetStoreId(), now))
	if err != nil {
		return nil, h.toStatus(err)
	}
	r := res.(fsm.RegisterNodeResult)
	interval := h.s.tracker.Register(r.Node.ID, now)
	return &arbiterv1.RegisterNodeResponse{
		Node:              h.nodeProto(r.Node),
		LeaseTtl:          durationpb.New(h.s.cfg.Liveness.LeaseTTL),
		HeartbeatInterval: durationpb.New(interval),
		Revision:          r.Revision,
	}, nil
}

// replaceLapsed lets a node come back from a new address (a restart that got another port or
// IP) once the old registration's lease has lapsed by more than the drift margin: by then the
// old process has stopped serving (see the timing rule in package liveness), so the leader
// first records the old registration dead, which also fails its channels over. While the old
// lease is current, a second process claiming the same id is refused (AlreadyExists).
func (h *handler) replaceLapsed(ctx context.Context, req *arbiterv1.RegisterNodeRequest, now time.Time) error {
	n, ok := h.s.fsm.Node(req.GetNodeId())
	if !ok || n.Address == req.GetAddress() || n.Liveness == arbiterv1.NodeState_NODE_STATE_DEAD {
		return nil
	}
	if err := h.leading(ctx); err != nil {
		return err
	}
	exp, ok := h.s.tracker.Lease(n.ID)
	if ok {
		if until := exp.Add(h.s.cfg.Liveness.DriftMargin); now.Before(until) {
			return status.Errorf(codes.AlreadyExists, "node %d is registered at %s and its lease is current; "+
				"a new address is accepted once that lease has lapsed, in %v", n.ID, n.Address, until.Sub(now).Round(time.Millisecond))
		}
	}
	_, err := h.s.repl.propose(ctx, fsm.SetNodeStateCommand(n.ID, arbiterv1.NodeState_NODE_STATE_DEAD,
		fmt.Sprintf("registering again from %s after the lease of %s lapsed", req.GetAddress(), n.Address), now))
	return err
}

func (h *handler) Heartbeat(ctx context.Context, req *arbiterv1.HeartbeatRequest) (*arbiterv1.HeartbeatResponse, error) {
	if err := h.leading(ctx); err != nil {
		return nil, h.toStatus(err)
	}
	// A renewal is a promise that nobody else declares the node dead for a TTL: only a leader
	// that can still prove it leads may make it (leaderlease.go).
	if err := h.s.checkLeaderLease(h.s.now()); err != nil {
		return nil, h.toStatus(err)
	}
	n, ok := h.s.fsm.Node(req.GetNodeId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "node %d is not registered; register first", req.GetNodeId())
	}
	if req.GetIncarnation() != 0 && req.GetIncarnation() != n.Incarnation {
		// A heartbeat of an older incarnation (a process that was replaced) renews nothing.
		return nil, status.Errorf(codes.FailedPrecondition, "node %d is at incarnation %d, heartbeat is for %d; register again",
			n.ID, n.Incarnation, req.GetIncarnation())
	}
	hb := liveness.Heartbeat{Node: n.ID, Now: h.s.now(), RTT: req.GetLastRtt().AsDuration()}
	for _, p := range req.GetPeers() {
		hb.Peers = append(hb.Peers, liveness.PeerReport{Node: p.GetNodeId(), Reachable: p.GetReachable(), Age: p.GetLastContactAge().AsDuration()})
	}
	interval := h.s.tracker.Heartbeat(hb)
	return &arbiterv1.HeartbeatResponse{
		LeaseTtl:          durationpb.New(h.s.cfg.Liveness.LeaseTTL),
		HeartbeatInterval: durationpb.New(interval),
		State:             n.State,
		Revision:          h.s.fsm.Revision(),
	}, nil
}

func (h *handler) DrainNode(ctx context.Context, req *arbiterv1.DrainNodeRequest) (*arbiterv1.DrainNodeResponse, error) {
	res, err := h.s.repl.propose(ctx, fsm.SetNodeStateCommand(req.GetNodeId(), arbiterv1.NodeState_NODE_STATE_DRAINING, "drain requested", h.s.now()))
	if err != nil {
		return nil, h.toStatus(err)
	}
	return &arbiterv1.DrainNodeResponse{Node: h.nodeProto(res.(fsm.SetNodeStateResult).Node)}, nil
}

func (h *handler) CreateChannel(ctx context.Context, req *arbiterv1.CreateChannelRequest) (*arbiterv1.CreateChannelResponse, error) {
	if !fsm.ValidChannelID(req.GetChannelId()) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid channel id %q: want [A-Za-z0-9_.:@-]{1,128}", req.GetChannelId())
	}
	res, err := h.s.repl.propose(ctx, fsm.CreateChannelCommandCapped(req.GetChannelId(), req.GetReplicationFactor(), h.s.now(),
		h.s.cfg.MaxChannels))
	if err != nil {
		return nil, h.toStatus(err)
	}
	r := res.(fsm.CreateChannelResult)
	return &arbiterv1.CreateChannelResponse{Channel: r.Channel.Proto(), Created: r.Created}, nil
}

func (h *handler) GetChannel(_ context.Context, req *arbiterv1.GetChannelRequest) (*arbiterv1.GetChannelResponse, error) {
	if err := h.serving(); err != nil {
		return nil, err
	}
	c, ok := h.s.fsm.Channel(req.GetChannelId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "channel %q does not exist", req.GetChannelId())
	}
	return &arbiterv1.GetChannelResponse{Channel: c.Proto()}, nil
}

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

func (h *handler) ListChannels(_ context.Context, req *arbiterv1.ListChannelsRequest) (*arbiterv1.ListChannelsResponse, error) {
	if err := h.serving(); err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = defaultPageSize
	}
	size = min(size, maxPageSize)
	page, err := h.s.fsm.ListChannels(req.GetPageToken(), size, req.GetSlots())
	if err != nil {
		return nil, h.toStatus(err)
	}
	out := &arbiterv1.ListChannelsResponse{Revision: page.Revision}
	for _, c := range page.Channels {
		out.Channels = append(out.Channels, c.Proto())
	}
	if page.More && len(page.Channels) > 0 {
		// The page token is the last channel id: ids sort, so listing resumes after it.
		out.NextPageToken = page.Channels[len(page.Channels)-1].ID
	}
	return out, nil
}

func (h *handler) CompareAndSetChannels(ctx context.Context, req *arbiterv1.CompareAndSetChannelsRequest) (*arbiterv1.CompareAndSetChannelsResponse, error) {
	res, err := h.s.repl.propose(ctx, fsm.CompareAndSetChannelsCommand(req.GetNodeId(), req.GetChanges()...))
	if err != nil {
		return nil, h.toStatus(err)
	}
	r := res.(fsm.CompareAndSetResult)
	out := &arbiterv1.CompareAndSetChannelsResponse{Revision: r.Revision}
	for _, c := range r.Results {
		out.Results = append(out.Results, c.Proto())
	}
	return out, nil
}

func (h *handler) ListSlots(context.Context, *arbiterv1.ListSlotsRequest) (*arbiterv1.ListSlotsResponse, error) {
	if err := h.serving(); err != nil {
		return nil, err
	}
	out := &arbiterv1.ListSlotsResponse{Revision: h.s.fsm.Revision()}
	for _, s := range h.s.fsm.Slots() {
		out.Slots = append(out.Slots, s.Proto())
	}
	return out, nil
}

// Watch streams the FSM's events after from_revision, waking on every applied batch.
func (h *handler) Watch(req *arbiterv1.WatchRequest, stream grpc.ServerStreamingServer[arbiterv1.WatchResponse]) error {
	filter := fsm.Filter{Channels: req.GetIncludeChannels(), Nodes: req.GetIncludeNodes(), Slots: req.GetIncludeSlots(),
		ChannelSlots: req.GetSlots(), Limit: 1000}
	from := req.GetFromRevision()
	if err := h.serving(); err != nil {
		return err
	}
	for {
		changed := h.s.repl.changed()
		batch, err := h.s.fsm.EventsSince(from, filter)
		if err != nil {
			return h.toStatus(err)
		}
		if batch.Revision > from {
			resp := &arbiterv1.WatchResponse{Revision: batch.Revision}
			for _, e := range batch.Events {
				resp.Events = append(resp.Events, e.Proto())
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
			from = batch.Revision
			continue
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-h.s.stopping:
			return status.Error(codes.Unavailable, "arbiter member stopping")
		case <-changed:
		}
	}
}

func (h *handler) GetClusterStatus(ctx context.Context, _ *arbiterv1.GetClusterStatusRequest) (*arbiterv1.GetClusterStatusResponse, error) {
	if err := h.serving(); err != nil {
		return nil, err
	}
	leader, st, err := h.s.repl.leader(ctx)
	if err != nil {
		return nil, h.toStatus(err)
	}
	out := &arbiterv1.GetClusterStatusResponse{LeaderId: leader, Term: st.Term, CommitIndex: st.Commit, Revision: h.s.fsm.Revision()}
	ids := make([]uint64, 0, len(h.s.cfg.Peers))
	for id := range h.s.cfg.Peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		m := &arbiterv1.Member{Id: id, Address: h.s.cfg.Peers[id], Leader: id == leader}
		if p, ok := st.Progress[id]; ok {
			m.MatchIndex = p.Match
		}
		out.Members = append(out.Members, m)
	}
	for _, n := range h.s.fsm.Nodes() {
		out.Nodes = append(out.Nodes, h.nodeProto(n))
	}
	counts := h.s.fsm.Counts()
	out.Channels = counts.Channels
	out.ChannelsByState = make(map[string]uint64, len(counts.ChannelsByState))
	for s, n := range counts.ChannelsByState {
		out.ChannelsByState[s.String()] = n
	}
	for _, s := range h.s.fsm.Slots() {
		out.Slots = append(out.Slots, s.Proto())
	}
	return out, nil
}

// GetMemberState answers from the running group, or, before it is loaded here, from what the
// store held at start (which nothing changes until the load). See join.go.
func (h *handler) GetMemberState(ctx context.Context, req *arbiterv1.GetMemberStateRequest) (*arbiterv1.GetMemberStateResponse, error) {
	out := &arbiterv1.GetMemberStateResponse{MemberId: h.s.cfg.NodeID, StoreId: h.s.store.StoreID()}
	if !h.s.loaded.Load() {
		v := h.s.view
		out.Term, out.LastIndex, out.CommitIndex = v.term, v.last, v.commit
		// A member that decided to rejoin saw that the cluster exists: it says so.
		out.OnProbation = h.s.rejoining.Load()
		return out, nil
	}
	st, err := h.s.host.Status(ctx, metaGroup)
	if err != nil {
		return nil, h.toStatus(err)
	}
	out.Loaded, out.OnProbation = true, st.OnProbation || h.s.rejoining.Load()
	out.Term, out.LastIndex, out.CommitIndex, out.LeaderId = st.Term, st.LastIndex, st.Commit, st.Leader
	return out, nil
}

// RejoinMember gives a member's place to its new store; see rejoin.go.
func (h *handler) RejoinMember(ctx context.Context, req *arbiterv1.RejoinMemberRequest) (*arbiterv1.RejoinMemberResponse, error) {
	member := req.GetMemberId()
	switch _, ok := h.s.cfg.Peers[member]; {
	case req.GetStoreId() == 0:
		return nil, status.Error(codes.InvalidArgument, "rejoin: store id 0: name the member's new store")
	case !ok:
		return nil, status.Errorf(codes.InvalidArgument, "rejoin: %d is not an arbiter member (--peers)", member)
	}
	if err := h.leading(ctx); err != nil {
		return nil, h.toStatus(err)
	}
	if member == h.s.cfg.NodeID {
		return nil, status.Errorf(codes.InvalidArgument, "rejoin: member %d leads the metadata group and cannot leave it", member)
	}
	index, err := h.s.rejoinMember(ctx, member, multiraft.StoreToken(req.GetStoreId()))
	if err != nil {
		h.s.log.Logger.InfoContext(ctx, "rejoin not done yet", "member", member, "store", fmt.Sprintf("%016x", req.GetStoreId()), "err", err)
		return nil, h.toStatus(err)
	}
	return &arbiterv1.RejoinMemberResponse{Index: index}, nil
}
