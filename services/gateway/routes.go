package gateway

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// The route cache: where each channel is served, as the channel control tier resolved it
// (one shared resolve per channel at a time) or a replica's NotLeader hint said since.

// route returns the channel's cached route, or resolves it. stale, when set, is a leader that
// just failed: a cached route naming it is not used.
func (r *Router) route(ctx context.Context, channel string, create bool, stale uint64) (*route, error) {
	r.mu.RLock()
	rt := r.routes[channel]
	r.mu.RUnlock()
	if rt != nil && (stale == 0 || rt.leader != stale) {
		return rt, nil
	}
	return r.resolveShared(ctx, channel, create, stale)
}

// resolveShared resolves the channel, sharing one ResolveChannel call among concurrent callers
// (after a failover every sender of a channel re-resolves at once). The call runs detached
// from any one caller, bounded by AttemptTimeout; each caller waits at most its own deadline.
func (r *Router) resolveShared(ctx context.Context, channel string, create bool, stale uint64) (*route, error) {
	key := flightKey{channel, create}
	r.flightMu.Lock()
	f := r.flights[key]
	if f == nil {
		f = &flight{done: make(chan struct{})}
		r.flights[key] = f
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.AttemptTimeout)
		req := &channelctlv1.ResolveChannelRequest{ChannelId: channel, StaleLeaderNodeId: stale}
		if create {
			req.CreateIfMissing, req.ReplicationFactor = true, r.cfg.CreateReplication
		}
		go func() {
			defer cancel()
			resp, err := r.resolve(fctx, req)
			if err == nil {
				f.rt, err = r.install(resp)
			}
			f.err = err
			r.flightMu.Lock()
			delete(r.flights, key)
			r.flightMu.Unlock()
			close(f.done)
		}()
	}
	r.flightMu.Unlock()
	select {
	case <-f.done:
		return f.rt, f.err
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// resolve asks the channel control tier for the channel's leader.
func (r *Router) resolve(ctx context.Context, req *channelctlv1.ResolveChannelRequest) (*channelctlv1.ResolveChannelResponse, error) {
	var resp *channelctlv1.ResolveChannelResponse
	err := r.askControl(ctx, req.GetChannelId(), func(ctx context.Context, c channelctlv1.ChannelControlServiceClient) error {
		var err error
		resp, err = c.ResolveChannel(ctx, req)
		return err
	})
	if err != nil {
		r.resolves.Add(ctx, 1, r.resolveFailed)
		return nil, err
	}
	r.resolves.Add(ctx, 1, r.resolveOK)
	if resp.GetLeaderNodeId() == 0 || resp.GetLeaderAddress() == "" {
		return nil, status.Errorf(codes.Unavailable, "channel %s has no leader yet", req.GetChannelId())
	}
	return resp, nil
}

// install caches a resolved route.
func (r *Router) install(resp *channelctlv1.ResolveChannelResponse) (*route, error) {
	if resp.GetLeaderNodeId() == 0 || resp.GetLeaderAddress() == "" {
		return nil, status.Errorf(codes.Unavailable, "channel %s has no leader yet", resp.GetChannelId())
	}
	cc, err := r.conns.get(resp.GetLeaderAddress())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "channel %s: leader node %d at %s: %v",
			resp.GetChannelId(), resp.GetLeaderNodeId(), resp.GetLeaderAddress(), err)
	}
	rt := &route{
		channel: resp.GetChannelId(),
		group:   resp.GetGroupId(),
		leader:  resp.GetLeaderNodeId(),
		addr:    resp.GetLeaderAddress(),
		term:    resp.GetLeaderTerm(),
		epoch:   resp.GetEpoch(),
		client:  replicav1.NewReplicaServiceClient(cc),
	}
	r.mu.Lock()
	if len(r.routes) >= r.cfg.MaxRoutes {
		r.evictLocked()
	}
	r.routes[rt.channel] = rt
	r.mu.Unlock()
	return rt, nil
}

// evictLocked drops about a sixteenth of the cache, arbitrary entries (map order).
func (r *Router) evictLocked() {
	n := max(1, len(r.routes)/16)
	for ch := range r.routes {
		delete(r.routes, ch)
		if n--; n == 0 {
			break
		}
	}
}

// invalidate drops rt from the cache unless a newer route replaced it already.
func (r *Router) invalidate(rt *route) {
	r.mu.Lock()
	if r.routes[rt.channel] == rt {
		delete(r.routes, rt.channel)
	}
	r.mu.Unlock()
}

// follow installs the leader a replica named in its NotLeader answer in place of rt. It
// reports whether the caller may try that leader now.
func (r *Router) follow(rt *route, nl *replicav1.NotLeader) bool {
	cc, err := r.conns.get(nl.GetLeaderAddress())
	if err != nil {
		return false
	}
	nrt := &route{
		channel: rt.channel, group: rt.group, epoch: rt.epoch,
		leader: nl.GetLeaderNodeId(), addr: nl.GetLeaderAddress(), term: nl.GetTerm(),
		client: replicav1.NewReplicaServiceClient(cc),
	}
	r.mu.Lock()
	if cur := r.routes[rt.channel]; cur == rt || cur == nil {
		r.routes[rt.channel] = nrt
	}
	r.mu.Unlock()
	r.log.Debug("following leader hint", "channel", rt.channel, "from", rt.leader, "to", nrt.leader, "address", nrt.addr)
	return true
}
