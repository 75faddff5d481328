package nodelease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// Arbiter is the part of the arbiter client the keeper uses.
type Arbiter interface {
	RegisterNode(ctx context.Context, req *arbiterv1.RegisterNodeRequest) (*arbiterv1.RegisterNodeResponse, error)
	Heartbeat(ctx context.Context, req *arbiterv1.HeartbeatRequest) (*arbiterv1.HeartbeatResponse, error)
}

// Config configures a Keeper.
type Config struct {
	Arbiter Arbiter
	NodeID  uint64
	Role    arbiterv1.NodeRole
	Address string
	Zone    string
	// StoreID identifies the node's data store (arbiterv1.Node.store_id); every registration
	// names it. 0 for nodes without one (channelctls).
	StoreID uint64
	// Load and Peers are sampled for every heartbeat; either may be nil.
	Load  func() *arbiterv1.NodeLoad
	Peers func() []*arbiterv1.PeerReachability
	Log   *slog.Logger
	// Healthy, when set, is asked before every heartbeat: while it says false the node sends
	// none, so its lease runs out at the arbiter as a crashed node's would, and Valid says
	// false at once. A replica whose disk stopped returning its writes says so (see
	// services/replica/diskstall.go): it cannot commit anything, so it must not count as
	// alive, though its process still runs. Nil: always healthy.
	Healthy func() bool
	// Now is the clock (time.Now by default); tests inject one.
	Now func() time.Time
	// RetryInterval is the first pause after a failed registration (default 200 ms); it
	// doubles up to 5 s while the arbiter stays unreachable.
	RetryInterval time.Duration
}

// maxRetryInterval caps the backoff between failed registrations.
const maxRetryInterval = 5 * time.Second

// minInterval bounds how often a node heartbeats, whatever the arbiter asks.
const minInterval = 10 * time.Millisecond

// Keeper registers a node and keeps its lease renewed.
type Keeper struct {
	cfg Config

	mu          sync.Mutex
	incarnation uint64
	ttl         time.Duration
	interval    time.Duration
	renewedAt   time.Time // send time of the last successful heartbeat or registration
	lastRTT     time.Duration
	state       arbiterv1.NodeState
	registered  chan struct{}
}

// New returns a keeper; Run starts it.
func New(cfg Config) *Keeper {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 200 * time.Millisecond
	}
	return &Keeper{cfg: cfg, registered: make(chan struct{})}
}

// Registered is closed once the node has registered.
func (k *Keeper) Registered() <-chan struct{} { return k.registered }

// Valid reports whether the lease is still valid at now, by the node's own conservative view.
// An unhealthy node (Config.Healthy) holds no lease, whatever it renewed before.
func (k *Keeper) Valid(now time.Time) bool {
	if !k.healthy() {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return !k.renewedAt.IsZero() && now.Before(k.renewedAt.Add(k.ttl))
}

// State is the node state the arbiter reported last.
func (k *Keeper) State() arbiterv1.NodeState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.state
}

// Interval is the heartbeat interval the arbiter asked for last.
func (k *Keeper) Interval() time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.interval
}

// Run registers the node, then heartbeats until ctx ends. A failed heartbeat is retried at the
// next interval; the lease simply runs out if the arbiter stays unreachable. If the arbiter
// forgot the node (a restart of the whole arbiter from an old state, or the node was declared
// dead and must come back with a new incarnation), it registers again.
func (k *Keeper) Run(ctx context.Context) error {
	if err := k.register(ctx); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(k.Interval()):
		}
		if !k.healthy() {
			// No renewal: the lease runs out at the arbiter, which then declares the node dead
			// (once its peers, which a stalled node stops talking to, confirm) as it would a
			// crashed one. Heartbeats resume, or the node registers again, once it is healthy.
			continue
		}
		err := k.heartbeat(ctx)
		if err != nil {
			k.cfg.Log.WarnContext(ctx, "heartbeat failed", "err", err)
		}
		// The arbiter forgot this node or this incarnation (NotFound / FailedPrecondition), or
		// declared it dead: only a new registration makes it alive again.
		if c := status.Code(errors.Unwrap(err)); c == codes.NotFound || c == codes.FailedPrecondition ||
			k.State() == arbiterv1.NodeState_NODE_STATE_DEAD {
			k.cfg.Log.WarnContext(ctx, "registering again", "state", k.State(), "err", err)
			if err := k.register(ctx); err != nil {
				return err
			}
		}
	}
}

func (k *Keeper) healthy() bool { return k.cfg.Healthy == nil || k.cfg.Healthy() }

func (k *Keeper) register(ctx context.Context) error {
	req := &arbiterv1.RegisterNodeRequest{NodeId: k.cfg.NodeID, Role: k.cfg.Role, Address: k.cfg.Address, Zone: k.cfg.Zone,
		StoreId: k.cfg.StoreID}
	wait := k.cfg.RetryInterval
	for {
		sent := k.cfg.Now()
		resp, err := k.cfg.Arbiter.RegisterNode(ctx, req)
		if err == nil {
			k.mu.Lock()
			k.incarnation = resp.GetNode().GetIncarnation()
			k.apply(sent, resp.GetLeaseTtl(), resp.GetHeartbeatInterval(), resp.GetNode().GetState())
			k.mu.Unlock()
			select {
			case <-k.registered:
			default:
				close(k.registered)
			}
			k.cfg.Log.InfoContext(ctx, "registered with the arbiter", "incarnation", resp.GetNode().GetIncarnation(),
				"lease_ttl", k.ttl, "heartbeat_interval", k.interval)
			return nil
		}
		k.cfg.Log.WarnContext(ctx, "registration failed", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodelease: register node %d: %w", k.cfg.NodeID, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, maxRetryInterval)
	}
}

func (k *Keeper) heartbeat(ctx context.Context) error {
	k.mu.Lock()
	req := &arbiterv1.HeartbeatRequest{NodeId: k.cfg.NodeID, Incarnation: k.incarnation, LastRtt: durationpb.New(k.lastRTT)}
	timeout := k.ttl
	k.mu.Unlock()
	if k.cfg.Load != nil {
		req.Load = k.cfg.Load()
	}
	if k.cfg.Peers != nil {
		req.Peers = k.cfg.Peers()
	}
	// A heartbeat answered after the lease ran out renews nothing useful; don't wait longer.
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sent := k.cfg.Now()
	resp, err := k.cfg.Arbiter.Heartbeat(hctx, req)
	if err != nil {
		return fmt.Errorf("nodelease: heartbeat: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.lastRTT = k.cfg.Now().Sub(sent)
	k.apply(sent, resp.GetLeaseTtl(), resp.GetHeartbeatInterval(), resp.GetState())
	return nil
}

// apply records an answer of the arbiter; mu is held. An answer saying the node is DEAD is
// no renewal: the arbiter has given the lease up and may already be re-electing the node's
// channels, so what was left of it ends now, until a new registration.
func (k *Keeper) apply(sent time.Time, ttl, interval *durationpb.Duration, state arbiterv1.NodeState) {
	switch {
	case state == arbiterv1.NodeState_NODE_STATE_DEAD:
		k.renewedAt = time.Time{}
	case sent.After(k.renewedAt):
		k.renewedAt = sent
	}
	k.ttl = ttl.AsDuration()
	k.interval = interval.AsDuration()
	if k.interval <= 0 {
		k.interval = k.ttl / 4
	}
	// Never spin, whatever the arbiter says.
	k.interval = max(k.interval, minInterval)
	k.state = state
}
