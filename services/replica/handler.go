package replica

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/multiraft"
)

// Default read bounds.
const (
	defaultReadLimit = 100
	maxReadLimit     = 1000
	defaultReadBytes = 4 << 20
)

// ErrorReasonTooLarge is the google.rpc.ErrorInfo reason of oversize input; the gateway turns
// it into HTTP 413.
const ErrorReasonTooLarge = "TOO_LARGE"

// overloadRetryDelay is the RetryInfo of an overloaded replica's answer: about a raft round
// or two, long enough for the backlog that refused the proposal to drain a little.
const overloadRetryDelay = 50 * time.Millisecond

// noSpaceRetryDelay is the RetryInfo of an append refused for lack of disk space: the next
// measure of the free space comes within spaceCheckEvery.
const noSpaceRetryDelay = spaceCheckEvery

// handler adapts the engine to the replica's gRPC services.
type handler struct {
	replicav1.UnimplementedReplicaServiceServer
	replicav1.UnimplementedReplicaControlServiceServer
	e *Engine
}

// toStatus maps engine and host errors to gRPC status codes callers can act on.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var nl *NotLeader
	switch {
	case errors.As(err, &nl):
		st, _ := status.New(codes.FailedPrecondition, err.Error()).WithDetails(&replicav1.NotLeader{
			ChannelId: nl.ChannelID, LeaderNodeId: nl.LeaderID, LeaderAddress: nl.Address, Term: nl.Term})
		return st.Err()
	case errors.Is(err, ErrTooLarge):
		st, _ := status.New(codes.InvalidArgument, err.Error()).WithDetails(&errdetails.ErrorInfo{
			Reason: ErrorReasonTooLarge, Domain: "triarch.io"})
		return st.Err()
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, multiraft.ErrGroupFailed):
		// The channel's log is corrupt here: not retryable on this replica, and never a
		// position the control tier may elect from.
		return status.Error(codes.DataLoss, err.Error())
	case errors.Is(err, ErrUnknownChannel), errors.Is(err, multiraft.ErrGroupNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, multiraft.ErrOverloaded):
		// Busy, not gone: the leader is fine and says when to come back. The gateway passes
		// this on rather than retrying it (a retry storm on an overloaded node) or taking it
		// for a lost leader (an election would only move the load).
		st, _ := status.New(codes.ResourceExhausted, err.Error()).WithDetails(&errdetails.RetryInfo{
			RetryDelay: durationpb.New(overloadRetryDelay)})
		return st.Err()
	case errors.Is(err, ErrNoSpace):
		// Not overload but the same answer to the caller: this leader takes no appends for
		// now, nothing is wrong with its leadership, and retrying later may succeed.
		st, _ := status.New(codes.ResourceExhausted, err.Error()).WithDetails(&errdetails.RetryInfo{
			RetryDelay: durationpb.New(noSpaceRetryDelay)})
		return st.Err()
	case errors.Is(err, ErrLeaseLost), errors.Is(err, ErrTermNotApplied), errors.Is(err, ErrReadUnconfirmed), errors.Is(err, raft.ErrProposalDropped),
		errors.Is(err, multiraft.ErrLeadershipLost), errors.Is(err, multiraft.ErrProposalLost), errors.Is(err, multiraft.ErrStopped):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, multiraft.ErrNotQuiescent), errors.Is(err, multiraft.ErrCampaignIgnored), errors.Is(err, ErrStaleOrder),
		errors.Is(err, ErrStoreReplaced), errors.Is(err, ErrCopyReset):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// dataStatus is toStatus for the data plane: a channel failed here is Unavailable, so that the
// gateway retries and re-resolves the leader, which makes the control tier check this
// replica's leadership and elect another replica.
func dataStatus(err error) error {
	if errors.Is(err, multiraft.ErrGroupFailed) {
		return status.Error(codes.Unavailable, err.Error())
	}
	return toStatus(err)
}

func groupError(err error) *replicav1.GroupError {
	if err == nil {
		return nil
	}
	st := status.Convert(toStatus(err))
	return &replicav1.GroupError{Code: int32(st.Code()), Message: st.Message()}
}

func (h *handler) Append(ctx context.Context, req *replicav1.AppendRequest) (*replicav1.AppendResponse, error) {
	rs, err := h.e.AppendWithNonce(ctx, req.GetChannelId(), req.GetNonce(), req.GetMessages())
	if err != nil {
		return nil, dataStatus(err)
	}
	out := &replicav1.AppendResponse{Results: make([]*replicav1.AppendResult, len(rs))}
	for i, r := range rs {
		out.Results[i] = &replicav1.AppendResult{Seq: r.Seq, Duplicate: r.Duplicate}
	}
	return out, nil
}

func readLimit(n uint32) int {
	switch {
	case n == 0:
		return defaultReadLimit
	case n > maxReadLimit:
		return maxReadLimit
	}
	return int(n)
}

func (h *handler) Read(ctx context.Context, req *replicav1.ReadRequest) (*replicav1.ReadResponse, error) {
	maxBytes := int(req.GetMaxBytes())
	if maxBytes <= 0 || maxBytes > defaultReadBytes {
		maxBytes = defaultReadBytes
	}
	msgs, last, err := h.e.Read(ctx, req.GetChannelId(), req.GetFromSeq(), readLimit(req.GetLimit()), maxBytes)
	if err != nil {
		return nil, dataStatus(err)
	}
	return &replicav1.ReadResponse{Messages: msgs, LastSeq: last}, nil
}

func (h *handler) Subscribe(req *replicav1.SubscribeRequest, stream grpc.ServerStreamingServer[replicav1.SubscribeResponse]) error {
	err := h.e.Subscribe(stream.Context(), req.GetChannelId(), req.GetFromSeq(), func(msgs []*triarchv1.Message) error {
		return stream.Send(&replicav1.SubscribeResponse{Messages: msgs})
	})
	return dataStatus(err)
}

func (h *handler) LoadGroups(ctx context.Context, req *replicav1.LoadGroupsRequest) (*replicav1.LoadGroupsResponse, error) {
	errs := h.e.Load(ctx, req.GetGroups())
	out := &replicav1.LoadGroupsResponse{Results: make([]*replicav1.LoadGroupsResult, len(errs))}
	for i, err := range errs {
		r := &replicav1.LoadGroupsResult{ChannelId: req.GetGroups()[i].GetChannelId(), Error: groupError(err)}
		if err == nil {
			r.Status, err = h.e.GroupStatus(ctx, r.GetChannelId())
			r.Error = groupError(err)
		}
		out.Results[i] = r
	}
	return out, nil
}

func (h *handler) UnloadGroups(ctx context.Context, req *replicav1.UnloadGroupsRequest) (*replicav1.UnloadGroupsResponse, error) {
	out := &replicav1.UnloadGroupsResponse{Results: make([]*replicav1.UnloadGroupsResult, len(req.GetChannelIds()))}
	for i, id := range req.GetChannelIds() {
		var epoch uint64
		if i < len(req.GetEpochs()) {
			epoch = req.GetEpochs()[i]
		}
		err := h.e.Fence(id, epoch)
		if err == nil {
			err = h.e.Unload(ctx, id)
		}
		out.Results[i] = &replicav1.UnloadGroupsResult{ChannelId: id, Error: groupError(err)}
	}
	return out, nil
}

// campaignWait bounds how long Campaign waits for elections to complete; the usual election
// is one round trip to the peers, a slow or lossy link takes a few.
const campaignWait = 2 * time.Second

func (h *handler) Campaign(ctx context.Context, req *replicav1.CampaignRequest) (*replicav1.CampaignResponse, error) {
	out := &replicav1.CampaignResponse{Results: make([]*replicav1.CampaignResult, len(req.GetOrders()))}
	// An order under an older epoch than one seen here comes from a channelctl whose view is
	// stale (or a late retry): campaigning on it could depose the leader recorded since.
	var ids []string
	var at []int
	for i, o := range req.GetOrders() {
		if err := h.e.Fence(o.GetChannelId(), o.GetEpoch()); err != nil {
			out.Results[i] = &replicav1.CampaignResult{ChannelId: o.GetChannelId(), Error: groupError(err)}
			continue
		}
		ids = append(ids, o.GetChannelId())
		at = append(at, i)
	}
	wait := campaignWait
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(d)/2)
	}
	for k, o := range h.e.CampaignAndWait(ctx, ids, wait) {
		out.Results[at[k]] = &replicav1.CampaignResult{ChannelId: ids[k], Status: o.Status, Error: groupError(o.Err),
			Leader: o.Err == nil && o.Status.GetRole() == replicav1.Role_ROLE_LEADER}
	}
	return out, nil
}

func (h *handler) TransferLeader(ctx context.Context, req *replicav1.TransferLeaderRequest) (*replicav1.TransferLeaderResponse, error) {
	out := &replicav1.TransferLeaderResponse{Results: make([]*replicav1.TransferLeaderResult, len(req.GetTransfers()))}
	// Each transfer waits for its target to lead; one slow target must not hold up the rest.
	inParallel(len(req.GetTransfers()), func(i int) {
		t := req.GetTransfers()[i]
		err := h.e.Fence(t.GetChannelId(), t.GetEpoch())
		if err == nil {
			err = h.e.TransferLeaderAndWait(ctx, t.GetChannelId(), t.GetTargetNodeId(), campaignWait)
		}
		out.Results[i] = &replicav1.TransferLeaderResult{ChannelId: t.GetChannelId(), Error: groupError(err)}
	})
	return out, nil
}

func (h *handler) GetGroupStatus(ctx context.Context, req *replicav1.GetGroupStatusRequest) (*replicav1.GetGroupStatusResponse, error) {
	ids := req.GetChannelIds()
	switch {
	case len(ids) > 0:
	case req.GetFailed():
		var err error
		if ids, err = h.e.FailedChannels(); err != nil {
			return nil, toStatus(err)
		}
	case req.GetAll():
		ids = h.e.Loaded()
	}
	out := &replicav1.GetGroupStatusResponse{Results: make([]*replicav1.GetGroupStatusResult, len(ids))}
	sts, errs := h.e.GroupStatuses(ctx, ids)
	for i, id := range ids {
		out.Results[i] = &replicav1.GetGroupStatusResult{ChannelId: id, Status: sts[i], Error: groupError(errs[i])}
	}
	return out, nil
}

// parallelGroups bounds how many groups of one batched call wait at once (for a new replica
// to catch up, for a transfer to complete): one by one, a call would take as long as the sum.
const parallelGroups = 64

// inParallel runs f(0..n-1), at most parallelGroups at a time.
func inParallel(n int, f func(i int)) {
	sem := make(chan struct{}, parallelGroups)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}

func (h *handler) ChangeReplicas(ctx context.Context, req *replicav1.ChangeReplicasRequest) (*replicav1.ChangeReplicasResponse, error) {
	out := &replicav1.ChangeReplicasResponse{Results: make([]*replicav1.ChangeReplicasResult, len(req.GetChanges()))}
	inParallel(len(req.GetChanges()), func(i int) {
		c := req.GetChanges()[i]
		st, err := h.e.ChangeReplicas(ctx, c)
		out.Results[i] = &replicav1.ChangeReplicasResult{ChannelId: c.GetChannelId(), Status: st, Error: groupError(err)}
	})
	return out, nil
}
