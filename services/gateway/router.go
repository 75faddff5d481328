package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

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
	// Now is the clock the router measures its time budgets with (time.Now by default): a
	// call's deadline when the caller set none, a subscription's outage. The deadlines it
	// derives are set on contexts, which run on real time, so a clock given here must keep
	// real time's pace; a test may move it ahead.
	Now func() time.Time
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
	if c.Now == nil {
		c.Now = time.Now
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

const (
	verdictFail    verdict = iota // the error is the answer
	verdictFollow                 // NotLeader named the leader: try it now
	verdictRetry                  // re-resolve, naming the failed leader stale, after a pause
	verdictResolve                // the cached route is out of date: re-resolve now, once
)
