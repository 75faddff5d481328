package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/services/gateway"
)

// stack is three real replicas (a testcluster with no arbiter or channelctl), a fake
// channelctl that resolves channels by driving them, and the real gateway pointed at the fake,
// all in this process over real gRPC and Badger.
type stack struct {
	t     *testing.T
	c     *testcluster.Cluster
	addrs []string
	ctl   *fakeChannelctl
	gw    *gateway.Service
	conn  *grpc.ClientConn
	api   triarchv1.TriarchServiceClient
	rest  string // http://host:port
}

func newStack(t *testing.T) *stack {
	t.Helper()
	c := testcluster.Start(t, testcluster.Arbiters(0), testcluster.Channelctls(0), testcluster.Replicas(3),
		testcluster.ReplicaTick(20*time.Millisecond), testcluster.Dedup(time.Hour, 100_000))
	s := &stack{t: t, c: c, addrs: c.Addrs(testcluster.KindReplica)}
	s.ctl = startFakeChannelctl(t, s.addrs)
	t.Cleanup(s.ctl.stop)
	c.StartGateway(s.ctl.addr)
	s.gw = c.Gateway()
	s.rest = "http://" + c.GatewayHTTPAddr()
	var err error
	s.conn, err = grpc.NewClient(s.gw.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.conn.Close() })
	s.api = triarchv1.NewTriarchServiceClient(s.conn)
	return s
}

// kill stops replica node (1-based).
func (s *stack) kill(node int) {
	s.c.Stop(testcluster.KindReplica, uint64(node))
}

// stopReplica stops replica node (1-based); it may run on any goroutine.
func (s *stack) stopReplica(node int) error {
	return s.c.StopErr(testcluster.KindReplica, uint64(node))
}

func tctx(t *testing.T) context.Context { return testutil.Context(t, 30*time.Second) }

// fakeChannelctl implements ResolveChannel the way the channel control tier will, minus the
// arbiter: it loads a new channel's group on every replica, orders the most up-to-date live
// replica to campaign (again until it leads), and remembers channels and their leaders. It
// answers Unavailable for channels named "unavailable-*", to test the gateway's 503.
type fakeChannelctl struct {
	channelctlv1.UnimplementedChannelControlServiceServer
	t     *testing.T
	addr  string
	srv   *grpc.Server
	addrs []string
	ctl   []replicav1.ReplicaControlServiceClient
	conns []*grpc.ClientConn

	resolves  atomic.Int64
	elections atomic.Int64

	mu        sync.Mutex
	channels  map[string]*fakeChannel
	nextGroup uint64
}

type fakeChannel struct {
	group   uint64
	leader  int // 1-based node, 0 when none
	term    uint64
	epoch   uint64
	created time.Time
}

func startFakeChannelctl(t *testing.T, addrs []string) *fakeChannelctl {
	t.Helper()
	f := &fakeChannelctl{t: t, addrs: addrs, channels: map[string]*fakeChannel{}, nextGroup: 100}
	for _, a := range addrs {
		conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		f.conns = append(f.conns, conn)
		f.ctl = append(f.ctl, replicav1.NewReplicaControlServiceClient(conn))
	}
	lis := testutil.Listen(t)
	f.addr = lis.Addr().String()
	f.srv = grpc.NewServer()
	channelctlv1.RegisterChannelControlServiceServer(f.srv, f)
	hs := health.NewServer()
	hs.SetServingStatus(channelctlv1.ChannelControlService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(f.srv, hs)
	go func() { _ = f.srv.Serve(lis) }()
	return f
}

func (f *fakeChannelctl) stop() {
	f.srv.Stop()
	for _, c := range f.conns {
		_ = c.Close()
	}
}

func (f *fakeChannelctl) leaderOf(channel string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch := f.channels[channel]; ch != nil {
		return ch.leader
	}
	return 0
}

func (f *fakeChannelctl) known(channel string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.channels[channel] != nil
}

func (f *fakeChannelctl) spec(channel string, group uint64) *replicav1.GroupSpec {
	sp := &replicav1.GroupSpec{ChannelId: channel, GroupId: group}
	for i, a := range f.addrs {
		sp.Replicas = append(sp.Replicas, &replicav1.Peer{NodeId: uint64(i + 1), Address: a})
	}
	return sp
}

func (f *fakeChannelctl) ResolveChannel(ctx context.Context, req *channelctlv1.ResolveChannelRequest) (*channelctlv1.ResolveChannelResponse, error) {
	f.resolves.Add(1)
	id := req.GetChannelId()
	if strings.HasPrefix(id, "unavailable-") {
		return nil, status.Error(codes.Unavailable, "fake channelctl: overloaded")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := f.channels[id]
	created := false
	if ch == nil {
		if !req.GetCreateIfMissing() {
			return nil, status.Errorf(codes.NotFound, "channel %s does not exist", id)
		}
		ch = &fakeChannel{group: f.nextGroup, created: time.Now()}
		f.nextGroup++
		for i, c := range f.ctl {
			resp, err := c.LoadGroups(ctx, &replicav1.LoadGroupsRequest{Groups: []*replicav1.GroupSpec{f.spec(id, ch.group)}})
			if err != nil {
				return nil, status.Errorf(codes.Unavailable, "load %s on node %d: %v", id, i+1, err)
			}
			if e := resp.GetResults()[0].GetError(); e != nil {
				return nil, status.Errorf(codes.Unavailable, "load %s on node %d: %s", id, i+1, e.GetMessage())
			}
		}
		f.channels[id] = ch
		created = true
	}
	if ch.leader == 0 || uint64(ch.leader) == req.GetStaleLeaderNodeId() {
		if !(ch.leader != 0 && f.stillLeads(ctx, id, ch.leader)) {
			if err := f.elect(ctx, id, ch); err != nil {
				return nil, err
			}
		}
	}
	resp := &channelctlv1.ResolveChannelResponse{
		ChannelId: id, GroupId: ch.group, LeaderNodeId: uint64(ch.leader), LeaderAddress: f.addrs[ch.leader-1],
		LeaderTerm: ch.term, Epoch: ch.epoch, Created: created,
	}
	for i, a := range f.addrs {
		resp.Replicas = append(resp.Replicas, &channelctlv1.Replica{NodeId: uint64(i + 1), Address: a})
	}
	return resp, nil
}

// status asks node for the channel's group status, briefly.
func (f *fakeChannelctl) status(ctx context.Context, channel string, node int) (*replicav1.GroupStatus, error) {
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	resp, err := f.ctl[node-1].GetGroupStatus(sctx, &replicav1.GetGroupStatusRequest{ChannelIds: []string{channel}})
	if err != nil {
		return nil, err
	}
	if e := resp.GetResults()[0].GetError(); e != nil {
		return nil, status.Error(codes.Code(e.GetCode()), e.GetMessage())
	}
	return resp.GetResults()[0].GetStatus(), nil
}

func (f *fakeChannelctl) stillLeads(ctx context.Context, channel string, node int) bool {
	st, err := f.status(ctx, channel, node)
	return err == nil && st.GetRole() == replicav1.Role_ROLE_LEADER
}

// elect picks the most up-to-date reachable replica (highest last term, then last index) and
// orders it to campaign until it leads.
func (f *fakeChannelctl) elect(ctx context.Context, channel string, ch *fakeChannel) error {
	f.elections.Add(1)
	best, reachable := 0, 0
	var bestSt *replicav1.GroupStatus
	for node := 1; node <= len(f.addrs); node++ {
		st, err := f.status(ctx, channel, node)
		if err != nil {
			continue
		}
		reachable++
		if bestSt == nil || st.GetLastTerm() > bestSt.GetLastTerm() ||
			(st.GetLastTerm() == bestSt.GetLastTerm() && st.GetLastIndex() > bestSt.GetLastIndex()) {
			best, bestSt = node, st
		}
	}
	if reachable <= len(f.addrs)/2 {
		return status.Errorf(codes.Unavailable, "channel %s: only %d of %d replicas reachable", channel, reachable, len(f.addrs))
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := f.ctl[best-1].Campaign(cctx, &replicav1.CampaignRequest{Orders: []*replicav1.CampaignOrder{{ChannelId: channel}}})
		cancel()
		if err != nil {
			return status.Errorf(codes.Unavailable, "campaign %s on node %d: %v", channel, best, err)
		}
		for range 50 {
			if st, err := f.status(ctx, channel, best); err == nil && st.GetRole() == replicav1.Role_ROLE_LEADER {
				ch.leader, ch.term = best, st.GetTerm()
				ch.epoch++
				return nil
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return status.Errorf(codes.Unavailable, "channel %s: node %d did not win its election", channel, best)
}

func (f *fakeChannelctl) GetChannelState(_ context.Context, req *channelctlv1.GetChannelStateRequest) (*channelctlv1.GetChannelStateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := f.channels[req.GetChannelId()]
	if ch == nil {
		return nil, status.Errorf(codes.NotFound, "channel %s does not exist", req.GetChannelId())
	}
	c := &arbiterv1.Channel{
		ChannelId: req.GetChannelId(), GroupId: ch.group, LeaderNodeId: uint64(ch.leader), LeaderTerm: ch.term,
		Epoch: ch.epoch, State: arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, CreateTime: timestamppb.New(ch.created),
	}
	for i := range f.addrs {
		c.ReplicaNodeIds = append(c.ReplicaNodeIds, uint64(i+1))
	}
	return &channelctlv1.GetChannelStateResponse{Channel: c, OwnerNodeId: 1}, nil
}

// REST helpers.

type restResp struct {
	code   int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (s *stack) do(method, path string, body []byte, header map[string]string) restResp {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(tctx(s.t), method, s.rest+path, rd)
	require.NoError(s.t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	out := restResp{code: resp.StatusCode, header: resp.Header, raw: raw}
	if len(raw) > 0 {
		require.NoError(s.t, json.Unmarshal(raw, &out.body), "body %.300s", raw)
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// restStream is a REST subscription: newline-delimited JSON lines.
type restStream struct {
	code   int
	header http.Header
	lines  chan map[string]any
	cancel context.CancelFunc
}

func (s *stack) subscribeREST(path string) *restStream {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.rest+path, nil)
	require.NoError(s.t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	st := &restStream{code: resp.StatusCode, header: resp.Header, lines: make(chan map[string]any, 1024), cancel: cancel}
	go func() {
		defer resp.Body.Close()
		defer close(st.lines)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"unparsable": sc.Text()}
			}
			st.lines <- m
		}
	}()
	s.t.Cleanup(cancel)
	return st
}

// seqs collects the seqs of a REST stream's result lines until want messages arrived.
func (st *restStream) seqs(t *testing.T, want int) []uint64 {
	t.Helper()
	var out []uint64
	deadline := time.After(30 * time.Second)
	for len(out) < want {
		select {
		case m, ok := <-st.lines:
			require.True(t, ok, "stream ended after %d messages", len(out))
			res, ok := m["result"].(map[string]any)
			require.True(t, ok, "line is not a result: %v", m)
			for _, x := range res["messages"].([]any) {
				out = append(out, jsonUint(t, x.(map[string]any)["seq"]))
			}
		case <-deadline:
			t.Fatalf("stream delivered %d of %d messages", len(out), want)
		}
	}
	return out
}

// jsonUint reads a uint64 that protojson wrote as a string.
func jsonUint(t *testing.T, v any) uint64 {
	t.Helper()
	var n uint64
	switch x := v.(type) {
	case string:
		_, err := fmt.Sscan(x, &n)
		require.NoError(t, err)
	case float64:
		n = uint64(x)
	default:
		t.Fatalf("not a number: %#v", v)
	}
	return n
}

// readAllGRPC reads a channel through the gateway in small pages.
func (s *stack) readAllGRPC(channel string) []*triarchv1.Message {
	s.t.Helper()
	var out []*triarchv1.Message
	from := uint64(1)
	for {
		resp, err := s.api.ReadMessages(tctx(s.t), &triarchv1.ReadMessagesRequest{ChannelId: channel, FromSeq: from, Limit: 37})
		require.NoError(s.t, err)
		out = append(out, resp.GetMessages()...)
		if len(resp.GetMessages()) == 0 {
			return out
		}
		require.Equal(s.t, resp.GetMessages()[len(resp.GetMessages())-1].GetSeq()+1, resp.GetNextSeq())
		from = resp.GetNextSeq()
	}
}

func requireContiguous(t *testing.T, msgs []*triarchv1.Message, n int) {
	t.Helper()
	require.Len(t, msgs, n)
	for i, m := range msgs {
		require.Equal(t, uint64(i+1), m.GetSeq())
	}
}
