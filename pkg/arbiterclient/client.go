package arbiterclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/pkg/members"
)

// Dialer opens a connection to one arbiter member (grpcx.Dial in production).
type Dialer func(addr string) (*grpc.ClientConn, error)

// Config configures a Client.
type Config struct {
	// Members are the arbiter members' addresses.
	Members []string
	Dial    Dialer
	Log     *slog.Logger
	// RetryBackoff is the pause after every member has been tried once (default 50 ms).
	RetryBackoff time.Duration
	// CallTimeout bounds one attempt on one member (default 2 s), so a hung member does not eat
	// the whole deadline.
	CallTimeout time.Duration
	// After is the clock RetryBackoff is waited on, as time.After (the default) does; tests
	// drive it by hand.
	After func(d time.Duration) <-chan time.Time
}

// Client calls the arbiter cluster. It is safe for concurrent use.
type Client struct {
	cfg Config

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	leader string // the member to try first
}

// New returns a client of the given members. It dials lazily.
func New(cfg Config) (*Client, error) {
	if len(cfg.Members) == 0 {
		return nil, errors.New("arbiterclient: no arbiter members given")
	}
	if cfg.Dial == nil {
		return nil, errors.New("arbiterclient: no dialer")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 50 * time.Millisecond
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 2 * time.Second
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	return &Client{cfg: cfg, conns: make(map[string]*grpc.ClientConn), leader: cfg.Members[0]}, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, conn := range c.conns {
		errs = append(errs, conn.Close())
	}
	c.conns = map[string]*grpc.ClientConn{}
	return errors.Join(errs...)
}

func (c *Client) stub(addr string) (arbiterv1.ArbiterServiceClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	conn, ok := c.conns[addr]
	if !ok {
		var err error
		if conn, err = c.cfg.Dial(addr); err != nil {
			return nil, fmt.Errorf("arbiterclient: dial %s: %w", addr, err)
		}
		c.conns[addr] = conn
	}
	return arbiterv1.NewArbiterServiceClient(conn), nil
}

// order returns the members to try: the believed leader first, then the others.
func (c *Client) order() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return members.LeaderFirst(c.leader, c.cfg.Members, 0)
}

func (c *Client) setLeader(addr string) {
	c.mu.Lock()
	c.leader = addr
	c.mu.Unlock()
}

// Leader is the member the client currently sends to first.
func (c *Client) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

// notLeaderHint returns the leader named by a NotLeader detail, if any.
func notLeaderHint(err error) (addr string, isNotLeader bool) {
	st, ok := status.FromError(err)
	if !ok {
		return "", false
	}
	for _, d := range st.Details() {
		if nl, ok := d.(*arbiterv1.NotLeader); ok {
			return nl.GetLeaderAddress(), true
		}
	}
	return "", false
}

// retryable says whether trying another member (or the same one later) may succeed. Every
// arbiter call is safe to repeat: registration, heartbeats, creation and reads are idempotent,
// and a compare-and-set that took effect is refused on repetition with the channel's current
// state, which tells the caller what happened.
func retryable(err error) bool {
	if _, nl := notLeaderHint(err); nl {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	case codes.ResourceExhausted:
		// Overload that asks to come back later (RetryInfo) passes; a quota, such as the
		// cluster's channel cap, does not.
		for _, d := range status.Convert(err).Details() {
			if _, ok := d.(*errdetails.RetryInfo); ok {
				return true
			}
		}
	}
	return false
}

// do runs call on the leader, following hints and trying members until it succeeds, fails
// for a reason retrying cannot fix, or ctx ends.
func (c *Client) do(ctx context.Context, call func(ctx context.Context, s arbiterv1.ArbiterServiceClient) error) error {
	var lastErr error
	for round := 0; ; round++ {
		q := members.NewQueue(c.order())
		for addr, ok := q.Next(); ok; addr, ok = q.Next() {
			s, err := c.stub(addr)
			if err == nil {
				actx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
				err = call(actx, s)
				cancel()
				if err == nil {
					c.setLeader(addr)
					return nil
				}
			}
			if ctx.Err() != nil {
				return errors.Join(err, ctx.Err())
			}
			if !retryable(err) {
				return err
			}
			lastErr = err
			hint, _ := notLeaderHint(err)
			q.Redirect(hint)
		}
		c.cfg.Log.Debug("arbiterclient: no member answered, retrying", "round", round, "err", lastErr)
		select {
		case <-ctx.Done():
			return fmt.Errorf("arbiterclient: %w (last error: %v)", ctx.Err(), lastErr)
		case <-c.cfg.After(c.cfg.RetryBackoff):
		}
	}
}

// call is do for a unary method with a typed response.
func call[Req, Resp any](ctx context.Context, c *Client, req Req,
	m func(arbiterv1.ArbiterServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error)) (Resp, error) {
	var resp Resp
	err := c.do(ctx, func(ctx context.Context, s arbiterv1.ArbiterServiceClient) error {
		var err error
		resp, err = m(s, ctx, req)
		return err
	})
	return resp, err
}

// RegisterNode registers (or re-registers) a node.
func (c *Client) RegisterNode(ctx context.Context, req *arbiterv1.RegisterNodeRequest) (*arbiterv1.RegisterNodeResponse, error) {
	return call(ctx, c, req, arbiterv1.ArbiterServiceClient.RegisterNode)
}

// Heartbeat renews a node's lease.
func (c *Client) Heartbeat(ctx context.Context, req *arbiterv1.HeartbeatRequest) (*arbiterv1.HeartbeatResponse, error) {
	return call(ctx, c, req, arbiterv1.ArbiterServiceClient.Heartbeat)
}

// DrainNode marks a node draining.
func (c *Client) DrainNode(ctx context.Context, req *arbiterv1.DrainNodeRequest) (*arbiterv1.DrainNodeResponse, error) {
	return call(ctx, c, req, arbiterv1.ArbiterServiceClient.DrainNode)
}

// CreateChannel creates (or returns) a channel.
func (c *Client) CreateChannel(ctx context.Context, req *arbiterv1.CreateChannelRequest) (*arbiterv1.CreateChannelResponse, error) {
	return call(ctx, c, req, arbiterv1.ArbiterServiceClient.CreateChannel)
}

// GetChannel returns one channel.
func (c *Client) GetChannel(ctx context.Context, req *arbiterv1.GetChannelRequest) (*arbiterv1.GetChannelResponse, error) {
	return call(ctx, c, req, arbiterv1.ArbiterServiceClient.GetChannel)
}

// ListChannels returns one page of channels.
func (c *Client) ListChannels(ctx context.Context, req *arbiterv1.ListChannelsRequest) (*arbiterv1.ListChannelsResponse, error) {
	return call(ctx, c, req, arbiterv1.ArbiterServiceClient.ListChannels)
}

// CompareAndSetChannels applies a batch of channel changes.
func (c *Client) CompareAndSetChannels(ctx context.Context, req *arbiterv1.CompareAndSetChannelsRequest) (*arbiterv1.CompareAndSetChannelsResponse, error) {
	return call(ctx, c, req, arbiterv1.ArbiterServiceClient.CompareAndSetChannels)
}

// ListSlots returns the slot owners.
func (c *Client) ListSlots(ctx context.Context, req *arbiterv1.ListSlotsRequest) (*arbiterv1.ListSlotsResponse, error) {
	return call(ctx, c, req, arbiterv1.ArbiterServiceClient.ListSlots)
}

// GetClusterStatus reports the cluster.
func (c *Client) GetClusterStatus(ctx context.Context, req *arbiterv1.GetClusterStatusRequest) (*arbiterv1.GetClusterStatusResponse, error) {
	return call(ctx, c, req, arbiterv1.ArbiterServiceClient.GetClusterStatus)
}

// ErrWatchCompacted is returned by Watch when the revision to resume from is older than what
// the arbiter keeps: the watcher must list the current state and watch from its revision.
var ErrWatchCompacted = errors.New("arbiterclient: watch revision compacted; re-list and watch again")

// Watch streams changes after req.FromRevision to fn until ctx ends or fn returns an error.
// When a stream breaks (a member fails, the leader changes), it reopens on another member from
// the last revision it delivered, so fn sees every revision exactly once and in order.
func (c *Client) Watch(ctx context.Context, req *arbiterv1.WatchRequest, fn func(*arbiterv1.WatchResponse) error) error {
	from := req.GetFromRevision()
	for {
		err := c.do(ctx, func(_ context.Context, s arbiterv1.ArbiterServiceClient) error {
			r := proto.CloneOf(req)
			r.FromRevision = from
			stream, err := s.Watch(ctx, r)
			if err != nil {
				return err
			}
			for {
				resp, err := stream.Recv()
				if err != nil {
					if errors.Is(err, io.EOF) {
						return status.Error(codes.Unavailable, "watch stream ended")
					}
					return err
				}
				var fresh []*arbiterv1.WatchEvent
				for _, ev := range resp.GetEvents() {
					if ev.GetRevision() > from {
						fresh = append(fresh, ev)
					}
				}
				if resp.GetRevision() <= from && len(fresh) == 0 {
					continue
				}
				if err := fn(&arbiterv1.WatchResponse{Events: fresh, Revision: max(resp.GetRevision(), from)}); err != nil {
					return &stopError{err}
				}
				from = max(resp.GetRevision(), from)
			}
		})
		var stop *stopError
		switch {
		case errors.As(err, &stop):
			return stop.err
		case status.Code(err) == codes.OutOfRange:
			return fmt.Errorf("%w: %v", ErrWatchCompacted, err)
		case err != nil:
			return err
		}
	}
}

// stopError carries fn's error out of the retry loop untouched.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }
