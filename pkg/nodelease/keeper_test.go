package nodelease

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

type fakeArbiter struct {
	mu         sync.Mutex
	registers  int
	registered []*arbiterv1.RegisterNodeRequest
	heartbeats []*arbiterv1.HeartbeatRequest
	failing    bool
	forgotten  bool
	state      arbiterv1.NodeState
	ttl        time.Duration
}

func (f *fakeArbiter) RegisterNode(_ context.Context, req *arbiterv1.RegisterNodeRequest) (*arbiterv1.RegisterNodeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing {
		return nil, errors.New("arbiter unreachable")
	}
	f.registers++
	f.registered = append(f.registered, req)
	f.state = arbiterv1.NodeState_NODE_STATE_ALIVE
	return &arbiterv1.RegisterNodeResponse{
		Node:              &arbiterv1.Node{NodeId: req.GetNodeId(), Incarnation: uint64(f.registers), State: f.state},
		LeaseTtl:          durationpb.New(f.ttl),
		HeartbeatInterval: durationpb.New(time.Millisecond), // below the floor on purpose
	}, nil
}

func (f *fakeArbiter) Heartbeat(_ context.Context, req *arbiterv1.HeartbeatRequest) (*arbiterv1.HeartbeatResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing {
		return nil, errors.New("arbiter unreachable")
	}
	if f.forgotten {
		f.forgotten = false
		return nil, status.Error(codes.NotFound, "node is not registered")
	}
	f.heartbeats = append(f.heartbeats, req)
	return &arbiterv1.HeartbeatResponse{LeaseTtl: durationpb.New(f.ttl), HeartbeatInterval: durationpb.New(time.Millisecond), State: f.state}, nil
}

func (f *fakeArbiter) counts() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.registers, len(f.heartbeats)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRegistersHeartbeatsAndReregistersWhenDeclaredDead(t *testing.T) {
	fa := &fakeArbiter{ttl: time.Second}
	k := New(Config{Arbiter: fa, NodeID: 3, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA, Address: "r3:7600",
		StoreID: 0x5eed,
		Load:    func() *arbiterv1.NodeLoad { return &arbiterv1.NodeLoad{Channels: 12} },
		Peers: func() []*arbiterv1.PeerReachability {
			return []*arbiterv1.PeerReachability{{NodeId: 1, Reachable: true}}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	<-k.Registered()
	eventually(t, "heartbeats", func() bool { _, h := fa.counts(); return h >= 3 })
	require.Equal(t, minInterval, k.Interval(), "the interval is floored")

	fa.mu.Lock()
	hb := fa.heartbeats[1]
	fa.mu.Unlock()
	require.Equal(t, uint64(3), hb.GetNodeId())
	require.Equal(t, uint64(1), hb.GetIncarnation())
	require.Equal(t, uint64(12), hb.GetLoad().GetChannels())
	require.Len(t, hb.GetPeers(), 1)
	require.Positive(t, hb.GetLastRtt().AsDuration(), "the previous round trip is reported")

	fa.mu.Lock()
	fa.state = arbiterv1.NodeState_NODE_STATE_DEAD
	fa.mu.Unlock()
	eventually(t, "re-registration", func() bool { r, _ := fa.counts(); return r == 2 })

	// An arbiter that forgot the node (NotFound) also gets a new registration.
	fa.mu.Lock()
	fa.forgotten = true
	fa.mu.Unlock()
	eventually(t, "re-registration after NotFound", func() bool { r, _ := fa.counts(); return r == 3 })
	cancel()
	require.NoError(t, <-done)

	// Every registration names the node's store (issue 12, item 3).
	fa.mu.Lock()
	defer fa.mu.Unlock()
	require.Len(t, fa.registered, 3)
	for i, req := range fa.registered {
		require.Equal(t, uint64(0x5eed), req.GetStoreId(), "registration %d", i)
		require.Equal(t, "r3:7600", req.GetAddress(), "registration %d", i)
	}
}

func TestLeaseValidityIsConservative(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	fa := &fakeArbiter{ttl: 600 * time.Millisecond}
	k := New(Config{Arbiter: fa, NodeID: 1, Now: clock})
	require.False(t, k.Valid(now), "no lease before registering")
	require.NoError(t, k.register(context.Background()))
	require.True(t, k.Valid(now.Add(599*time.Millisecond)))
	require.False(t, k.Valid(now.Add(600*time.Millisecond)), "the lease counts from the send time")

	// A successful heartbeat renews from its send time.
	now = now.Add(500 * time.Millisecond)
	require.NoError(t, k.heartbeat(context.Background()))
	require.True(t, k.Valid(now.Add(599*time.Millisecond)))

	// Failed heartbeats renew nothing: the lease runs out.
	fa.failing = true
	now = now.Add(300 * time.Millisecond)
	require.Error(t, k.heartbeat(context.Background()))
	require.False(t, k.Valid(now.Add(300*time.Millisecond)))
}

// Issue 13, item 2: an answer saying the node is DEAD renews nothing; it ends the lease at
// once. It used to renew it like any successful heartbeat, so a node the arbiter had already
// declared dead (its channels being re-elected) kept serving for another TTL.
func TestDeadAnswerEndsTheLease(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fa := &fakeArbiter{ttl: 600 * time.Millisecond}
	k := New(Config{Arbiter: fa, NodeID: 1, Now: func() time.Time { return now }})
	require.NoError(t, k.register(context.Background()))
	require.True(t, k.Valid(now.Add(100*time.Millisecond)))

	fa.state = arbiterv1.NodeState_NODE_STATE_DEAD
	now = now.Add(100 * time.Millisecond)
	require.NoError(t, k.heartbeat(context.Background()))
	require.Equal(t, arbiterv1.NodeState_NODE_STATE_DEAD, k.State())
	require.False(t, k.Valid(now), "declared dead: no lease, not even what was left of the old one")

	// Only a new registration brings the lease back.
	require.NoError(t, k.register(context.Background()))
	require.True(t, k.Valid(now.Add(100*time.Millisecond)))
}
