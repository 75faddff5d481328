package arbiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/pkg/arbiterclient"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/services/arbiter/liveness"
)

// members is an arbiter cluster in this process over real gRPC and Badger.
type members struct {
	t testing.TB
	// liveness, when set, replaces the default lease settings.
	liveness liveness.Config
	peers    map[uint64]string
	dirs     map[uint64]string
	svcs     map[uint64]*Service
	// existing marks the members started with Config.Existing.
	existing map[uint64]bool
	// maxChannels is every member's Config.MaxChannels.
	maxChannels uint64
}

func startMembers(t testing.TB, n int, opts ...func(*members)) *members {
	t.Helper()
	m := newMembers(t, n, opts...)
	for id := range m.peers {
		m.start(id)
	}
	// A member that starts with an empty store joins in the background (join.go): a new
	// cluster is formed once every member is a voter of the metadata group.
	deadline := time.Now().Add(20 * time.Second)
	for id, s := range m.svcs {
		for !s.admitted.Load() {
			if time.Now().After(deadline) {
				t.Fatalf("member %d did not join the metadata group", id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return m
}

// newMembers sets up n members (addresses and data directories) without starting any.
func newMembers(t testing.TB, n int, opts ...func(*members)) *members {
	t.Helper()
	m := &members{t: t, peers: map[uint64]string{}, dirs: map[uint64]string{}, svcs: map[uint64]*Service{}}
	for _, o := range opts {
		o(m)
	}
	for id := uint64(1); id <= uint64(n); id++ {
		m.peers[id] = testutil.FreeAddr(t)
		m.dirs[id] = t.TempDir()
	}
	t.Cleanup(func() {
		for id := range m.svcs {
			m.stop(id)
		}
	})
	return m
}

func (m *members) start(id uint64) {
	m.t.Helper()
	s, err := Start(context.Background(), Config{
		Common:       process.Common{NodeID: id, Listen: m.peers[id], AdminAddr: "127.0.0.1:0", DataDir: m.dirs[id]},
		Peers:        m.peers,
		TickInterval: 10 * time.Millisecond, SnapshotEntries: 50, Liveness: m.liveness, Existing: m.existing[id],
		MaxChannels: m.maxChannels,
	}, testutil.Telemetry(m.t, "arbiter", id))
	require.NoError(m.t, err)
	m.svcs[id] = s
}

func (m *members) stop(id uint64) {
	m.t.Helper()
	testutil.Stop(m.t, m.svcs[id])
	delete(m.svcs, id)
}

// leader waits until every running member agrees on one leader and returns it.
func (m *members) leader() uint64 {
	m.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		seen := map[uint64]bool{}
		for _, s := range m.svcs {
			l, err := s.Leader(context.Background())
			if err == nil {
				seen[l] = true
			}
		}
		if len(seen) == 1 {
			for l := range seen {
				if l != 0 && m.svcs[l] != nil {
					return l
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	m.t.Fatal("no leader agreed on")
	return 0
}

func (m *members) client() *arbiterclient.Client {
	m.t.Helper()
	var addrs []string
	for _, a := range m.peers {
		addrs = append(addrs, a)
	}
	c, err := arbiterclient.New(arbiterclient.Config{Members: addrs, RetryBackoff: 5 * time.Millisecond,
		Dial: func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}})
	require.NoError(m.t, err)
	m.t.Cleanup(func() { _ = c.Close() })
	return c
}

func tctx(t testing.TB) context.Context { return testutil.Context(t, 20*time.Second) }

func registerReplicas(t testing.TB, c *arbiterclient.Client, ids ...uint64) {
	t.Helper()
	for _, id := range ids {
		_, err := c.RegisterNode(tctx(t), &arbiterv1.RegisterNodeRequest{NodeId: id, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA,
			Address: fmt.Sprintf("replica-%d:7600", id)})
		require.NoError(t, err)
	}
}

func TestSingleMemberServesMetadata(t *testing.T) {
	m := startMembers(t, 1)
	require.Equal(t, uint64(1), m.leader())
	c := m.client()
	registerReplicas(t, c, 1, 2, 3)
	_, err := c.RegisterNode(tctx(t), &arbiterv1.RegisterNodeRequest{NodeId: 9, Role: arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL, Address: "ctl:7500"})
	require.NoError(t, err)

	resp, err := c.CreateChannel(tctx(t), &arbiterv1.CreateChannelRequest{ChannelId: "general", ReplicationFactor: 3})
	require.NoError(t, err)
	require.True(t, resp.GetCreated())
	require.ElementsMatch(t, []uint64{1, 2, 3}, resp.GetChannel().GetReplicaNodeIds())
	require.Equal(t, arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED, resp.GetChannel().GetState())

	// The channelctl owns every slot; its CAS wins once, then the old epoch is stale.
	ch := resp.GetChannel()
	change := func(epoch uint64) *arbiterv1.ChannelChange {
		leader := uint64(2)
		return &arbiterv1.ChannelChange{ChannelId: "general", ExpectedEpoch: epoch, LeaderNodeId: &leader}
	}
	cas, err := c.CompareAndSetChannels(tctx(t), &arbiterv1.CompareAndSetChannelsRequest{NodeId: 9, Changes: []*arbiterv1.ChannelChange{change(ch.GetEpoch())}})
	require.NoError(t, err)
	require.True(t, cas.GetResults()[0].GetSucceeded())
	cas, err = c.CompareAndSetChannels(tctx(t), &arbiterv1.CompareAndSetChannelsRequest{NodeId: 9, Changes: []*arbiterv1.ChannelChange{change(ch.GetEpoch())}})
	require.NoError(t, err)
	require.False(t, cas.GetResults()[0].GetSucceeded())
	require.Contains(t, cas.GetResults()[0].GetError(), "stale epoch")

	got, err := c.GetChannel(tctx(t), &arbiterv1.GetChannelRequest{ChannelId: "general"})
	require.NoError(t, err)
	require.Equal(t, uint64(2), got.GetChannel().GetLeaderNodeId())

	for i := range 5 {
		_, err := c.CreateChannel(tctx(t), &arbiterv1.CreateChannelRequest{ChannelId: fmt.Sprintf("c%d", i), ReplicationFactor: 1})
		require.NoError(t, err)
	}
	var listed []string
	token := ""
	for {
		page, err := c.ListChannels(tctx(t), &arbiterv1.ListChannelsRequest{PageSize: 2, PageToken: token})
		require.NoError(t, err)
		for _, ch := range page.GetChannels() {
			listed = append(listed, ch.GetChannelId())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	require.Equal(t, []string{"c0", "c1", "c2", "c3", "c4", "general"}, listed)

	st, err := c.GetClusterStatus(tctx(t), &arbiterv1.GetClusterStatusRequest{})
	require.NoError(t, err)
	require.Equal(t, uint64(1), st.GetLeaderId())
	require.Len(t, st.GetNodes(), 4)
	require.Equal(t, uint64(6), st.GetChannels())
	require.Len(t, st.GetSlots(), 256)
}

// longLeases keeps leases from lapsing during a test that must not depend on timing.
func longLeases(m *members) {
	m.liveness = liveness.DefaultConfig()
	m.liveness.LeaseTTL = time.Minute
}

func TestBadInputChangesNothing(t *testing.T) {
	m := startMembers(t, 1, longLeases)
	m.leader()
	c := m.client()
	registerReplicas(t, c, 1, 2)
	rev := m.svcs[1].FSM().Revision()

	_, err := c.Heartbeat(tctx(t), &arbiterv1.HeartbeatRequest{NodeId: 77})
	require.Equal(t, codes.NotFound, status.Code(err), err)
	_, err = c.RegisterNode(tctx(t), &arbiterv1.RegisterNodeRequest{NodeId: 1, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA, Address: "elsewhere:1"})
	require.Equal(t, codes.AlreadyExists, status.Code(err), err)
	_, err = c.CreateChannel(tctx(t), &arbiterv1.CreateChannelRequest{ChannelId: "bad id!", ReplicationFactor: 1})
	require.Equal(t, codes.InvalidArgument, status.Code(err), err)
	_, err = c.CreateChannel(tctx(t), &arbiterv1.CreateChannelRequest{ChannelId: "ok", ReplicationFactor: 3})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), err)
	_, err = c.GetChannel(tctx(t), &arbiterv1.GetChannelRequest{ChannelId: "ok"})
	require.Equal(t, codes.NotFound, status.Code(err), err)
	require.Equal(t, rev, m.svcs[1].FSM().Revision(), "refused commands change nothing")
}

// --max-channels: creating past the cap answers ResourceExhausted and changes nothing.
func TestChannelCapIsResourceExhausted(t *testing.T) {
	m := startMembers(t, 1, longLeases, func(m *members) { m.maxChannels = 1 })
	m.leader()
	c := m.client()
	registerReplicas(t, c, 1)
	_, err := c.CreateChannel(tctx(t), &arbiterv1.CreateChannelRequest{ChannelId: "one", ReplicationFactor: 1})
	require.NoError(t, err)
	rev := m.svcs[1].FSM().Revision()
	_, err = c.CreateChannel(tctx(t), &arbiterv1.CreateChannelRequest{ChannelId: "two", ReplicationFactor: 1})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), err)
	require.Contains(t, status.Convert(err).Message(), "--max-channels")
	require.Equal(t, rev, m.svcs[1].FSM().Revision())
}

func TestLeaderLossLosesNoWriteAndRestartRestoresState(t *testing.T) {
	// The registered replicas never heartbeat: without long leases they turn suspect after
	// 600 ms and can no longer take channels, which a loaded machine reaches mid-test.
	m := startMembers(t, 3, longLeases)
	c := m.client()
	first := m.leader()
	registerReplicas(t, c, 1, 2, 3)
	acked := map[string]bool{}
	for i := range 60 { // past SnapshotEntries: snapshots and compaction happen
		id := fmt.Sprintf("before-%d", i)
		_, err := c.CreateChannel(tctx(t), &arbiterv1.CreateChannelRequest{ChannelId: id, ReplicationFactor: 3})
		require.NoError(t, err)
		acked[id] = true
	}
	m.stop(first)
	second := m.leader()
	require.NotEqual(t, first, second)
	for i := range 20 {
		id := fmt.Sprintf("after-%d", i)
		_, err := c.CreateChannel(tctx(t), &arbiterv1.CreateChannelRequest{ChannelId: id, ReplicationFactor: 3})
		require.NoError(t, err)
		acked[id] = true
	}
	m.start(first) // catches up, by snapshot if its log was compacted away
	m.leader()
	require.Eventually(t, func() bool { return m.svcs[first].FSM().Revision() == m.svcs[second].FSM().Revision() },
		15*time.Second, 5*time.Millisecond)
	for id := range acked {
		_, ok := m.svcs[first].FSM().Channel(id)
		require.True(t, ok, id)
	}

	want, err := m.svcs[second].FSM().Snapshot()
	require.NoError(t, err)
	for id := range m.peers {
		m.stop(id)
	}
	for id := range m.peers {
		m.start(id)
	}
	m.leader()
	for id := range m.peers {
		require.Eventually(t, func() bool {
			got, err := m.svcs[id].FSM().Snapshot()
			return err == nil && string(got) == string(want)
		}, 15*time.Second, 5*time.Millisecond, "member %d restored the same state", id)
	}
}

func TestWatchAcrossLeaderChangeSeesEveryRevisionOnce(t *testing.T) {
	m := startMembers(t, 3, longLeases) // the replicas never heartbeat; see above
	c := m.client()
	m.leader()
	registerReplicas(t, c, 1, 2, 3)

	var (
		mu   sync.Mutex
		revs []uint64
	)
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- c.Watch(wctx, &arbiterv1.WatchRequest{IncludeChannels: true, IncludeNodes: true, IncludeSlots: true},
			func(r *arbiterv1.WatchResponse) error {
				mu.Lock()
				defer mu.Unlock()
				for _, e := range r.GetEvents() {
					revs = append(revs, e.GetRevision())
				}
				return nil
			})
	}()
	for i := range 30 {
		if i == 15 {
			m.stop(m.leader())
		}
		_, err := c.CreateChannel(tctx(t), &arbiterv1.CreateChannelRequest{ChannelId: fmt.Sprintf("w%d", i), ReplicationFactor: 2})
		require.NoError(t, err)
	}
	var final uint64
	for _, s := range m.svcs {
		final = max(final, s.FSM().Revision())
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(revs) > 0 && revs[len(revs)-1] == final
	}, 15*time.Second, 5*time.Millisecond)
	cancel()
	err := <-done
	require.True(t, err == nil || errors.Is(err, context.Canceled), err)
	mu.Lock()
	defer mu.Unlock()
	for i, r := range revs {
		require.Equal(t, uint64(i+1), r, "every revision exactly once, in order")
	}
}

// A node that restarts on a new address is accepted once its old lease has lapsed, and the old
// registration is recorded dead on the way (its channels fail over).
func TestReregistrationFromANewAddressAfterTheLeaseLapsed(t *testing.T) {
	m := startMembers(t, 1)
	m.leader()
	c := m.client()
	registerReplicas(t, c, 1, 2, 3)
	moved := &arbiterv1.RegisterNodeRequest{NodeId: 2, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA, Address: "replica-2-new:7600"}
	_, err := c.RegisterNode(tctx(t), moved)
	require.Equal(t, codes.AlreadyExists, status.Code(err), "refused while the old lease is current")
	var resp *arbiterv1.RegisterNodeResponse
	require.Eventually(t, func() bool {
		resp, err = c.RegisterNode(tctx(t), moved)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	// The registration's own answer: what the FSM says later depends on how long this loaded
	// machine takes to ask, since this replica never heartbeats and its new lease lapses too.
	require.Equal(t, "replica-2-new:7600", resp.GetNode().GetAddress())
	require.Equal(t, arbiterv1.NodeState_NODE_STATE_ALIVE, resp.GetNode().GetState())
	require.Equal(t, uint64(2), resp.GetNode().GetIncarnation())
	n, ok := m.svcs[1].FSM().Node(2)
	require.True(t, ok)
	require.Equal(t, "replica-2-new:7600", n.Address)
	require.Equal(t, uint64(2), n.Incarnation)
}
