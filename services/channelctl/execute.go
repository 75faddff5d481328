package channelctl

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

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

func groupErr(e *replicav1.GroupError) error {
	if e == nil {
		return nil
	}
	return status.Error(codes.Code(e.GetCode()), e.GetMessage())
}

// execute carries out a round: one arbiter call for all compare-and-sets and, per replica
// node, one call of each kind, all in parallel; then it reports the results as events.
func (c *Controller) execute(ctx context.Context, r machine.Round) {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		events []posted
	)
	emit := func(channel string, ev machine.Event) {
		mu.Lock()
		events = append(events, posted{channel: channel, event: ev})
		mu.Unlock()
	}
	goCall := func(f func(ctx context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, c.cfg.RPCTimeout)
			defer cancel()
			f(cctx)
		}()
	}

	if len(r.CAS) > 0 {
		goCall(func(ctx context.Context) { c.commitCAS(ctx, r.CAS, emit) })
	}
	for leader, acts := range r.Change {
		// Outside the round: a change waits for new replicas to catch up, and the rest of the
		// round (a failover, say) must not wait for it. Calls of at most changesPerCall, each
		// with its own timeout: the replica runs that many at once, so a longer call would
		// start its tail late and time it out.
		for chunk := range slices.Chunk(acts, changesPerCall) {
			go c.changeReplicas(ctx, leader, chunk)
		}
	}

	// Loads: one LoadGroups per node; a channel's event waits for all of its nodes.
	type loadRes struct {
		statuses map[uint64]*replicav1.GroupStatus
		errs     map[uint64]error
		epoch    uint64
	}
	loads := map[string]*loadRes{}
	for node, acts := range r.Load {
		for _, a := range acts {
			if loads[a.ChannelID] == nil {
				loads[a.ChannelID] = &loadRes{statuses: map[uint64]*replicav1.GroupStatus{}, errs: map[uint64]error{}, epoch: a.Epoch}
			}
		}
		goCall(func(ctx context.Context) {
			req := &replicav1.LoadGroupsRequest{}
			for _, a := range acts {
				join := a.Join || slices.Contains(a.JoinNodes, node)
				spec := &replicav1.GroupSpec{ChannelId: a.ChannelID, GroupId: a.GroupID, Epoch: a.Epoch, Join: join}
				if !join {
					// The store the record names for this node: a replica whose store was
					// replaced refuses the load instead of bootstrapping an empty voter.
					spec.StoreId = a.StoreIDs[node]
				}
				for id, addr := range c.addresses(a.Replicas) {
					spec.Replicas = append(spec.Replicas, &replicav1.Peer{NodeId: id, Address: addr})
				}
				req.Groups = append(req.Groups, spec)
			}
			resp, err := c.call(ctx, node, func(ctx context.Context, cl replicav1.ReplicaControlServiceClient) (any, error) {
				return cl.LoadGroups(ctx, req)
			})
			var results []*replicav1.LoadGroupsResult
			if err == nil {
				results, err = answers(node, resp.(*replicav1.LoadGroupsResponse).GetResults(), len(acts))
			}
			mu.Lock()
			defer mu.Unlock()
			for i, a := range acts {
				lr := loads[a.ChannelID]
				if err != nil {
					lr.errs[node] = err
					continue
				}
				res := results[i]
				if e := groupErr(res.GetError()); e != nil {
					lr.errs[node] = e
				} else {
					lr.statuses[node] = res.GetStatus()
				}
			}
		})
	}

	// Position queries and leader confirmations share one GetGroupStatus per node.
	type queryRes struct {
		statuses map[uint64]*replicav1.GroupStatus
		errs     map[uint64]error
		epoch    uint64
	}
	queries := map[string]*queryRes{}
	statusNodes := map[uint64]bool{}
	for node, acts := range r.Query {
		statusNodes[node] = true
		for _, a := range acts {
			if queries[a.ChannelID] == nil {
				queries[a.ChannelID] = &queryRes{statuses: map[uint64]*replicav1.GroupStatus{}, errs: map[uint64]error{}, epoch: a.Epoch}
			}
		}
	}
	for node := range r.Confirm {
		statusNodes[node] = true
	}
	for node := range statusNodes {
		goCall(func(ctx context.Context) {
			var ids []string
			for _, a := range r.Query[node] {
				ids = append(ids, a.ChannelID)
			}
			for _, a := range r.Confirm[node] {
				ids = append(ids, a.ChannelID)
			}
			resp, err := c.call(ctx, node, func(ctx context.Context, cl replicav1.ReplicaControlServiceClient) (any, error) {
				return cl.GetGroupStatus(ctx, &replicav1.GetGroupStatusRequest{ChannelIds: ids})
			})
			byID := map[string]*replicav1.GetGroupStatusResult{}
			if err == nil {
				for _, res := range resp.(*replicav1.GetGroupStatusResponse).GetResults() {
					byID[res.GetChannelId()] = res
				}
			}
			mu.Lock()
			for _, a := range r.Query[node] {
				q := queries[a.ChannelID]
				res := byID[a.ChannelID]
				switch {
				case err != nil:
					q.errs[node] = err
				case groupErr(res.GetError()) != nil:
					q.errs[node] = groupErr(res.GetError())
				default:
					q.statuses[node] = res.GetStatus()
				}
			}
			mu.Unlock()
			for _, a := range r.Confirm[node] {
				// A failed call leaves leadership unknown; a group error from a node that
				// answered is a definite "does not serve it" and comes as a nil status.
				emit(a.ChannelID, machine.ConfirmResult{Node: node, Epoch: a.Epoch, Status: byID[a.ChannelID].GetStatus(), Err: err})
			}
		})
	}

	for node, acts := range r.Campaign {
		goCall(func(ctx context.Context) {
			req := &replicav1.CampaignRequest{}
			for _, a := range acts {
				req.Orders = append(req.Orders, &replicav1.CampaignOrder{ChannelId: a.ChannelID, Epoch: a.Epoch})
			}
			resp, err := c.call(ctx, node, func(ctx context.Context, cl replicav1.ReplicaControlServiceClient) (any, error) {
				return cl.Campaign(ctx, req)
			})
			var results []*replicav1.CampaignResult
			if err == nil {
				results, err = answers(node, resp.(*replicav1.CampaignResponse).GetResults(), len(acts))
			}
			for i, a := range acts {
				ev := machine.CampaignResult{Node: node, Epoch: a.Epoch, Err: err}
				if err == nil {
					res := results[i]
					ev.Leader, ev.Term, ev.Err = res.GetLeader(), res.GetStatus().GetTerm(), groupErr(res.GetError())
					ev.Status = res.GetStatus()
				}
				emit(a.ChannelID, ev)
			}
		})
	}

	for node, acts := range r.Transfer {
		goCall(func(ctx context.Context) {
			req := &replicav1.TransferLeaderRequest{}
			for _, a := range acts {
				req.Transfers = append(req.Transfers, &replicav1.Transfer{ChannelId: a.ChannelID, TargetNodeId: a.To, Epoch: a.Epoch})
			}
			resp, err := c.call(ctx, node, func(ctx context.Context, cl replicav1.ReplicaControlServiceClient) (any, error) {
				return cl.TransferLeader(ctx, req)
			})
			var results []*replicav1.TransferLeaderResult
			if err == nil {
				results, err = answers(node, resp.(*replicav1.TransferLeaderResponse).GetResults(), len(acts))
			}
			for i, a := range acts {
				ev := machine.TransferResult{Target: a.To, Epoch: a.Epoch, Err: err}
				if err == nil {
					ev.Err = groupErr(results[i].GetError())
				}
				emit(a.ChannelID, ev)
			}
		})
	}

	type unloadRes struct {
		unloaded []uint64
		errs     map[uint64]error
		epoch    uint64
	}
	unloads := map[string]*unloadRes{}
	for node, acts := range r.Unload {
		for _, a := range acts {
			if unloads[a.ChannelID] == nil {
				unloads[a.ChannelID] = &unloadRes{errs: map[uint64]error{}, epoch: a.Epoch}
			}
		}
		goCall(func(ctx context.Context) {
			req := &replicav1.UnloadGroupsRequest{}
			for _, a := range acts {
				req.ChannelIds = append(req.ChannelIds, a.ChannelID)
				req.Epochs = append(req.Epochs, a.Epoch)
			}
			resp, err := c.call(ctx, node, func(ctx context.Context, cl replicav1.ReplicaControlServiceClient) (any, error) {
				return cl.UnloadGroups(ctx, req)
			})
			var results []*replicav1.UnloadGroupsResult
			if err == nil {
				results, err = answers(node, resp.(*replicav1.UnloadGroupsResponse).GetResults(), len(acts))
			}
			mu.Lock()
			defer mu.Unlock()
			for i, a := range acts {
				u := unloads[a.ChannelID]
				gerr := err
				if gerr == nil {
					gerr = groupErr(results[i].GetError())
				}
				// A replica that does not have the group loaded has nothing to drop.
				if gerr == nil || status.Code(gerr) == codes.NotFound {
					u.unloaded = append(u.unloaded, node)
				} else {
					u.errs[node] = gerr
				}
			}
		})
	}

	wg.Wait()
	for id, l := range loads {
		emit(id, machine.GroupsLoaded{Epoch: l.epoch, Statuses: l.statuses, Errors: l.errs})
	}
	for id, q := range queries {
		emit(id, machine.PositionsReported{Epoch: q.epoch, Statuses: q.statuses, Errors: q.errs})
	}
	for id, u := range unloads {
		emit(id, machine.UnloadResult{Epoch: u.epoch, Unloaded: u.unloaded, Errors: u.errs})
	}
	for _, e := range events {
		select {
		case c.events <- e:
		case <-ctx.Done():
			return
		}
	}
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

// call runs one RPC on a replica node.
func (c *Controller) call(ctx context.Context, node uint64, f func(context.Context, replicav1.ReplicaControlServiceClient) (any, error)) (any, error) {
	cl, err := c.replica(node)
	if err != nil {
		return nil, err
	}
	return f(ctx, cl)
}

// commitCAS sends all compare-and-sets of a round in one call. When the call itself fails its
// outcome is unknown, so each channel is read back and reported as a refusal carrying the
// current record: the machine adopts it and resumes from there.
func (c *Controller) commitCAS(ctx context.Context, changes []*arbiterv1.ChannelChange, emit func(string, machine.Event)) {
	resp, err := c.cfg.Arbiter.CompareAndSetChannels(ctx, &arbiterv1.CompareAndSetChannelsRequest{NodeId: c.cfg.NodeID, Changes: changes})
	if err != nil {
		for _, ch := range changes {
			got, gerr := c.cfg.Arbiter.GetChannel(ctx, &arbiterv1.GetChannelRequest{ChannelId: ch.GetChannelId()})
			ev := machine.CASResult{Refusal: machine.RefusedStaleEpoch, Reason: fmt.Sprintf("compare-and-set failed: %v", err), At: c.cfg.Now()}
			if gerr == nil {
				ev.Channel = got.GetChannel()
			}
			emit(ch.GetChannelId(), ev)
		}
		return
	}
	for i, res := range resp.GetResults() {
		ev := machine.CASResult{Accepted: res.GetSucceeded(), Channel: res.GetChannel(), Reason: res.GetError(), At: c.cfg.Now()}
		if !ev.Accepted {
			ev.Refusal = machine.RefusedStaleEpoch
			if res.GetRefusal() == arbiterv1.ChangeRefusal_CHANGE_REFUSAL_NOT_SLOT_OWNER {
				ev.Refusal = machine.RefusedNotOwner
			}
		}
		emit(changes[i].GetChannelId(), ev)
	}
}

// changesPerCall matches the replica's parallelism for ChangeReplicas (parallelGroups).
const changesPerCall = 64

// changeReplicas sends one ChangeReplicas to a leader and reports each channel's outcome.
func (c *Controller) changeReplicas(ctx context.Context, leader uint64, acts []machine.ChangeReplicas) {
	cctx, cancel := context.WithTimeout(ctx, c.cfg.RepairTimeout)
	defer cancel()
	req := &replicav1.ChangeReplicasRequest{}
	for _, a := range acts {
		adds := c.addresses([]uint64{a.Add})
		req.Changes = append(req.Changes, &replicav1.ReplicaChange{ChannelId: a.ChannelID, AddNodeId: a.Add,
			AddAddress: adds[a.Add], RemoveNodeId: a.Remove, Voters: a.Voters, Epoch: a.Epoch, AddStoreId: a.AddStoreID})
	}
	resp, err := c.call(cctx, leader, func(ctx context.Context, cl replicav1.ReplicaControlServiceClient) (any, error) {
		return cl.ChangeReplicas(ctx, req)
	})
	var results []*replicav1.ChangeReplicasResult
	if err == nil {
		results, err = answers(leader, resp.(*replicav1.ChangeReplicasResponse).GetResults(), len(acts))
	}
	for i, a := range acts {
		ev := machine.ReplicasChanged{Epoch: a.Epoch, Err: err}
		if err == nil {
			res := results[i]
			ev.Status, ev.Err = res.GetStatus(), groupErr(res.GetError())
		}
		select {
		case c.events <- posted{channel: a.ChannelID, event: ev}:
		case <-ctx.Done():
			return
		}
	}
}
