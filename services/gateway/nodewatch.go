package gateway

import (
	"context"
	"log/slog"
	"time"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/pkg/arbiterclient"
)

// watchRetry is the pause before the node watch starts again after it failed.
const watchRetry = time.Second

// watchNodes tells the router of every replica node the arbiter declares dead (see NodeDead),
// until ctx ends: the state now, then each change. A watch that breaks, or starts from a
// revision the arbiter no longer keeps, starts again from the state then.
func watchNodes(ctx context.Context, arb *arbiterclient.Client, r *Router, log *slog.Logger) {
	for ctx.Err() == nil {
		err := watchNodesOnce(ctx, arb, r)
		if ctx.Err() != nil {
			return
		}
		log.Debug("node watch ended; starting again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(watchRetry):
		}
	}
}

func watchNodesOnce(ctx context.Context, arb *arbiterclient.Client, r *Router) error {
	st, err := arb.GetClusterStatus(ctx, &arbiterv1.GetClusterStatusRequest{})
	if err != nil {
		return err
	}
	for _, n := range st.GetNodes() {
		nodeChanged(r, n)
	}
	return arb.Watch(ctx, &arbiterv1.WatchRequest{FromRevision: st.GetRevision(), IncludeNodes: true},
		func(resp *arbiterv1.WatchResponse) error {
			for _, ev := range resp.GetEvents() {
				if n := ev.GetNode(); n != nil {
					nodeChanged(r, n)
				}
			}
			return nil
		})
}

func nodeChanged(r *Router, n *arbiterv1.Node) {
	if n.GetRole() == arbiterv1.NodeRole_NODE_ROLE_REPLICA && n.GetState() == arbiterv1.NodeState_NODE_STATE_DEAD {
		r.NodeDead(n.GetNodeId())
	}
}
