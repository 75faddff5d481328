package replica

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/pkg/process"
)

// cluster is three replica services in this process over real gRPC and Badger.
type cluster struct {
	t     testing.TB
	dirs  []string
	svcs  []*Service
	data  []replicav1.ReplicaServiceClient
	ctl   []replicav1.ReplicaControlServiceClient
	conns []*grpc.ClientConn
	// cut, when set, is a node whose raft frames are dropped both ways.
	cut atomic.Uint64
}

func newCluster(t *testing.T) *cluster { return newClusterOf(t, 3) }

// newClusterOf starts n replica services; c.spec and c.load use all of them.
func newClusterOf(t testing.TB, n int) *cluster {
	t.Helper()
	c := &cluster{t: t}
	for range n {
		c.dirs = append(c.dirs, t.TempDir())
	}
	c.start()
	t.Cleanup(c.stop)
	return c
}

func (c *cluster) start() {
	c.t.Helper()
	n := len(c.dirs)
	c.svcs, c.data, c.ctl, c.conns = make([]*Service, n), make([]replicav1.ReplicaServiceClient, n),
		make([]replicav1.ReplicaControlServiceClient, n), make([]*grpc.ClientConn, n)
	for i := range c.dirs {
		c.startNode(i + 1)
	}
}

// startNode starts node n (1-based) on its data directory.
func (c *cluster) startNode(n int) {
	c.t.Helper()
	i := n - 1
	s, err := Start(context.Background(), Config{
		Common:      process.Common{NodeID: uint64(n), Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", DataDir: c.dirs[i]},
		DedupWindow: time.Hour, DedupMaxIDs: 1000, TickInterval: 20 * time.Millisecond,
		TransportFault: func(to uint64) (time.Duration, bool) {
			cut := c.cut.Load()
			return 0, cut != 0 && (cut == uint64(n) || cut == to)
		},
	}, testutil.Telemetry(c.t, "replica", uint64(n)))
	require.NoError(c.t, err)
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(c.t, err)
	c.svcs[i], c.conns[i] = s, conn
	c.data[i] = replicav1.NewReplicaServiceClient(conn)
	c.ctl[i] = replicav1.NewReplicaControlServiceClient(conn)
}

func (c *cluster) stop() {
	for i, s := range c.svcs {
		if s != nil {
			testutil.Stop(c.t, s)
			_ = c.conns[i].Close()
			c.svcs[i] = nil
		}
	}
}

func (c *cluster) spec(channel string, group uint64) *replicav1.GroupSpec {
	sp := &replicav1.GroupSpec{ChannelId: channel, GroupId: group}
	for i, s := range c.svcs {
		sp.Replicas = append(sp.Replicas, &replicav1.Peer{NodeId: uint64(i + 1), Address: s.Advertise()})
	}
	return sp
}

func ctx(t testing.TB) context.Context { return testutil.Context(t, 20*time.Second) }

// load loads channels on every replica.
func (c *cluster) load(specs ...*replicav1.GroupSpec) {
	c.t.Helper()
	for i, ctl := range c.ctl {
		resp, err := ctl.LoadGroups(ctx(c.t), &replicav1.LoadGroupsRequest{Groups: specs})
		require.NoError(c.t, err)
		for _, r := range resp.GetResults() {
			require.Nil(c.t, r.GetError(), "node %d: %s", i+1, r.GetChannelId())
		}
	}
}

// elect orders node (1-based) to campaign for the channels and waits until it leads them all,
// ordering again if an election did not complete (votes can be lost; nobody retries them on
// their own since followers are never ticked).
func (c *cluster) elect(node int, channels ...string) {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	pending := channels
	for len(pending) > 0 {
		require.True(c.t, time.Now().Before(deadline), "node %d never led %v", node, pending)
		orders := make([]*replicav1.CampaignOrder, len(pending))
		for i, ch := range pending {
			orders[i] = &replicav1.CampaignOrder{ChannelId: ch}
		}
		_, err := c.ctl[node-1].Campaign(ctx(c.t), &replicav1.CampaignRequest{Orders: orders})
		require.NoError(c.t, err)
		for range 50 {
			pending = c.notLeading(node, pending)
			if len(pending) == 0 {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func (c *cluster) notLeading(node int, channels []string) []string {
	resp, err := c.ctl[node-1].GetGroupStatus(ctx(c.t), &replicav1.GetGroupStatusRequest{ChannelIds: channels})
	require.NoError(c.t, err)
	var out []string
	for _, r := range resp.GetResults() {
		if r.GetStatus().GetRole() != replicav1.Role_ROLE_LEADER {
			out = append(out, r.GetChannelId())
		}
	}
	return out
}

func msgs(ids ...string) []*triarchv1.MessageInput {
	out := make([]*triarchv1.MessageInput, len(ids))
	for i, id := range ids {
		out[i] = &triarchv1.MessageInput{ClientMsgId: id, Sender: "t", Payload: []byte("payload " + id)}
	}
	return out
}

func seqsOf(r *replicav1.AppendResponse) []uint64 {
	var out []uint64
	for _, x := range r.GetResults() {
		out = append(out, x.GetSeq())
	}
	return out
}

func readAll(t *testing.T, cl replicav1.ReplicaServiceClient, channel string) []*triarchv1.Message {
	t.Helper()
	var out []*triarchv1.Message
	from := uint64(1)
	for {
		resp, err := readServed(ctx(t), cl, &replicav1.ReadRequest{ChannelId: channel, FromSeq: from, Limit: 7})
		require.NoError(t, err)
		out = append(out, resp.GetMessages()...)
		if len(resp.GetMessages()) == 0 {
			return out
		}
		from = resp.GetMessages()[len(resp.GetMessages())-1].GetSeq() + 1
	}
}

// readServed reads as a client does: a leader just elected answers Unavailable until it has
// applied an entry of its term (Engine.leads), so that answer is tried again, briefly.
func readServed(ctx context.Context, cl replicav1.ReplicaServiceClient, req *replicav1.ReadRequest) (*replicav1.ReadResponse, error) {
	for {
		resp, err := cl.Read(ctx, req)
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return resp, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func requireContiguous(t *testing.T, got []*triarchv1.Message, n int) {
	t.Helper()
	require.Len(t, got, n)
	for i, m := range got {
		require.Equal(t, uint64(i+1), m.GetSeq())
	}
}

func TestAppendReadDedupAndNotLeader(t *testing.T) {
	c := newCluster(t)
	c.load(c.spec("general", 10), c.spec("random", 11))
	c.elect(1, "general", "random")

	resp, err := c.data[0].Append(ctx(t), &replicav1.AppendRequest{ChannelId: "general", Messages: msgs("a", "b", "c")})
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2, 3}, seqsOf(resp))
	resp, err = c.data[0].Append(ctx(t), &replicav1.AppendRequest{ChannelId: "general", Messages: msgs("d", "b")})
	require.NoError(t, err)
	require.Equal(t, []uint64{4, 2}, seqsOf(resp))
	require.False(t, resp.GetResults()[0].GetDuplicate())
	require.True(t, resp.GetResults()[1].GetDuplicate())
	// Channels are independent sequences.
	resp, err = c.data[0].Append(ctx(t), &replicav1.AppendRequest{ChannelId: "random", Messages: msgs("a")})
	require.NoError(t, err)
	require.Equal(t, []uint64{1}, seqsOf(resp))

	got := readAll(t, c.data[0], "general")
	requireContiguous(t, got, 4)
	require.Equal(t, "payload d", string(got[3].GetPayload()))
	require.Equal(t, "general", got[3].GetChannelId())

	// Followers refuse with the leader's identity.
	_, err = c.data[1].Append(ctx(t), &replicav1.AppendRequest{ChannelId: "general", Messages: msgs("x")})
	requireNotLeader(t, err, 1, c.svcs[0].Advertise())
	_, err = c.data[2].Read(ctx(t), &replicav1.ReadRequest{ChannelId: "general", FromSeq: 1})
	requireNotLeader(t, err, 1, c.svcs[0].Advertise())
}

func requireNotLeader(t *testing.T, err error, leader uint64, addr string) {
	t.Helper()
	st := status.Convert(err)
	require.Equal(t, codes.FailedPrecondition, st.Code(), err)
	require.Len(t, st.Details(), 1)
	nl, ok := st.Details()[0].(*replicav1.NotLeader)
	require.True(t, ok)
	require.Equal(t, leader, nl.GetLeaderNodeId())
	require.Equal(t, addr, nl.GetLeaderAddress())
}

func TestDuplicateAfterLeaderChangeReturnsOriginalSeq(t *testing.T) {
	c := newCluster(t)
	c.load(c.spec("ch", 5))
	c.elect(1, "ch")
	resp, err := c.data[0].Append(ctx(t), &replicav1.AppendRequest{ChannelId: "ch", Messages: msgs("m1", "m2")})
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2}, seqsOf(resp))

	c.elect(2, "ch")
	resp, err = c.data[1].Append(ctx(t), &replicav1.AppendRequest{ChannelId: "ch", Messages: msgs("m2", "m3")})
	require.NoError(t, err)
	require.Equal(t, []uint64{2, 3}, seqsOf(resp))
	require.True(t, resp.GetResults()[0].GetDuplicate())
	requireContiguous(t, readAll(t, c.data[1], "ch"), 3)
}

func TestSubscribeDeliversInOrderWithoutGaps(t *testing.T) {
	c := newCluster(t)
	c.load(c.spec("live", 3))
	c.elect(1, "live")
	_, err := c.data[0].Append(ctx(t), &replicav1.AppendRequest{ChannelId: "live", Messages: msgs("before")})
	require.NoError(t, err)

	sctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	stream, err := c.data[0].Subscribe(sctx, &replicav1.SubscribeRequest{ChannelId: "live", FromSeq: 1})
	require.NoError(t, err)

	const n = 200
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n / 4 {
				_, err := c.data[0].Append(ctx(t), &replicav1.AppendRequest{ChannelId: "live", Messages: msgs(fmt.Sprintf("w%d-%d", w, i))})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	next := uint64(1)
	for next <= n+1 {
		resp, err := stream.Recv()
		require.NoError(t, err)
		for _, m := range resp.GetMessages() {
			require.Equal(t, next, m.GetSeq())
			next++
		}
	}
	wg.Wait()
}

func TestHibernateAndRestartKeepEverything(t *testing.T) {
	c := newCluster(t)
	var specs []*replicav1.GroupSpec
	var names []string
	for i := range 20 {
		name := fmt.Sprintf("ch-%d", i)
		names = append(names, name)
		specs = append(specs, c.spec(name, uint64(100+i)))
	}
	c.load(specs...)
	c.elect(1, names...)
	for i, name := range names {
		for j := range i%3 + 1 {
			_, err := c.data[0].Append(ctx(t), &replicav1.AppendRequest{ChannelId: name, Messages: msgs(fmt.Sprintf("%d", j), fmt.Sprintf("x%d", j))})
			require.NoError(t, err)
		}
	}
	// Unload everywhere: followers first would race the leader's last commit notice, so retry
	// until every replica agrees the group is at rest.
	deadline := time.Now().Add(10 * time.Second)
	for n := range 3 {
		for {
			resp, err := c.ctl[n].UnloadGroups(ctx(t), &replicav1.UnloadGroupsRequest{ChannelIds: names})
			require.NoError(t, err)
			failed := 0
			for _, r := range resp.GetResults() {
				if r.GetError() != nil && r.GetError().GetCode() != int32(codes.NotFound) {
					failed++
				}
			}
			if failed == 0 {
				break
			}
			require.True(t, time.Now().Before(deadline), "unload never succeeded: %v", resp.GetResults())
			time.Sleep(20 * time.Millisecond)
		}
		require.Empty(t, c.svcs[n].Engine.Loaded())
	}
	// Hibernated channels report their position from disk.
	st, err := c.ctl[0].GetGroupStatus(ctx(t), &replicav1.GetGroupStatusRequest{ChannelIds: []string{"ch-2"}})
	require.NoError(t, err)
	require.False(t, st.GetResults()[0].GetStatus().GetLoaded())
	require.Equal(t, uint64(6), st.GetResults()[0].GetStatus().GetLastSeq())

	// Restart the whole cluster from disk, wake the channels, elect another node.
	c.stop()
	c.start()
	specs = specs[:0]
	for i, name := range names {
		specs = append(specs, c.spec(name, uint64(100+i)))
	}
	c.load(specs...)
	c.elect(3, names...)
	for i, name := range names {
		want := 2 * (i%3 + 1)
		requireContiguous(t, readAll(t, c.data[2], name), want)
		resp, err := c.data[2].Append(ctx(t), &replicav1.AppendRequest{ChannelId: name, Messages: msgs("0", "after")})
		require.NoError(t, err)
		require.Equal(t, []uint64{1, uint64(want + 1)}, seqsOf(resp), "dedup window survived: %s", name)
	}
}

func TestBadInputIsRefusedWithoutChangingState(t *testing.T) {
	c := newCluster(t)
	c.load(c.spec("ch", 1))
	c.elect(1, "ch")
	_, err := c.data[0].Append(ctx(t), &replicav1.AppendRequest{ChannelId: "ch", Messages: msgs("ok")})
	require.NoError(t, err)

	cases := []struct {
		name string
		req  *replicav1.AppendRequest
		code codes.Code
		want string
	}{
		{"unknown channel", &replicav1.AppendRequest{ChannelId: "nope", Messages: msgs("a")}, codes.NotFound, "not loaded"},
		{"empty batch", &replicav1.AppendRequest{ChannelId: "ch"}, codes.InvalidArgument, "empty batch"},
		{"oversize payload", &replicav1.AppendRequest{ChannelId: "ch", Messages: []*triarchv1.MessageInput{{Payload: make([]byte, MaxPayloadBytes+1)}}}, codes.InvalidArgument, "payload"},
		{"too many messages", &replicav1.AppendRequest{ChannelId: "ch", Messages: make([]*triarchv1.MessageInput, MaxBatchLen+1)}, codes.InvalidArgument, "at most 1000"},
		{"oversize batch", &replicav1.AppendRequest{ChannelId: "ch", Messages: []*triarchv1.MessageInput{
			{Payload: make([]byte, MaxPayloadBytes)}, {Payload: make([]byte, MaxPayloadBytes)}, {Payload: make([]byte, MaxPayloadBytes)},
			{Payload: make([]byte, MaxPayloadBytes)}, {Payload: make([]byte, 10)}}}, codes.InvalidArgument, "batch is"},
		{"long client id", &replicav1.AppendRequest{ChannelId: "ch", Messages: []*triarchv1.MessageInput{{ClientMsgId: strings.Repeat("x", 257)}}}, codes.InvalidArgument, "client_msg_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.data[0].Append(ctx(t), tc.req)
			st := status.Convert(err)
			require.Equal(t, tc.code, st.Code(), err)
			require.Contains(t, st.Message(), tc.want)
			if strings.Contains(tc.name, "oversize") || strings.Contains(tc.name, "too many") {
				require.Len(t, st.Details(), 1)
				require.Equal(t, ErrorReasonTooLarge, st.Details()[0].(*errdetails.ErrorInfo).GetReason())
			}
		})
	}
	requireContiguous(t, readAll(t, c.data[0], "ch"), 1)

	resp, err := c.ctl[0].LoadGroups(ctx(t), &replicav1.LoadGroupsRequest{Groups: []*replicav1.GroupSpec{
		{ChannelId: "x"}, // no group id, no replicas
		{ChannelId: "y", GroupId: 9, Replicas: []*replicav1.Peer{{NodeId: 7}}}, // not a replica of it
		{ChannelId: "ch", GroupId: 2, Replicas: c.spec("ch", 2).GetReplicas()}, // loaded as another group
	}})
	require.NoError(t, err)
	for _, r := range resp.GetResults() {
		require.Equal(t, int32(codes.InvalidArgument), r.GetError().GetCode(), r.GetChannelId())
	}
	require.Equal(t, []string{"ch"}, c.svcs[0].Engine.Loaded())
}
