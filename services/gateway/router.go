package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// Dialer returns a client connection to addr. The Router calls it once per address and keeps
// the connection until Close, which closes connections that implement io.Closer (as
// *grpc.ClientConn does). It must not block on connecting.
type Dialer func(addr string) (grpc.ClientConnInterface, error)

// RouterConfig configures a Router. Zero tuning fields take the defaults below.
type RouterConfig struct {
	// Channelctls are the channel control services' addresses. The router asks the one that
	// answered last first, the others in turn when it is unreachable, and follows a NotOwner
	// answer to the channelctl that owns the channel.
	Channelctls []string
	// Dial makes the connections to channelctls and replicas.
	Dial Dialer
	// CreateReplication is the replication factor Append creates a missing channel with;
	// 0 means Append never creates.
	CreateReplication uint32
	// DefaultTimeout bounds a call whose context has no deadline, retries included (5 s). It
	// is also how long a subscription may stay disconnected before it gives up.
	DefaultTimeout time.Duration
	// AttemptTimeout bounds one RPC to a replica or channelctl, so that a hung node costs one
	// retry and not the whole deadline (2 s).
	AttemptTimeout time.Duration
	// MaxAttempts bounds the attempts of one call (32).
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the jittered, doubling pause before an attempt that
	// found no usable leader (10 ms, 200 ms). A NotLeader naming the leader is followed at once.
	MinBackoff, MaxBackoff time.Duration
	// MaxRoutes bounds the route cache (1<<20 channels); beyond it arbitrary entries go.
	MaxRoutes int
	// Log receives retries and leader changes at debug level; discarded when nil.
	Log *slog.Logger
	// Meter records resolves and retries; none when nil.
	Meter metric.Meter
}

func (c *RouterConfig) defaults() {
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = DefaultRequestTimeout
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = 2 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 32
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 10 * time.Millisecond
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(200*time.Millisecond, c.MinBackoff)
	}
	if c.MaxRoutes <= 0 {
		c.MaxRoutes = 1 << 20
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Meter == nil {
		c.Meter = noop.NewMeterProvider().Meter("")
	}
}

// maxHops bounds how many NotLeader hints one call follows before it asks channelctl again,
// so that two replicas naming each other cannot keep a call bouncing.
const maxHops = 3

// retryAfter is the delay an Unavailable answer suggests to the caller.
const retryAfter = time.Second

// Router finds each channel's leader replica through the channel control tier and carries
// sends, reads and subscriptions to it. It caches the leader per channel, follows NotLeader
// hints, re-resolves when a leader is unreachable, and retries within the caller's deadline,
// so that a leader change looks like a delay. It is safe for concurrent use.
type Router struct {
	cfg   RouterConfig
	log   *slog.Logger
	conns *connPool

	mu     sync.RWMutex
	routes map[string]*route
	owners map[string]string // channel -> channelctl that said it owns the channel

	flightMu sync.Mutex
	flights  map[flightKey]*flight

	// attempts are the calls in flight per replica node, cut short by NodeDead.
	attempts inflight

	ctlFirst atomic.Uint32 // index in cfg.Channelctls of the channelctl to ask first

	streams     context.Context // ends when StopStreams is called
	stopStreams context.CancelFunc

	resolves      metric.Int64Counter
	retries       metric.Int64Counter
	resolveOK     metric.MeasurementOption
	resolveFailed metric.MeasurementOption
}

// route is where a channel is served: its leader as channelctl last said, or as a replica's
// NotLeader hint said since. Routes are immutable; a change installs a new one.
type route struct {
	channel string
	group   uint64
	leader  uint64
	addr    string
	term    uint64
	epoch   uint64
	client  replicav1.ReplicaServiceClient
}

type flightKey struct {
	channel string
	create  bool
}

// flight is one ResolveChannel call that concurrent callers for the same channel share.
type flight struct {
	done chan struct{}
	rt   *route
	err  error
}

// NewRouter returns a router over cfg.
func NewRouter(cfg RouterConfig) (*Router, error) {
	cfg.defaults()
	if cfg.Dial == nil {
		return nil, errors.New("gateway: RouterConfig.Dial is required")
	}
	r := &Router{
		cfg:     cfg,
		log:     cfg.Log,
		conns:   &connPool{dial: cfg.Dial, conns: map[string]grpc.ClientConnInterface{}},
		routes:  map[string]*route{},
		owners:  map[string]string{},
		flights: map[flightKey]*flight{},
	}
	r.streams, r.stopStreams = context.WithCancel(context.Background())
	var err error
	if r.resolves, err = cfg.Meter.Int64Counter("triarch.gateway.resolves",
		metric.WithDescription("ResolveChannel calls to the channel control tier (route cache misses)")); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if r.retries, err = cfg.Meter.Int64Counter("triarch.gateway.retries",
		metric.WithDescription("attempts repeated because a replica was not the leader or unreachable")); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	r.resolveOK = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "ok")))
	r.resolveFailed = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "error")))
	return r, nil
}

// Append sends msgs to the channel's leader and returns their results, creating the channel
// when it does not exist and CreateReplication is set. Retrying is safe because every message
// carries a client_msg_id (the caller must have set them). Each call is one send: every
// attempt carries the send's nonce, so that an attempt finding an earlier one committed (its
// answer lost to a timeout, a kill or a leader change) is answered duplicate=false. Only a
// client_msg_id another call sent before is a duplicate.
func (r *Router) Append(ctx context.Context, channel string, msgs []*triarchv1.MessageInput) ([]*replicav1.AppendResult, error) {
	req := &replicav1.AppendRequest{ChannelId: channel, Messages: msgs, Nonce: newNonce()}
	var out []*replicav1.AppendResult
	err := r.do(ctx, channel, r.cfg.CreateReplication > 0, func(ctx context.Context, c replicav1.ReplicaServiceClient) error {
		resp, err := c.Append(ctx, req)
		if err != nil {
			return err
		}
		if len(resp.GetResults()) != len(msgs) {
			return status.Errorf(codes.Internal, "replica answered %d results for %d messages", len(resp.GetResults()), len(msgs))
		}
		out = resp.GetResults()
		return nil
	})
	return out, err
}

// newNonce returns a random non-zero send nonce (AppendRequest.nonce). Two sends draw the same
// one with probability 2^-64; it matters only if they also carry the same client_msg_id, and
// then only the duplicate flag is wrong, never the seq.
func newNonce() uint64 {
	for {
		if n := rand.Uint64(); n != 0 {
			return n
		}
	}
}

// Read returns committed messages of the channel from seq from on, at most limit of them.
func (r *Router) Read(ctx context.Context, channel string, from uint64, limit uint32) (*replicav1.ReadResponse, error) {
	req := &replicav1.ReadRequest{ChannelId: channel, FromSeq: from, Limit: limit}
	var out *replicav1.ReadResponse
	err := r.do(ctx, channel, false, func(ctx context.Context, c replicav1.ReplicaServiceClient) error {
		resp, err := c.Read(ctx, req)
		out = resp
		return err
	})
	return out, err
}

// Resolve asks channelctl for the channel's leader (creating the channel with replication
// replicas when create is set) and caches the answer. It does not answer from the cache: the
// response's created flag is channelctl's.
func (r *Router) Resolve(ctx context.Context, channel string, create bool, replication uint32) (*channelctlv1.ResolveChannelResponse, error) {
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	var resp *channelctlv1.ResolveChannelResponse
	err := r.retryControl(ctx, channel, func(ctx context.Context) error {
		var err error
		resp, err = r.resolve(ctx, &channelctlv1.ResolveChannelRequest{
			ChannelId: channel, CreateIfMissing: create, ReplicationFactor: replication})
		if err == nil {
			_, err = r.install(resp)
		}
		return err
	})
	return resp, err
}

// ChannelState returns channelctl's view of the channel.
func (r *Router) ChannelState(ctx context.Context, channel string) (*channelctlv1.GetChannelStateResponse, error) {
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	var resp *channelctlv1.GetChannelStateResponse
	err := r.retryControl(ctx, channel, func(ctx context.Context) error {
		return r.askControl(ctx, channel, func(ctx context.Context, c channelctlv1.ChannelControlServiceClient) error {
			var err error
			resp, err = c.GetChannelState(ctx, &channelctlv1.GetChannelStateRequest{ChannelId: channel})
			return err
		})
	})
	return resp, err
}

// Subscription receives a subscription's messages.
type Subscription struct {
	// Opened, when set, is called once, when the channel's leader has first been found (the
	// channel exists); errors before it are the caller's to report as such.
	Opened func()
	// Deliver receives consecutive committed messages, each batch following the previous one.
	// An error from it ends the subscription with that error.
	Deliver func([]*triarchv1.Message) error
}

// Subscribe delivers the channel's committed messages from seq from on until ctx ends (then it
// returns nil), Deliver fails, or no leader can be reached for DefaultTimeout. When the leader's
// stream breaks it finds the new leader and resumes from the next expected sequence number,
// dropping anything below it, so the caller sees every message once, in order.
func (r *Router) Subscribe(ctx context.Context, channel string, from uint64, sub Subscription) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.streams, cancel)()
	next := max(from, 1)
	// ended is the outcome once ctx is done: the caller went away (nil), or StopStreams.
	ended := func() error {
		if r.streams.Err() != nil {
			return r.unavailable("gateway is shutting down; resume the subscription to %s from seq %d", channel, next)
		}
		return nil
	}
	var (
		stale   uint64
		hops    int
		quick   bool // the one immediate re-resolve has been used
		opened  bool
		lastErr error
		outage  = time.Now() // start of the current period without a working stream
		bo      = r.backoff()
	)
	for attempt := 1; ; attempt++ {
		wctx, wcancel := context.WithDeadline(ctx, outage.Add(r.cfg.DefaultTimeout))
		rt, err := r.route(wctx, channel, false, stale)
		wcancel()
		if err == nil {
			if !opened && sub.Opened != nil {
				sub.Opened()
			}
			opened = true
			var progressed bool
			began := time.Now()
			pctx, release := r.attempts.track(ctx, rt.leader)
			progressed, err = r.pump(pctx, rt, &next, sub.Deliver)
			if release() && ctx.Err() == nil {
				err = deadNodeError(rt.leader)
			}
			var de deliverError
			if errors.As(err, &de) {
				return de.err
			}
			if progressed || time.Since(began) > r.cfg.DefaultTimeout/2 {
				// The stream worked: this break starts a new outage with a fresh budget.
				outage, attempt, hops, bo, quick = time.Now(), 0, 0, r.backoff(), false
			}
		}
		if ctx.Err() != nil {
			return ended()
		}
		if err != nil && rt == nil && !retryableControl(err) {
			return err
		}
		if rt != nil {
			v, hint := classifyReplica(err, rt)
			if v == verdictFail {
				return err
			}
			r.retried(ctx, channel, rt, err)
			if v == verdictFollow && hops < maxHops && r.follow(rt, hint) {
				hops++
				stale, lastErr = 0, err
				continue
			}
			r.invalidate(rt)
			stale = rt.leader
			if v == verdictResolve && !quick && attempt < r.cfg.MaxAttempts {
				quick, lastErr = true, err
				continue
			}
		}
		lastErr = err
		if attempt >= r.cfg.MaxAttempts || !bo.pause(ctx, outage.Add(r.cfg.DefaultTimeout)) {
			if ctx.Err() != nil {
				return ended()
			}
			return r.giveUp(channel, time.Since(outage), attempt, lastErr)
		}
	}
}

// deliverError carries an error of the subscriber's Deliver, which ends a subscription as is.
type deliverError struct{ err error }

func (e deliverError) Error() string { return e.err.Error() }

// pump reads one replica stream into deliver from *next on. It reports whether it delivered
// anything, and returns the error that ended the stream.
func (r *Router) pump(ctx context.Context, rt *route, next *uint64, deliver func([]*triarchv1.Message) error) (bool, error) {
	stream, err := rt.client.Subscribe(ctx, &replicav1.SubscribeRequest{ChannelId: rt.channel, FromSeq: *next})
	if err != nil {
		return false, err
	}
	progressed := false
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return progressed, status.Error(codes.Unavailable, "replica ended the subscription stream")
		}
		if err != nil {
			return progressed, err
		}
		msgs := resp.GetMessages()
		for len(msgs) > 0 && msgs[0].GetSeq() < *next {
			msgs = msgs[1:] // already delivered before a resume
		}
		n := 0
		for n < len(msgs) && msgs[n].GetSeq() == *next+uint64(n) {
			n++
		}
		if n > 0 {
			if err := deliver(msgs[:n]); err != nil {
				return progressed, deliverError{err}
			}
			*next += uint64(n)
			progressed = true
		}
		if n < len(msgs) {
			return progressed, status.Errorf(codes.Unavailable, "replica stream skipped from seq %d to %d; resubscribing",
				*next, msgs[n].GetSeq())
		}
	}
}

// StopStreams ends every subscription (they return Unavailable, so clients resume at another
// gateway) and makes new ones fail the same way. Unary calls are not affected.
func (r *Router) StopStreams() { r.stopStreams() }

// Ready reports whether a channelctl answers its health check (the gateway can route only
// through one).
func (r *Router) Ready(ctx context.Context) error {
	if len(r.cfg.Channelctls) == 0 {
		return errors.New("no channelctl is configured (--channelctls)")
	}
	var errs []string
	for _, addr := range r.cfg.Channelctls {
		cc, err := r.conns.get(addr)
		if err == nil {
			hctx, cancel := context.WithTimeout(ctx, time.Second)
			var resp *healthpb.HealthCheckResponse
			resp, err = healthpb.NewHealthClient(cc).Check(hctx, &healthpb.HealthCheckRequest{
				Service: channelctlv1.ChannelControlService_ServiceDesc.ServiceName})
			cancel()
			if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("health %s", resp.GetStatus())
			}
		}
		errs = append(errs, fmt.Sprintf("%s: %v", addr, err))
	}
	return fmt.Errorf("no channelctl is serving: %s", strings.Join(errs, "; "))
}

// Close ends subscriptions and closes every connection.
func (r *Router) Close() error {
	r.stopStreams()
	return r.conns.close()
}

// do runs f against the channel's leader until it succeeds, fails for good, or the deadline
// (the caller's, or DefaultTimeout) leaves no time for another attempt. Each attempt (resolve
// and call) gets one context bounded by AttemptTimeout and the call's deadline.
func (r *Router) do(ctx context.Context, channel string, create bool, f func(context.Context, replicav1.ReplicaServiceClient) error) error {
	start := time.Now()
	dl, own := r.deadlineOf(ctx, start)
	var (
		stale   uint64
		hops    int
		quick   bool // the one immediate re-resolve has been used
		lastErr error
		bo      = r.backoff()
	)
	for attempt, now := 1, start; ; attempt, now = attempt+1, time.Now() {
		actx, acancel := ctx, context.CancelFunc(nil)
		if adl := now.Add(r.cfg.AttemptTimeout); own || adl.Before(dl) {
			actx, acancel = context.WithDeadline(ctx, earliest(dl, adl))
		}
		rt, err := r.route(actx, channel, create, stale)
		if err == nil {
			cctx, release := r.attempts.track(actx, rt.leader)
			err = f(cctx, rt.client)
			if release() {
				err = deadNodeError(rt.leader)
			}
		}
		if acancel != nil {
			acancel()
		}
		if err == nil {
			return nil
		}
		if rt == nil {
			if ctx.Err() == nil && !retryableControl(err) {
				return err
			}
		} else {
			v, hint := classifyReplica(err, rt)
			if v == verdictFail {
				return err
			}
			r.retried(ctx, channel, rt, err)
			if v == verdictFollow && hops < maxHops && attempt < r.cfg.MaxAttempts && r.follow(rt, hint) {
				hops++
				stale, lastErr = 0, err
				continue
			}
			r.invalidate(rt)
			stale = rt.leader
			if v == verdictResolve && !quick && attempt < r.cfg.MaxAttempts {
				quick, lastErr = true, err
				continue
			}
		}
		lastErr = err
		if attempt >= r.cfg.MaxAttempts || !bo.pause(ctx, dl) {
			return r.giveUpCtx(ctx, channel, time.Since(start), attempt, lastErr)
		}
	}
}

// deadlineOf is the time a call must be answered by: slightly before the caller's deadline,
// so that an Unavailable answer with its reason reaches the caller before the caller's own
// deadline cuts the call, or DefaultTimeout from now when the caller set none. own reports
// that the router imposes it (ctx alone does not end by then).
func (r *Router) deadlineOf(ctx context.Context, now time.Time) (dl time.Time, own bool) {
	cdl, ok := ctx.Deadline()
	if !ok {
		return now.Add(r.cfg.DefaultTimeout), true
	}
	margin := min(50*time.Millisecond, cdl.Sub(now)/10)
	return cdl.Add(-margin), margin > 0
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// retryControl runs f, a call to the channel control tier, until it succeeds, fails for good,
// or the deadline leaves no time for another attempt.
func (r *Router) retryControl(ctx context.Context, channel string, f func(context.Context) error) error {
	start := time.Now()
	bo := r.backoff()
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() == nil && !retryableControl(err) {
			return err
		}
		dl, _ := ctx.Deadline()
		if attempt >= r.cfg.MaxAttempts || !bo.pause(ctx, dl) {
			return r.giveUpCtx(ctx, channel, time.Since(start), attempt, err)
		}
	}
}

// deadline is ctx ending at deadlineOf, for calls that are not on the hot path.
func (r *Router) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, _ := r.deadlineOf(ctx, time.Now())
	return context.WithDeadline(ctx, dl)
}

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

func (r *Router) retried(ctx context.Context, channel string, rt *route, err error) {
	st := status.Convert(err)
	r.retries.Add(ctx, 1, metric.WithAttributes(attribute.String("code", st.Code().String())))
	r.log.DebugContext(ctx, "retrying", "channel", channel, "leader", rt.leader, "address", rt.addr,
		"code", st.Code().String(), "err", st.Message())
}

// askControl calls f on channelctls until one answers: first the one known to own the
// channel, then the one that answered last, then the others. A NotOwner answer sends the
// call to the owner it names. An error that another channelctl could not change (NotFound,
// InvalidArgument, ...) is returned at once; when every channelctl was unreachable the error
// is Unavailable and lists them.
func (r *Router) askControl(ctx context.Context, channel string, f func(context.Context, channelctlv1.ChannelControlServiceClient) error) error {
	queue := r.controlOrder(channel)
	if len(queue) == 0 {
		return finalError{r.unavailable("channel %s: no channelctl is configured (--channelctls) to resolve channels", channel)}
	}
	tried := make(map[string]bool, len(queue))
	var errs []string
	for len(queue) > 0 {
		addr := queue[0]
		queue = queue[1:]
		if tried[addr] {
			continue
		}
		tried[addr] = true
		cc, err := r.conns.get(addr)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", addr, err))
			continue
		}
		actx, cancel := context.WithTimeout(ctx, r.cfg.AttemptTimeout)
		err = f(actx, channelctlv1.NewChannelControlServiceClient(cc))
		cancel()
		if err == nil {
			r.preferControl(addr)
			return nil
		}
		st := status.Convert(err)
		if owner := notOwner(st); owner != "" {
			r.setOwner(channel, owner)
			queue = append([]string{owner}, queue...)
			errs = append(errs, fmt.Sprintf("%s: not the owner (owner is %s)", addr, owner))
			continue
		}
		if !retryableControl(err) {
			return err
		}
		if ctx.Err() != nil {
			break
		}
		errs = append(errs, fmt.Sprintf("%s: %s: %s", addr, st.Code(), st.Message()))
	}
	return status.Errorf(codes.Unavailable, "channel %s: no channelctl could answer: %s", channel, strings.Join(errs, "; "))
}

// controlOrder is the order channelctls are asked about channel.
func (r *Router) controlOrder(channel string) []string {
	ctls := r.cfg.Channelctls
	out := make([]string, 0, len(ctls)+1)
	r.mu.RLock()
	owner := r.owners[channel]
	r.mu.RUnlock()
	if owner != "" {
		out = append(out, owner)
	}
	if n := len(ctls); n > 0 {
		first := int(r.ctlFirst.Load()) % n
		for i := range n {
			out = append(out, ctls[(first+i)%n])
		}
	}
	return out
}

func (r *Router) preferControl(addr string) {
	for i, a := range r.cfg.Channelctls {
		if a == addr {
			r.ctlFirst.Store(uint32(i))
			return
		}
	}
}

func (r *Router) setOwner(channel, owner string) {
	r.mu.Lock()
	if len(r.owners) >= r.cfg.MaxRoutes {
		clear(r.owners)
	}
	r.owners[channel] = owner
	r.mu.Unlock()
}

func notOwner(st *status.Status) string {
	if st.Code() != codes.FailedPrecondition {
		return ""
	}
	for _, d := range st.Details() {
		if no, ok := d.(*channelctlv1.NotOwner); ok {
			return no.GetOwnerAddress()
		}
	}
	return ""
}

// finalError marks an error that retrying cannot change, whatever its code.
type finalError struct{ err error }

func (e finalError) Error() string { return e.err.Error() }

// GRPCStatus makes the wrapped status the error's status.
func (e finalError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// retryableControl reports whether a failed call to the control tier may succeed later.
func retryableControl(err error) bool {
	var fe finalError
	if errors.As(err, &fe) {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		return true
	}
	return false
}

type verdict int

const (
	verdictFail    verdict = iota // the error is the answer
	verdictFollow                 // NotLeader named the leader: try it now
	verdictRetry                  // re-resolve, naming the failed leader stale, after a pause
	verdictResolve                // the cached route is out of date: re-resolve now, once
)

// classifyReplica says what to do after a replica call failed with err.
func classifyReplica(err error, rt *route) (verdict, *replicav1.NotLeader) {
	st := status.Convert(err)
	switch st.Code() {
	case codes.FailedPrecondition:
		for _, d := range st.Details() {
			if nl, ok := d.(*replicav1.NotLeader); ok {
				if nl.GetLeaderNodeId() != 0 && nl.GetLeaderAddress() != "" && nl.GetLeaderNodeId() != rt.leader {
					return verdictFollow, nl
				}
				return verdictRetry, nil
			}
		}
		return verdictFail, nil
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted:
		if errors.Is(err, errNodeDead) {
			// The arbiter declared the leader dead: another is being elected, and the
			// channel control tier answers with it as soon as it is.
			return verdictResolve, nil
		}
		// Unreachable, overloaded, lease lapsed, leadership lost, or the attempt timed out
		// (the caller's own deadline ends the loop before this is acted on).
		return verdictRetry, nil
	case codes.NotFound:
		// channelctl knows the channel (it resolved it), so the cached route is stale: the
		// channel hibernated (or the replica restarted) since. Waiting would not change that;
		// the resolve that follows wakes it.
		return verdictResolve, nil
	}
	return verdictFail, nil
}

// giveUpCtx ends a call that ran out of attempts or time: Canceled when the caller cancelled,
// else Unavailable with a retry delay.
func (r *Router) giveUpCtx(ctx context.Context, channel string, took time.Duration, attempts int, last error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return status.FromContextError(ctx.Err()).Err()
	}
	return r.giveUp(channel, took, attempts, last)
}

func (r *Router) giveUp(channel string, took time.Duration, attempts int, last error) error {
	reason := "no error"
	if last != nil {
		st := status.Convert(last)
		reason = st.Code().String() + ": " + st.Message()
	}
	return r.unavailable("channel %s: no leader could serve the call after %d attempts in %v (last error %s)",
		channel, attempts, took.Round(time.Millisecond), reason)
}

// unavailable is an Unavailable status that suggests when to retry.
func (r *Router) unavailable(format string, args ...any) error {
	st, err := status.New(codes.Unavailable, fmt.Sprintf(format, args...)).WithDetails(
		&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)})
	if err != nil {
		return status.Errorf(codes.Unavailable, format, args...)
	}
	return st.Err()
}

// backoff is a jittered, doubling pause.
type backoff struct{ cur, max time.Duration }

func (r *Router) backoff() backoff { return backoff{cur: r.cfg.MinBackoff, max: r.cfg.MaxBackoff} }

// minAttemptTime is the least time worth starting another attempt with.
const minAttemptTime = 5 * time.Millisecond

// pause waits before the next attempt. It returns false, at once, when ctx ended or the
// deadline dl (none when zero) leaves too little time for another attempt after the pause.
func (b *backoff) pause(ctx context.Context, dl time.Time) bool {
	d := b.cur/2 + rand.N(b.cur/2+1)
	b.cur = min(2*b.cur, b.max)
	if !dl.IsZero() {
		rem := time.Until(dl)
		if rem < 2*minAttemptTime {
			return false
		}
		d = min(d, rem/2)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// connPool keeps one connection per address.
type connPool struct {
	dial   Dialer
	mu     sync.RWMutex
	conns  map[string]grpc.ClientConnInterface
	closed bool
}

func (p *connPool) get(addr string) (grpc.ClientConnInterface, error) {
	p.mu.RLock()
	cc, closed := p.conns[addr], p.closed
	p.mu.RUnlock()
	if cc != nil {
		return cc, nil
	}
	if closed {
		return nil, status.Error(codes.Unavailable, "gateway is shutting down")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc := p.conns[addr]; cc != nil {
		return cc, nil
	}
	if p.closed {
		return nil, status.Error(codes.Unavailable, "gateway is shutting down")
	}
	cc, err := p.dial(addr)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = cc
	return cc, nil
}

func (p *connPool) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var errs []error
	for addr, cc := range p.conns {
		if c, ok := cc.(io.Closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", addr, err))
			}
		}
		delete(p.conns, addr)
	}
	return errors.Join(errs...)
}
