package arbiterclient

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/internal/testutil"
)

// fakeCluster is a set of arbiter members in which only the leader answers.
type fakeCluster struct {
	mu      sync.Mutex
	leader  int
	members []*fakeMember
	events  []*arbiterv1.WatchEvent // revision i+1 at index i
}

type fakeMember struct {
	arbiterv1.UnimplementedArbiterServiceServer
	c     *fakeCluster
	idx   int
	addr  string
	srv   *grpc.Server
	calls atomic.Int64
	// breakAfter ends a watch stream with Unavailable after that many events (0: never).
	breakAfter int
}

func startCluster(t *testing.T, n int) *fakeCluster {
	t.Helper()
	c := &fakeCluster{}
	for i := range n {
		lis := testutil.Listen(t)
		m := &fakeMember{c: c, idx: i, addr: lis.Addr().String(), srv: grpc.NewServer()}
		arbiterv1.RegisterArbiterServiceServer(m.srv, m)
		go func() { _ = m.srv.Serve(lis) }()
		t.Cleanup(m.srv.Stop)
		c.members = append(c.members, m)
	}
	return c
}

func (c *fakeCluster) addrs() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.addr
	}
	return out
}

func (c *fakeCluster) setLeader(i int) {
	c.mu.Lock()
	c.leader = i
	c.mu.Unlock()
}

// refuse returns NotLeader with a hint when this member does not lead.
func (m *fakeMember) refuse() error {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	if m.c.leader == m.idx {
		return nil
	}
	st, _ := status.New(codes.Unavailable, "not the leader").WithDetails(
		&arbiterv1.NotLeader{LeaderId: uint64(m.c.leader + 1), LeaderAddress: m.c.members[m.c.leader].addr})
	return st.Err()
}

func (m *fakeMember) CreateChannel(_ context.Context, req *arbiterv1.CreateChannelRequest) (*arbiterv1.CreateChannelResponse, error) {
	m.calls.Add(1)
	if err := m.refuse(); err != nil {
		return nil, err
	}
	if req.GetChannelId() == "bad id" {
		return nil, status.Error(codes.InvalidArgument, "invalid channel id")
	}
	return &arbiterv1.CreateChannelResponse{Channel: &arbiterv1.Channel{ChannelId: req.GetChannelId()}, Created: true}, nil
}

func (m *fakeMember) Watch(req *arbiterv1.WatchRequest, stream grpc.ServerStreamingServer[arbiterv1.WatchResponse]) error {
	m.calls.Add(1)
	m.c.mu.Lock()
	events := m.c.events
	m.c.mu.Unlock()
	if req.GetFromRevision() > 0 && req.GetFromRevision() < 3 && len(events) > 0 && m.breakAfter < 0 {
		return status.Error(codes.OutOfRange, "revision 1 compacted, oldest is 3")
	}
	sent := 0
	for i := req.GetFromRevision(); i < uint64(len(events)); i++ {
		// Resend one old event now and then: the client must drop what it already delivered.
		evs := []*arbiterv1.WatchEvent{events[i]}
		if i > 0 && i%5 == 0 {
			evs = append([]*arbiterv1.WatchEvent{events[i-1]}, evs...)
		}
		if err := stream.Send(&arbiterv1.WatchResponse{Events: evs, Revision: i + 1}); err != nil {
			return err
		}
		sent++
		if m.breakAfter > 0 && sent == m.breakAfter {
			return status.Error(codes.Unavailable, "member going away")
		}
	}
	<-stream.Context().Done()
	return nil
}

func newClient(t *testing.T, members []string) *Client {
	t.Helper()
	c, err := New(Config{Members: members, RetryBackoff: time.Millisecond, CallTimeout: time.Second,
		Dial: func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestFollowsLeaderHint(t *testing.T) {
	fc := startCluster(t, 3)
	fc.setLeader(2)
	c := newClient(t, fc.addrs())
	resp, err := c.CreateChannel(testutil.Context(t, 20*time.Second), &arbiterv1.CreateChannelRequest{ChannelId: "general", ReplicationFactor: 3})
	require.NoError(t, err)
	require.Equal(t, "general", resp.GetChannel().GetChannelId())
	require.Equal(t, fc.members[2].addr, c.Leader())
	// The hint took it straight from member 0 to member 2: member 1 was never asked.
	require.Equal(t, int64(1), fc.members[0].calls.Load())
	require.Zero(t, fc.members[1].calls.Load())

	_, err = c.CreateChannel(testutil.Context(t, 20*time.Second), &arbiterv1.CreateChannelRequest{ChannelId: "random"})
	require.NoError(t, err)
	require.Equal(t, int64(2), fc.members[2].calls.Load(), "the known leader is asked first")
	require.Equal(t, int64(1), fc.members[0].calls.Load())
}

func TestSurvivesLeaderLoss(t *testing.T) {
	fc := startCluster(t, 3)
	c := newClient(t, fc.addrs())
	_, err := c.CreateChannel(testutil.Context(t, 20*time.Second), &arbiterv1.CreateChannelRequest{ChannelId: "a"})
	require.NoError(t, err)
	fc.members[0].srv.Stop() // the leader dies; member 1 is elected
	fc.setLeader(1)
	_, err = c.CreateChannel(testutil.Context(t, 20*time.Second), &arbiterv1.CreateChannelRequest{ChannelId: "b"})
	require.NoError(t, err)
	require.Equal(t, fc.members[1].addr, c.Leader())
}

func TestDoesNotRetryWhatRetryingCannotFix(t *testing.T) {
	fc := startCluster(t, 3)
	c := newClient(t, fc.addrs())
	_, err := c.CreateChannel(testutil.Context(t, 20*time.Second), &arbiterv1.CreateChannelRequest{ChannelId: "bad id"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Equal(t, int64(1), fc.members[0].calls.Load())
}

func TestGivesUpAtTheDeadline(t *testing.T) {
	fc := startCluster(t, 2)
	for _, m := range fc.members {
		m.srv.Stop()
	}
	c := newClient(t, fc.addrs())
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.CreateChannel(ctx, &arbiterv1.CreateChannelRequest{ChannelId: "a"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

var errDone = errors.New("seen enough")

func TestWatchResumesAcrossFailoversExactlyOnce(t *testing.T) {
	fc := startCluster(t, 3)
	for i := range 100 {
		fc.events = append(fc.events, &arbiterv1.WatchEvent{Revision: uint64(i + 1),
			Kind: &arbiterv1.WatchEvent_Channel{Channel: &arbiterv1.Channel{ChannelId: "c"}}})
	}
	for _, m := range fc.members {
		m.breakAfter = 7
	}
	c := newClient(t, fc.addrs())
	var seen []uint64
	err := c.Watch(testutil.Context(t, 20*time.Second), &arbiterv1.WatchRequest{IncludeChannels: true}, func(r *arbiterv1.WatchResponse) error {
		for _, ev := range r.GetEvents() {
			seen = append(seen, ev.GetRevision())
		}
		if r.GetRevision() == 100 {
			return errDone
		}
		return nil
	})
	require.ErrorIs(t, err, errDone)
	require.Len(t, seen, 100)
	for i, rev := range seen {
		require.Equal(t, uint64(i+1), rev)
	}
	var streams int64
	for _, m := range fc.members {
		streams += m.calls.Load()
	}
	require.GreaterOrEqual(t, streams, int64(100/7), "the stream broke and was resumed")
}

func TestWatchCompacted(t *testing.T) {
	fc := startCluster(t, 1)
	fc.events = []*arbiterv1.WatchEvent{{Revision: 1}, {Revision: 2}, {Revision: 3}}
	fc.members[0].breakAfter = -1
	c := newClient(t, fc.addrs())
	err := c.Watch(testutil.Context(t, 20*time.Second), &arbiterv1.WatchRequest{FromRevision: 1}, func(*arbiterv1.WatchResponse) error { return nil })
	require.ErrorIs(t, err, ErrWatchCompacted)
}
