package channelctl

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// Calls to the replicas' control API: one connection per node, typed calls, checked replies.

// replica returns the control client of a replica node.
func (c *Controller) replica(node uint64) (replicav1.ReplicaControlServiceClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[node]
	if n == nil || n.GetAddress() == "" {
		return nil, fmt.Errorf("replica node %d has no known address", node)
	}
	conn, ok := c.conns[n.GetAddress()]
	if !ok {
		var err error
		if conn, err = c.cfg.Dial(n.GetAddress()); err != nil {
			return nil, err
		}
		c.conns[n.GetAddress()] = conn
	}
	return replicav1.NewReplicaControlServiceClient(conn), nil
}

// callReplica runs one control RPC on a replica node. rpc is the client's method, as in
// callReplica(ctx, c, node, replicav1.ReplicaControlServiceClient.LoadGroups, req).
func callReplica[Req, Resp any](ctx context.Context, c *Controller, node uint64,
	rpc func(replicav1.ReplicaControlServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	cl, err := c.replica(node)
	if err != nil {
		var zero Resp
		return zero, err
	}
	return rpc(cl, ctx, req)
}

// callBatch is callReplica for a batched RPC that carries orders orders: it returns the
// reply's results, one per order in request order, checked by answers.
func callBatch[Req any, Resp interface{ GetResults() []R }, R any](ctx context.Context, c *Controller, node uint64,
	rpc func(replicav1.ReplicaControlServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req, orders int) ([]R, error) {
	resp, err := callReplica(ctx, c, node, rpc, req)
	if err != nil {
		return nil, err
	}
	return answers(node, resp.GetResults(), orders)
}

// answers checks that a batched reply holds one result per order sent, as the replica API
// promises (results in request order): a reply that does not (a bug, another version) fails
// the whole call, whose outcome each channel then treats as unknown, instead of indexing past
// it and stopping the controller.
func answers[T any](node uint64, results []T, orders int) ([]T, error) {
	if len(results) != orders {
		return nil, fmt.Errorf("replica %d answered %d results for %d orders", node, len(results), orders)
	}
	return results, nil
}

// groupErr is the error a replica reported for one group, nil for none.
func groupErr(e *replicav1.GroupError) error {
	if e == nil {
		return nil
	}
	return status.Error(codes.Code(e.GetCode()), e.GetMessage())
}
