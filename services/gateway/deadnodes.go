package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Acting on the arbiter's knowledge of dead replicas (the failover issue, item 1). A paused
// or black-holed leader does not refuse calls, it holds them: without this, every caller of
// its channels waits out AttemptTimeout before it re-resolves, long after the arbiter
// declared the node dead and the channel control tier elected another leader. NodeDead cuts
// those waits: the attempts in flight to the node end at once and re-resolve without a
// backoff pause, and no route to it is used again.

// errNodeDead is the cause of an attempt cancelled because its replica was declared dead.
var errNodeDead = errors.New("replica declared dead by the arbiter")

// inflight is the attempts in flight per replica node, each with the function that cancels
// it.
type inflight struct {
	mu     sync.Mutex
	next   uint64
	byNode map[uint64]map[uint64]context.CancelCauseFunc
}

// track registers an attempt against node: ctx for the attempt, and release, to call when it
// ends, which reports whether it was cut short because the node was declared dead.
func (f *inflight) track(ctx context.Context, node uint64) (context.Context, func() (dead bool)) {
	cctx, cancel := context.WithCancelCause(ctx)
	f.mu.Lock()
	if f.byNode == nil {
		f.byNode = map[uint64]map[uint64]context.CancelCauseFunc{}
	}
	if f.byNode[node] == nil {
		f.byNode[node] = map[uint64]context.CancelCauseFunc{}
	}
	f.next++
	id := f.next
	f.byNode[node][id] = cancel
	f.mu.Unlock()
	return cctx, func() bool {
		f.mu.Lock()
		delete(f.byNode[node], id)
		f.mu.Unlock()
		dead := errors.Is(context.Cause(cctx), errNodeDead)
		cancel(nil)
		return dead
	}
}

// cancel ends every attempt in flight to node, and returns how many there were.
func (f *inflight) cancel(node uint64) int {
	f.mu.Lock()
	attempts := f.byNode[node]
	delete(f.byNode, node)
	f.mu.Unlock()
	for _, c := range attempts {
		c(errNodeDead)
	}
	return len(attempts)
}

// NodeDead is told that the arbiter declared a replica node dead: routes to it are forgotten
// and the attempts in flight to it end now, to be retried on the channel's next leader.
func (r *Router) NodeDead(node uint64) {
	r.mu.Lock()
	var dropped int
	for ch, rt := range r.routes {
		if rt.leader == node {
			delete(r.routes, ch)
			dropped++
		}
	}
	r.mu.Unlock()
	cut := r.attempts.cancel(node)
	if dropped > 0 || cut > 0 {
		r.log.Info("replica declared dead: routes to it dropped and calls to it re-resolved",
			"node", node, "routes", dropped, "calls", cut)
	}
}

// deadNodeError is what an attempt cut short by NodeDead failed with: Unavailable to gRPC,
// and errNodeDead to the retry loops, which re-resolve at once.
func deadNodeError(node uint64) error { return nodeDeadError{node: node} }

type nodeDeadError struct{ node uint64 }

func (e nodeDeadError) Error() string {
	return fmt.Sprintf("replica %d: %v", e.node, errNodeDead)
}

func (e nodeDeadError) GRPCStatus() *status.Status { return status.New(codes.Unavailable, e.Error()) }

func (e nodeDeadError) Unwrap() error { return errNodeDead }
