package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// The failover issue, item 1: a leader that holds calls without answering (paused, or
// black-holed) costs its callers AttemptTimeout each, long after the arbiter declared it dead.
// NodeDead ends the attempts in flight to it at once; they re-resolve, with the dead node
// named stale and without a backoff pause, and reach the new leader. AttemptTimeout and the
// call's budget are an hour here, so the call returning at all shows the cut, not a timer.
func TestNodeDeadCutsCallsInFlightToIt(t *testing.T) {
	c := newFakeCluster()
	c.setLeader("a", 1)
	c.hold, c.held = map[string]bool{replicaAddr(1): true}, make(chan string, 1)
	c.resolveFn = func(_ string, req *channelctlv1.ResolveChannelRequest) (*channelctlv1.ResolveChannelResponse, error) {
		if req.GetStaleLeaderNodeId() == 1 {
			c.setLeader("a", 2) // the channel control tier elected another leader
		}
		return c.defaultResolve(req)
	}
	r := c.router(t, RouterConfig{AttemptTimeout: time.Hour, DefaultTimeout: time.Hour,
		MinBackoff: time.Hour, MaxBackoff: time.Hour})
	done := make(chan error, 1)
	go func() {
		_, err := r.Append(context.Background(), "a", one)
		done <- err
	}()
	<-c.held
	require.NotNil(t, r.cached("a"), "the route to node 1 is cached")
	r.NodeDead(1)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the call to the dead node was not cut short")
	}
	require.Equal(t, 1, c.appendCount(replicaAddr(2)))
	require.Equal(t, uint64(1), c.resolves[len(c.resolves)-1].GetStaleLeaderNodeId(), "re-resolved naming the dead node")
	require.Equal(t, uint64(2), r.cached("a").leader)

	// A node declared dead with nothing in flight: its routes go, so the next call resolves.
	r.NodeDead(2)
	require.Nil(t, r.cached("a"))
}

// What a cut attempt fails with is Unavailable to a gRPC client and a dead node to the loops.
func TestDeadNodeErrorIsUnavailable(t *testing.T) {
	err := deadNodeError(3)
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.ErrorIs(t, err, errNodeDead)
	v, _ := classifyReplica(err, &route{leader: 3})
	require.Equal(t, verdictResolve, v)
}

// The failover issue, item 4: an overloaded leader's ResourceExhausted goes back to the caller
// with its retry delay, after one attempt: the gateway neither retries it (multiplying the load)
// nor re-resolves naming the leader stale (which would have it checked, and maybe replaced).
func TestOverloadedLeaderIsNotRetriedNorReResolved(t *testing.T) {
	c := newFakeCluster()
	c.setLeader("a", 1)
	c.appendFn = func(string, *replicav1.AppendRequest) (*replicav1.AppendResponse, error) {
		st, _ := status.New(codes.ResourceExhausted, "overloaded").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(50 * time.Millisecond)})
		return nil, st.Err()
	}
	r := c.router(t, RouterConfig{})
	_, err := r.Append(context.Background(), "a", one)
	st := status.Convert(err)
	require.Equal(t, codes.ResourceExhausted, st.Code(), "%v", err)
	require.NotEmpty(t, st.Details(), "the retry delay reaches the caller")
	require.Equal(t, 1, c.appendCount(replicaAddr(1)))
	require.Equal(t, 1, c.resolveCount())
	require.NotNil(t, r.cached("a"), "the route to the busy leader stays")
}
