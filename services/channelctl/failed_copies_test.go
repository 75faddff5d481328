package channelctl

import (
	"context"
	"fmt"
	"maps"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// runWithFakes serves each fake replica as node "replica-<id>", registers it with arb (with its
// own store, unless the test registered the node already) and runs a controller (channelctl
// 101) on them until the test ends. The controller's clock runs 20 times as fast, so scans,
// repair passes and backoffs take a moment.
func runWithFakes(t *testing.T, arb *fakeArbiter, replicas map[uint64]*fakeReplica) *Controller {
	t.Helper()
	listeners := map[string]*bufconn.Listener{}
	for id, f := range replicas {
		if arb.nodes[id] == nil {
			arb.nodes[id] = storeNode(id, f.store, 1)
		}
		lis := bufconn.Listen(1 << 20)
		listeners[fmt.Sprintf("replica-%d", id)] = lis
		srv := grpc.NewServer()
		replicav1.RegisterReplicaControlServiceServer(srv, f)
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
	}
	start := time.Now()
	c := NewController(ControllerConfig{NodeID: 101, Arbiter: arb,
		Dial: func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return listeners[addr].DialContext(ctx) }))
		},
		HibernateAfter: 1000 * time.Hour, BalanceDelay: 1000 * time.Hour, ReplaceDeadAfter: 1000 * time.Hour,
		RetryAfter: 10 * time.Millisecond,
		Now:        func() time.Time { return start.Add(20 * time.Since(start)) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	<-c.Ready()
	return c
}

// Copies of channels that failed on their replicas (a corrupt entry) are found by asking each
// replica node for its failed groups, and rejoined from their peers: node 2's copy of "c"
// through a join load (which resets it there) and the leader's ChangeReplicas with add ==
// remove and node 2's own, recorded store. Node 1's copy of "l" failed on the leader: its
// leadership is checked first, another replica is elected, and node 1 then rejoins under the
// new leader. A failed copy of a channel of another channelctl's slot is left alone, and once
// rejoined nothing is ordered again.
func TestFailedCopiesRejoin(t *testing.T) {
	arb := &fakeArbiter{nodes: map[uint64]*arbiterv1.Node{}, channels: map[string]*arbiterv1.Channel{},
		watch: make(chan *arbiterv1.WatchResponse, 1024),
		slots: []*arbiterv1.SlotAssignment{{Slot: 3, OwnerNodeId: 101}, {Slot: 4, OwnerNodeId: 102}}}
	stores := map[uint64]uint64{1: 11, 2: 22, 3: 33}
	for _, id := range []string{"c", "l", "o"} {
		slot := uint32(3)
		if id == "o" {
			slot = 4
		}
		arb.channels[id] = &arbiterv1.Channel{ChannelId: id, GroupId: uint64(len(arb.channels) + 1), Slot: slot,
			ReplicaNodeIds: []uint64{1, 2, 3}, LeaderNodeId: 1, LeaderTerm: 5, Epoch: 10,
			State: arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, LastSeq: 40, ReplicaStoreIds: maps.Clone(stores)}
	}
	replicas := map[uint64]*fakeReplica{
		1: {node: 1, store: 11, failed: map[string]bool{"l": true}},
		2: {node: 2, store: 22, failed: map[string]bool{"c": true, "o": true}},
		3: {node: 3, store: 33},
	}
	for _, f := range replicas {
		f.admitted = func(c *replicav1.ReplicaChange) { replicas[c.GetAddNodeId()].admit(c.GetChannelId()) }
	}
	runWithFakes(t, arb, replicas)

	rejoined := func(id string, node uint64) *replicav1.ReplicaChange {
		for _, f := range replicas {
			for _, c := range f.changesMade() {
				if c.GetChannelId() == id && c.GetAddNodeId() == node {
					return c
				}
			}
		}
		return nil
	}
	require.Eventually(t, func() bool {
		return rejoined("c", 2) != nil && rejoined("l", 1) != nil && len(arb.changed("c")) >= 2 && len(arb.changed("l")) >= 5
	}, 20*time.Second, 10*time.Millisecond)
	time.Sleep(600 * time.Millisecond) // two more scans on the controller's clock: nothing more happens

	// "c": claim, join load on node 2 (resetting its copy), rejoin on leader 1 with store 22, record.
	c := arb.channel("c")
	require.Equal(t, uint64(12), c.GetEpoch())
	require.Equal(t, uint64(1), c.GetLeaderNodeId())
	require.Equal(t, []uint64{1, 2, 3}, c.GetReplicaNodeIds())
	require.Equal(t, stores, c.GetReplicaStoreIds())
	changes := arb.changed("c")
	require.Len(t, changes, 2)
	require.Equal(t, map[uint64]uint64{2: 22}, changes[1].GetReplicaStoreIds())
	require.Empty(t, changes[1].GetReplicaNodeIds(), "a rejoin leaves the replica set alone")
	var joins int
	for _, g := range replicas[2].received("c") {
		if !g.GetJoin() {
			// The controller's reload at start, which the failed copy refuses (DataLoss).
			require.Equal(t, uint64(22), g.GetStoreId())
			continue
		}
		require.Zero(t, g.GetStoreId())
		joins++
	}
	require.Equal(t, 1, joins, "the failed copy is reset by one join load: the rejoin's")
	ch := rejoined("c", 2)
	require.Equal(t, uint64(2), ch.GetRemoveNodeId())
	require.Equal(t, uint64(22), ch.GetAddStoreId())
	require.Equal(t, []uint64{1, 2, 3}, ch.GetVoters())
	require.Len(t, replicas[1].changesMade(), 1, "leader 1 rejoined node 2 once, and nothing else")

	// "l": the leader's copy failed. An election (its load refused on node 1) moved leadership
	// to 2 or 3, which then rejoined node 1 with its store 11.
	l := arb.channel("l")
	require.Equal(t, arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, l.GetState())
	require.Contains(t, []uint64{2, 3}, l.GetLeaderNodeId())
	require.Equal(t, stores, l.GetReplicaStoreIds())
	ch = rejoined("l", 1)
	require.Equal(t, uint64(1), ch.GetRemoveNodeId())
	require.Equal(t, uint64(11), ch.GetAddStoreId())
	require.Len(t, replicas[l.GetLeaderNodeId()].changesMade(), 1)
	// Claim, decision and settlement of the election; claim and record of the rejoin.
	changes = arb.changed("l")
	require.Len(t, changes, 5)
	require.Equal(t, arbiterv1.ChannelState_CHANNEL_STATE_ELECTING, changes[0].GetState(), "the leader check found it not leading")
	require.Equal(t, map[uint64]uint64{1: 11}, changes[4].GetReplicaStoreIds())

	// "o" belongs to channelctl 102: untouched here.
	require.Empty(t, arb.changed("o"))
	require.Empty(t, replicas[2].received("o"))
	replicas[2].mu.Lock()
	defer replicas[2].mu.Unlock()
	require.True(t, replicas[2].failed["o"])
}

// Only failed (DataLoss) and reset copies are rejoined, not whatever else a replica reports.
func TestFailedOrReset(t *testing.T) {
	require.True(t, failedOrReset(&replicav1.GetGroupStatusResult{Error: dataLoss("c")}))
	require.True(t, failedOrReset(&replicav1.GetGroupStatusResult{Status: &replicav1.GroupStatus{CopyReset: true}}))
	require.False(t, failedOrReset(&replicav1.GetGroupStatusResult{Status: &replicav1.GroupStatus{Loaded: true}}))
	require.False(t, failedOrReset(&replicav1.GetGroupStatusResult{Error: &replicav1.GroupError{Code: int32(codes.NotFound)}}))
}
