package channelctl

import (
	"context"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

// Loading and unloading groups: one call per node; a channel's event waits for all of its
// nodes, so each call fills in a per-channel tally that execute reports at the end.

// load sends one LoadGroups per node and returns the tally of each channel loaded.
func (x *roundCalls) load(byNode map[uint64][]machine.LoadGroups) map[string]*nodeAnswers {
	loads := map[string]*nodeAnswers{}
	for _, acts := range byNode {
		for _, a := range acts {
			if loads[a.ChannelID] == nil {
				loads[a.ChannelID] = newNodeAnswers(a.Epoch)
			}
		}
	}
	for node, acts := range byNode {
		x.goCall(func(ctx context.Context) {
			results, err := callBatch(ctx, x.c, node, replicav1.ReplicaControlServiceClient.LoadGroups, x.c.loadRequest(node, acts), len(acts))
			x.mu.Lock()
			defer x.mu.Unlock()
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
	return loads
}

// loadRequest is the LoadGroups order of node for acts.
func (c *Controller) loadRequest(node uint64, acts []machine.LoadGroups) *replicav1.LoadGroupsRequest {
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
	return req
}

// unloaded is the tally of one channel's unload: the nodes that no longer hold its group and
// the errors of the others.
type unloaded struct {
	unloaded []uint64
	errs     map[uint64]error
	epoch    uint64
}

// unload sends one UnloadGroups per node and returns the tally of each channel unloaded.
func (x *roundCalls) unload(byNode map[uint64][]machine.Unload) map[string]*unloaded {
	unloads := map[string]*unloaded{}
	for _, acts := range byNode {
		for _, a := range acts {
			if unloads[a.ChannelID] == nil {
				unloads[a.ChannelID] = &unloaded{errs: map[uint64]error{}, epoch: a.Epoch}
			}
		}
	}
	for node, acts := range byNode {
		x.goCall(func(ctx context.Context) {
			req := &replicav1.UnloadGroupsRequest{}
			for _, a := range acts {
				req.ChannelIds = append(req.ChannelIds, a.ChannelID)
				req.Epochs = append(req.Epochs, a.Epoch)
			}
			results, err := callBatch(ctx, x.c, node, replicav1.ReplicaControlServiceClient.UnloadGroups, req, len(acts))
			x.mu.Lock()
			defer x.mu.Unlock()
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
	return unloads
}
