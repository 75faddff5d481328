package channelctl

import (
	"context"
	"sync"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

// Carrying out a round of the channel machines' actions: one arbiter call for all
// compare-and-sets and, per replica node, one call of each kind, all in parallel. Each kind
// has its own file: execute_cas.go, execute_groups.go (loads, unloads), execute_status.go
// (position queries, leader confirmations), execute_leaders.go (campaigns, transfers) and
// execute_changes.go (replica set changes); replica_call.go holds the typed call to a replica.

// execute carries out a round, then reports the results to the machines as events.
func (c *Controller) execute(ctx context.Context, r machine.Round) {
	x := &roundCalls{c: c, ctx: ctx}
	if len(r.CAS) > 0 {
		x.goCall(func(ctx context.Context) { c.commitCAS(ctx, r.CAS, x.emit) })
	}
	c.startChanges(ctx, r.Change)
	loads := x.load(r.Load)
	queries := x.status(r.Query, r.Confirm)
	x.campaign(r.Campaign)
	x.transfer(r.Transfer)
	unloads := x.unload(r.Unload)

	x.wg.Wait()
	// A channel's load, position query and unload each wait for the answers of all its nodes.
	for id, l := range loads {
		x.emit(id, machine.GroupsLoaded{Epoch: l.epoch, Statuses: l.statuses, Errors: l.errs})
	}
	for id, q := range queries {
		x.emit(id, machine.PositionsReported{Epoch: q.epoch, Statuses: q.statuses, Errors: q.errs})
	}
	for id, u := range unloads {
		x.emit(id, machine.UnloadResult{Epoch: u.epoch, Unloaded: u.unloaded, Errors: u.errs})
	}
	for _, e := range x.events {
		select {
		case c.events <- e:
		case <-ctx.Done():
			return
		}
	}
}

// roundCalls is one execution of a round: its calls in flight and the events they report.
type roundCalls struct {
	c   *Controller
	ctx context.Context
	wg  sync.WaitGroup
	// mu guards events and the per-channel tallies (loads, queries, unloads) that the calls
	// of several nodes fill in.
	mu     sync.Mutex
	events []posted
}

// emit records an event for a channel, to be reported once every call of the round ended.
func (x *roundCalls) emit(channel string, ev machine.Event) {
	x.mu.Lock()
	x.events = append(x.events, posted{channel: channel, event: ev})
	x.mu.Unlock()
}

// goCall runs f in its own goroutine with a context bounded by RPCTimeout.
func (x *roundCalls) goCall(f func(ctx context.Context)) {
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		cctx, cancel := context.WithTimeout(x.ctx, x.c.cfg.RPCTimeout)
		defer cancel()
		f(cctx)
	}()
}

// nodeAnswers is what each node answered about one channel in a call that asks all of the
// channel's nodes (a load, a position query).
type nodeAnswers struct {
	statuses map[uint64]*replicav1.GroupStatus
	errs     map[uint64]error
	epoch    uint64
}

func newNodeAnswers(epoch uint64) *nodeAnswers {
	return &nodeAnswers{statuses: map[uint64]*replicav1.GroupStatus{}, errs: map[uint64]error{}, epoch: epoch}
}
