package gateway

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// fakeConn is an in-memory grpc.ClientConnInterface: it hands each call to a function of the
// fake cluster by address and method, with no network and no encoding.
type fakeConn struct {
	addr string
	c    *fakeCluster
}

func (f *fakeConn) Invoke(ctx context.Context, method string, args, reply any, _ ...grpc.CallOption) error {
	out, err := f.c.unary(ctx, f.addr, method, args.(proto.Message))
	if err != nil {
		return err
	}
	proto.Merge(reply.(proto.Message), out)
	return nil
}

func (f *fakeConn) NewStream(ctx context.Context, _ *grpc.StreamDesc, method string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	return &fakeStream{ctx: ctx, conn: f, method: method}, nil
}

// fakeStream serves a server stream from a channel of items the fake cluster produces.
type fakeStream struct {
	ctx    context.Context
	conn   *fakeConn
	method string
	items  <-chan streamItem
}

type streamItem struct {
	resp proto.Message
	err  error
}

func (s *fakeStream) SendMsg(m any) error {
	s.items = s.conn.c.stream(s.ctx, s.conn.addr, s.method, m.(proto.Message))
	return nil
}

func (s *fakeStream) RecvMsg(m any) error {
	select {
	case it, ok := <-s.items:
		if !ok {
			return io.EOF
		}
		if it.err != nil {
			return it.err
		}
		proto.Merge(m.(proto.Message), it.resp)
		return nil
	case <-s.ctx.Done():
		return status.FromContextError(s.ctx.Err()).Err()
	}
}

func (s *fakeStream) Header() (metadata.MD, error) { return nil, nil }
func (s *fakeStream) Trailer() metadata.MD         { return nil }
func (s *fakeStream) CloseSend() error             { return nil }
func (s *fakeStream) Context() context.Context     { return s.ctx }

// fakeCluster is channelctls ("ctl1", "ctl2", ...) and replicas ("r1", "r2", ...) in memory.
// By default a channelctl resolves a channel to leaders[channel] and a replica appends when it
// is that leader, else answers NotLeader naming it (unless hints is false).
type fakeCluster struct {
	mu       sync.Mutex
	leaders  map[string]uint64
	hints    bool
	resolves []*channelctlv1.ResolveChannelRequest
	ctlCalls []string // addresses of the channelctls called, in order
	appends  map[string]int
	healthy  map[string]bool // channelctls whose health check answers SERVING
	// resolveFn, appendFn and subscribeFn, when set, replace the default behaviour.
	resolveFn   func(addr string, req *channelctlv1.ResolveChannelRequest) (*channelctlv1.ResolveChannelResponse, error)
	appendFn    func(addr string, req *replicav1.AppendRequest) (*replicav1.AppendResponse, error)
	subscribeFn func(ctx context.Context, addr string, req *replicav1.SubscribeRequest) <-chan streamItem
	// resolveDelay holds every resolve this long.
	resolveDelay time.Duration
	// held, when set, is told of each append that a replica in hold keeps until the call's
	// context ends, as a paused process does.
	hold map[string]bool
	held chan string
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{leaders: map[string]uint64{}, hints: true, appends: map[string]int{}, healthy: map[string]bool{}}
}

func replicaAddr(id uint64) string { return fmt.Sprintf("r%d", id) }

func (c *fakeCluster) dial(addr string) (grpc.ClientConnInterface, error) {
	return &fakeConn{addr: addr, c: c}, nil
}

func (c *fakeCluster) router(t *testing.T, cfg RouterConfig) *Router {
	t.Helper()
	if cfg.Channelctls == nil {
		cfg.Channelctls = []string{"ctl1"}
	}
	cfg.Dial = c.dial
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 5*time.Millisecond
	}
	r, err := NewRouter(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func (c *fakeCluster) setLeader(channel string, id uint64) {
	c.mu.Lock()
	c.leaders[channel] = id
	c.mu.Unlock()
}

func (c *fakeCluster) resolveCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.resolves)
}

func (c *fakeCluster) appendCount(addr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.appends[addr]
}

func (c *fakeCluster) unary(ctx context.Context, addr, method string, in proto.Message) (proto.Message, error) {
	switch req := in.(type) {
	case *channelctlv1.ResolveChannelRequest:
		c.mu.Lock()
		c.resolves = append(c.resolves, req)
		c.ctlCalls = append(c.ctlCalls, addr)
		fn, delay := c.resolveFn, c.resolveDelay
		c.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		if fn != nil {
			return fn(addr, req)
		}
		return c.defaultResolve(req)
	case *healthpb.HealthCheckRequest:
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.healthy[addr] || req.GetService() != channelctlv1.ChannelControlService_ServiceDesc.ServiceName {
			return nil, status.Error(codes.Unavailable, "connection refused")
		}
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	case *replicav1.AppendRequest:
		c.mu.Lock()
		c.appends[addr]++
		fn, hold := c.appendFn, c.hold[addr]
		c.mu.Unlock()
		if hold {
			c.held <- addr
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		if fn != nil {
			return fn(addr, req)
		}
		return c.defaultAppend(addr, req)
	}
	return nil, status.Errorf(codes.Unimplemented, "fake: %s", method)
}

func (c *fakeCluster) defaultResolve(req *channelctlv1.ResolveChannelRequest) (*channelctlv1.ResolveChannelResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.leaders[req.GetChannelId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "channel %s does not exist", req.GetChannelId())
	}
	return &channelctlv1.ResolveChannelResponse{ChannelId: req.GetChannelId(), GroupId: 7, LeaderNodeId: id,
		LeaderAddress: replicaAddr(id), LeaderTerm: 1}, nil
}

func notLeaderErr(channel string, leader uint64) error {
	nl := &replicav1.NotLeader{ChannelId: channel, LeaderNodeId: leader}
	if leader != 0 {
		nl.LeaderAddress = replicaAddr(leader)
	}
	st, _ := status.New(codes.FailedPrecondition, "not the leader").WithDetails(nl)
	return st.Err()
}

func (c *fakeCluster) defaultAppend(addr string, req *replicav1.AppendRequest) (*replicav1.AppendResponse, error) {
	c.mu.Lock()
	leader, hints := c.leaders[req.GetChannelId()], c.hints
	c.mu.Unlock()
	if addr != replicaAddr(leader) {
		if !hints {
			leader = 0
		}
		return nil, notLeaderErr(req.GetChannelId(), leader)
	}
	out := &replicav1.AppendResponse{}
	for i := range req.GetMessages() {
		out.Results = append(out.Results, &replicav1.AppendResult{Seq: uint64(i + 1)})
	}
	return out, nil
}

func (c *fakeCluster) stream(ctx context.Context, addr, _ string, in proto.Message) <-chan streamItem {
	c.mu.Lock()
	fn := c.subscribeFn
	c.mu.Unlock()
	if fn == nil {
		ch := make(chan streamItem, 1)
		ch <- streamItem{err: status.Error(codes.Unimplemented, "fake: no subscribe")}
		close(ch)
		return ch
	}
	return fn(ctx, addr, in.(*replicav1.SubscribeRequest))
}

var one = []*triarchv1.MessageInput{{ClientMsgId: "x", Payload: []byte("p")}}

func TestRouterCachesRoutes(t *testing.T) {
	c := newFakeCluster()
	c.setLeader("a", 1)
	c.setLeader("b", 2)
	r := c.router(t, RouterConfig{})
	ctx := context.Background()
	for range 3 {
		_, err := r.Append(ctx, "a", one)
		require.NoError(t, err)
	}
	require.Equal(t, 1, c.resolveCount(), "hits after the first miss")
	_, err := r.Read(ctx, "b", 1, 10)
	require.Error(t, err) // the fake does not read; the route was still resolved
	_, err = r.Append(ctx, "b", one)
	require.NoError(t, err)
	require.Equal(t, 2, c.resolveCount(), "one miss per channel")
	require.Equal(t, 3, c.appendCount("r1"))
	require.Equal(t, 1, c.appendCount("r2"))
}

func TestRouterFollowsNotLeaderHint(t *testing.T) {
	c := newFakeCluster()
	c.setLeader("a", 1)
	r := c.router(t, RouterConfig{})
	ctx := context.Background()
	_, err := r.Append(ctx, "a", one)
	require.NoError(t, err)

	c.setLeader("a", 2) // r1 now answers NotLeader naming r2
	_, err = r.Append(ctx, "a", one)
	require.NoError(t, err)
	require.Equal(t, 1, c.resolveCount(), "the hint was followed without asking channelctl")
	require.Equal(t, 2, c.appendCount("r1"))
	require.Equal(t, 1, c.appendCount("r2"))

	_, err = r.Append(ctx, "a", one)
	require.NoError(t, err)
	require.Equal(t, 2, c.appendCount("r1"), "the hint replaced the cached route")
	require.Equal(t, 2, c.appendCount("r2"))
}

func TestRouterReResolvesWithStaleLeaderWithoutHint(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(addr string) error
	}{
		{"not leader, no hint", func(string) error { return notLeaderErr("a", 0) }},
		{"unreachable", func(string) error { return status.Error(codes.Unavailable, "connection refused") }},
		{"group not loaded", func(string) error { return status.Error(codes.NotFound, "channel not loaded on this replica") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeCluster()
			c.setLeader("a", 1)
			c.appendFn = func(addr string, req *replicav1.AppendRequest) (*replicav1.AppendResponse, error) {
				if addr == "r1" {
					return nil, tc.fail(addr)
				}
				return c.defaultAppend(addr, req)
			}
			r := c.router(t, RouterConfig{})
			c.resolveFn = func(_ string, req *channelctlv1.ResolveChannelRequest) (*channelctlv1.ResolveChannelResponse, error) {
				if req.GetStaleLeaderNodeId() == 1 {
					c.setLeader("a", 3) // channelctl checks and elects another
				}
				return c.defaultResolve(req)
			}
			_, err := r.Append(context.Background(), "a", one)
			require.NoError(t, err)
			require.Equal(t, 2, c.resolveCount())
			require.Equal(t, uint64(0), c.resolves[0].GetStaleLeaderNodeId())
			require.Equal(t, uint64(1), c.resolves[1].GetStaleLeaderNodeId())
			require.Equal(t, 1, c.appendCount("r3"))
		})
	}
}

func requireUnavailableWithRetry(t *testing.T, err error) {
	t.Helper()
	st := status.Convert(err)
	require.Equal(t, codes.Unavailable, st.Code(), err)
	var ri *errdetails.RetryInfo
	for _, d := range st.Details() {
		if x, ok := d.(*errdetails.RetryInfo); ok {
			ri = x
		}
	}
	require.NotNil(t, ri, "Unavailable carries a RetryInfo")
}

func TestRouterRespectsDeadlines(t *testing.T) {
	c := newFakeCluster()
	c.setLeader("a", 1)
	c.appendFn = func(string, *replicav1.AppendRequest) (*replicav1.AppendResponse, error) {
		return nil, status.Error(codes.Unavailable, "overloaded")
	}
	r := c.router(t, RouterConfig{DefaultTimeout: 150 * time.Millisecond, MaxAttempts: 1 << 20})

	// The caller's deadline: the answer is the router's own (Unavailable, saying why and when
	// to retry), not the caller's DeadlineExceeded. Only lower bounds on time are asserted: a
	// loaded machine can make any call slower, never faster.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Append(ctx, "a", one)
	took := time.Since(start)
	requireUnavailableWithRetry(t, err)
	require.Contains(t, status.Convert(err).Message(), "overloaded")
	require.Greater(t, took, 200*time.Millisecond, "kept retrying until close to the deadline")
	require.Greater(t, c.appendCount("r1"), 1, "retried")

	// No deadline: DefaultTimeout ends the call (MaxAttempts alone would take hours); the upper
	// bound only tells an ended call from a hung one.
	start = time.Now()
	_, err = r.Append(context.Background(), "a", one)
	took = time.Since(start)
	requireUnavailableWithRetry(t, err)
	require.Greater(t, took, 100*time.Millisecond)
	require.Less(t, took, 30*time.Second, "the call ended")

	// A cancelled caller gets Canceled, at once.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err = r.Append(ctx, "a", one)
	require.Equal(t, codes.Canceled, status.Code(err), err)

	// A hung replica costs one AttemptTimeout, then the call moves on.
	c2 := newFakeCluster()
	c2.setLeader("a", 1)
	r2 := c2.router(t, RouterConfig{AttemptTimeout: 50 * time.Millisecond})
	c2.resolveFn = func(_ string, req *channelctlv1.ResolveChannelRequest) (*channelctlv1.ResolveChannelResponse, error) {
		if req.GetStaleLeaderNodeId() == 1 {
			c2.setLeader("a", 2)
		}
		return c2.defaultResolve(req)
	}
	c2.appendFn = func(addr string, req *replicav1.AppendRequest) (*replicav1.AppendResponse, error) {
		if addr == "r1" {
			return nil, status.Error(codes.DeadlineExceeded, "hung") // what a timed-out attempt returns
		}
		return c2.defaultAppend(addr, req)
	}
	_, err = r2.Append(context.Background(), "a", one)
	require.NoError(t, err)
	require.Equal(t, 1, c2.appendCount("r2"))
}

func TestRouterRetryBudget(t *testing.T) {
	c := newFakeCluster()
	c.setLeader("a", 1)
	c.appendFn = func(string, *replicav1.AppendRequest) (*replicav1.AppendResponse, error) {
		return nil, status.Error(codes.Unavailable, "overloaded")
	}
	r := c.router(t, RouterConfig{MaxAttempts: 3})
	_, err := r.Append(context.Background(), "a", one)
	requireUnavailableWithRetry(t, err)
	require.Contains(t, status.Convert(err).Message(), "after 3 attempts")
	require.Equal(t, 3, c.appendCount("r1"))

	// Hints count against the budget too: two replicas naming each other stop bouncing.
	c2 := newFakeCluster()
	c2.setLeader("a", 1)
	c2.appendFn = func(addr string, _ *replicav1.AppendRequest) (*replicav1.AppendResponse, error) {
		if addr == "r1" {
			return nil, notLeaderErr("a", 2)
		}
		return nil, notLeaderErr("a", 1)
	}
	r2 := c2.router(t, RouterConfig{MaxAttempts: 8})
	_, err = r2.Append(context.Background(), "a", one)
	requireUnavailableWithRetry(t, err)
	require.Equal(t, 8, c2.appendCount("r1")+c2.appendCount("r2"))
}

func TestRouterDoesNotRetryPermanentErrors(t *testing.T) {
	c := newFakeCluster()
	c.setLeader("a", 1)
	c.appendFn = func(string, *replicav1.AppendRequest) (*replicav1.AppendResponse, error) {
		return nil, status.Error(codes.InvalidArgument, "bad")
	}
	r := c.router(t, RouterConfig{})
	_, err := r.Append(context.Background(), "a", one)
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Equal(t, 1, c.appendCount("r1"))

	_, err = r.Read(context.Background(), "missing", 1, 1)
	require.Equal(t, codes.NotFound, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "does not exist")
	require.Equal(t, 2, c.resolveCount(), "one resolve for a, one for missing")
}

func TestRouterSharesOneResolveAmongConcurrentCallers(t *testing.T) {
	c := newFakeCluster()
	c.setLeader("hot", 1)
	c.resolveDelay = 30 * time.Millisecond
	r := c.router(t, RouterConfig{})
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() {
			_, err := r.Append(context.Background(), "hot", one)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 1, c.resolveCount())
	require.Equal(t, 50, c.appendCount("r1"))
}

func (r *Router) cached(channel string) *route {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.routes[channel]
}

func TestRouterChannelctlFailoverAndNotOwner(t *testing.T) {
	c := newFakeCluster()
	for _, ch := range []string{"a", "b", "c"} {
		c.setLeader(ch, 1)
	}
	c.resolveFn = func(addr string, req *channelctlv1.ResolveChannelRequest) (*channelctlv1.ResolveChannelResponse, error) {
		switch {
		case addr == "ctl1", addr == "ctl2" && req.GetChannelId() != "a":
			return nil, status.Error(codes.Unavailable, "down")
		case addr == "ctl2":
			st, _ := status.New(codes.FailedPrecondition, "not mine").WithDetails(&channelctlv1.NotOwner{OwnerNodeId: 9, OwnerAddress: "ctl9"})
			return nil, st.Err()
		}
		return c.defaultResolve(req)
	}
	r := c.router(t, RouterConfig{Channelctls: []string{"ctl1", "ctl2", "ctl3"}})
	ctx := context.Background()
	_, err := r.Append(ctx, "a", one)
	require.NoError(t, err)
	require.Equal(t, []string{"ctl1", "ctl2", "ctl9"}, c.ctlCalls, "the down one, the non-owner, then the owner it named")

	// The owner is remembered for its channel.
	r.invalidate(r.cached("a"))
	_, err = r.Append(ctx, "a", one)
	require.NoError(t, err)
	require.Equal(t, []string{"ctl9"}, c.ctlCalls[3:])

	// For other channels the configured ones are asked in turn, the last that answered first.
	_, err = r.Append(ctx, "b", one)
	require.NoError(t, err)
	require.Equal(t, []string{"ctl1", "ctl2", "ctl3"}, c.ctlCalls[4:])
	_, err = r.Append(ctx, "c", one)
	require.NoError(t, err)
	require.Equal(t, []string{"ctl3"}, c.ctlCalls[7:])

	// Nothing configured: a clear Unavailable.
	r0 := c.router(t, RouterConfig{Channelctls: []string{}})
	_, err = r0.Append(ctx, "a", one)
	requireUnavailableWithRetry(t, err)
	require.Contains(t, status.Convert(err).Message(), "no channelctl is configured")
}

func msgsFrom(from, to uint64) *replicav1.SubscribeResponse {
	out := &replicav1.SubscribeResponse{}
	for s := from; s <= to; s++ {
		out.Messages = append(out.Messages, &triarchv1.Message{ChannelId: "a", Seq: s})
	}
	return out
}

func TestRouterSubscribeResumesWithoutGapOrDuplicate(t *testing.T) {
	c := newFakeCluster()
	c.setLeader("a", 1)
	var froms sync.Map // addr -> []uint64
	c.subscribeFn = func(ctx context.Context, addr string, req *replicav1.SubscribeRequest) <-chan streamItem {
		v, _ := froms.LoadOrStore(addr, &[]uint64{})
		*(v.(*[]uint64)) = append(*(v.(*[]uint64)), req.GetFromSeq())
		ch := make(chan streamItem, 8)
		switch addr {
		case "r1": // 1..3, then the leader dies
			ch <- streamItem{resp: msgsFrom(1, 2)}
			ch <- streamItem{resp: msgsFrom(3, 3)}
			ch <- streamItem{err: status.Error(codes.Unavailable, "leader stopped")}
			c.setLeader("a", 2)
			close(ch)
		case "r2": // resends 2..3 (below the resume point), then 4..5, then a gap (7) it must not pass on
			ch <- streamItem{resp: msgsFrom(2, 5)}
			ch <- streamItem{resp: &replicav1.SubscribeResponse{Messages: []*triarchv1.Message{{Seq: 6}, {Seq: 8}}}}
			c.setLeader("a", 3)
			close(ch)
		case "r3":
			ch <- streamItem{resp: msgsFrom(7, 9)}
		}
		return ch
	}
	r := c.router(t, RouterConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []uint64
	opened := 0
	err := r.Subscribe(ctx, "a", 0, Subscription{
		Opened: func() { opened++ },
		Deliver: func(msgs []*triarchv1.Message) error {
			for _, m := range msgs {
				got = append(got, m.GetSeq())
			}
			if len(got) >= 9 {
				cancel()
			}
			return nil
		},
	})
	require.NoError(t, err, "a cancelled subscription ends cleanly")
	require.Equal(t, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9}, got)
	require.Equal(t, 1, opened)
	for addr, want := range map[string][]uint64{"r1": {1}, "r2": {4}, "r3": {7}} {
		v, ok := froms.Load(addr)
		require.True(t, ok, addr)
		require.Equal(t, want, *(v.(*[]uint64)), addr)
	}
}

func TestRouterSubscribeEnds(t *testing.T) {
	c := newFakeCluster()
	c.setLeader("a", 1)
	c.subscribeFn = func(context.Context, string, *replicav1.SubscribeRequest) <-chan streamItem {
		ch := make(chan streamItem, 1)
		ch <- streamItem{err: status.Error(codes.Unavailable, "down")}
		close(ch)
		return ch
	}
	r := c.router(t, RouterConfig{DefaultTimeout: 100 * time.Millisecond})
	deliver := func([]*triarchv1.Message) error { return nil }

	// No leader for DefaultTimeout: Unavailable.
	err := r.Subscribe(context.Background(), "a", 1, Subscription{Deliver: deliver})
	requireUnavailableWithRetry(t, err)

	// An unknown channel: NotFound before Opened.
	opened := false
	err = r.Subscribe(context.Background(), "nope", 1, Subscription{Opened: func() { opened = true }, Deliver: deliver})
	require.Equal(t, codes.NotFound, status.Code(err))
	require.False(t, opened)

	// A failing Deliver ends it with its own error.
	c.subscribeFn = func(context.Context, string, *replicav1.SubscribeRequest) <-chan streamItem {
		ch := make(chan streamItem, 1)
		ch <- streamItem{resp: msgsFrom(1, 1)}
		return ch
	}
	boom := fmt.Errorf("client went away")
	err = r.Subscribe(context.Background(), "a", 1, Subscription{Deliver: func([]*triarchv1.Message) error { return boom }})
	require.ErrorIs(t, err, boom)

	// StopStreams ends it with Unavailable, naming where to resume.
	c.subscribeFn = func(context.Context, string, *replicav1.SubscribeRequest) <-chan streamItem {
		ch := make(chan streamItem, 1)
		ch <- streamItem{resp: msgsFrom(1, 4)}
		return ch
	}
	done := make(chan error, 1)
	go func() {
		done <- r.Subscribe(context.Background(), "a", 1, Subscription{Deliver: func([]*triarchv1.Message) error {
			r.StopStreams()
			return nil
		}})
	}()
	select {
	case err := <-done:
		requireUnavailableWithRetry(t, err)
		require.True(t, strings.Contains(status.Convert(err).Message(), "from seq 5"), err)
	case <-time.After(5 * time.Second):
		t.Fatal("StopStreams did not end the subscription")
	}
}

func TestRouterReadyWhenAChannelctlServes(t *testing.T) {
	c := newFakeCluster()
	r := c.router(t, RouterConfig{Channelctls: []string{"ctl1", "ctl2"}})
	err := r.Ready(context.Background())
	require.ErrorContains(t, err, "no channelctl is serving")
	require.ErrorContains(t, err, "ctl2")
	c.mu.Lock()
	c.healthy["ctl2"] = true
	c.mu.Unlock()
	require.NoError(t, r.Ready(context.Background()))

	r0 := c.router(t, RouterConfig{Channelctls: []string{}})
	require.ErrorContains(t, r0.Ready(context.Background()), "--channelctls")
}

// A cached leader that no longer has the group loaded (the channel hibernated) is re-resolved
// at once. With an hour of backoff any pause lasts half the time left before the deadline
// (60 s here), so a call that returns within 30 s cannot have paused: the margin is tens of
// seconds against milliseconds, not a speed assertion.
func TestRouterReResolvesAtOnceWhenTheGroupIsNotLoaded(t *testing.T) {
	c := newFakeCluster()
	c.setLeader("a", 1)
	c.appendFn = func(addr string, req *replicav1.AppendRequest) (*replicav1.AppendResponse, error) {
		if addr == "r1" {
			return nil, status.Error(codes.NotFound, "channel not loaded on this replica")
		}
		return c.defaultAppend(addr, req)
	}
	c.resolveFn = func(_ string, req *channelctlv1.ResolveChannelRequest) (*channelctlv1.ResolveChannelResponse, error) {
		if req.GetStaleLeaderNodeId() == 1 {
			c.setLeader("a", 2) // woken, with another leader
		}
		return c.defaultResolve(req)
	}
	r := c.router(t, RouterConfig{MinBackoff: time.Hour, MaxBackoff: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	_, err := r.Append(ctx, "a", one)
	require.NoError(t, err)
	require.Less(t, time.Since(start), 30*time.Second, "the call paused before re-resolving")
	require.Equal(t, 1, c.appendCount("r2"))
}
