package replica

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/pkg/nodelease"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// stuckStore is a Store whose Save blocks until released: a disk whose fsync hangs.
type stuckStore struct {
	Store
	entered chan struct{}
	release chan struct{}
}

func (s *stuckStore) Save([]raftstore.Update) error {
	s.entered <- struct{}{}
	<-s.release
	return nil
}

// handClock is a clock the test moves by hand.
type handClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *handClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *handClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingArbiter answers every heartbeat and counts them.
type countingArbiter struct{ heartbeats atomic.Int64 }

func (a *countingArbiter) RegisterNode(_ context.Context, req *arbiterv1.RegisterNodeRequest) (*arbiterv1.RegisterNodeResponse, error) {
	return &arbiterv1.RegisterNodeResponse{
		Node:     &arbiterv1.Node{NodeId: req.GetNodeId(), Incarnation: 1, State: arbiterv1.NodeState_NODE_STATE_ALIVE},
		LeaseTtl: durationpb.New(time.Hour), HeartbeatInterval: durationpb.New(time.Millisecond),
	}, nil
}

func (a *countingArbiter) Heartbeat(context.Context, *arbiterv1.HeartbeatRequest) (*arbiterv1.HeartbeatResponse, error) {
	a.heartbeats.Add(1)
	return &arbiterv1.HeartbeatResponse{LeaseTtl: durationpb.New(time.Hour), HeartbeatInterval: durationpb.New(time.Millisecond),
		State: arbiterv1.NodeState_NODE_STATE_ALIVE}, nil
}

// A replica whose Save has not returned for longer than the bound stops renewing its node
// lease (and counts its lease lost), while its process and its raft heartbeats would still
// run; when the Save returns it renews again. Time is the test's: the stall is a Save that
// blocks until released, the bound is crossed by moving a fake clock.
func TestStuckSaveStopsLeaseRenewalUntilItReturns(t *testing.T) {
	clock := &handClock{now: time.Unix(1_000_000, 0)}
	const bound = 250 * time.Millisecond
	d := newDiskStall(bound, clock.Now, nil)
	inner := &stuckStore{entered: make(chan struct{}), release: make(chan struct{})}
	store := d.wrap(inner)

	arb := &countingArbiter{}
	var asked atomic.Int64 // the keeper asks before every heartbeat
	k := nodelease.New(nodelease.Config{Arbiter: arb, NodeID: 2, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA,
		Healthy: func() bool { asked.Add(1); return d.Healthy() }})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = k.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	waitFor(t, "heartbeats", func() bool { return arb.heartbeats.Load() >= 2 })

	saved := make(chan error, 1)
	go func() { saved <- store.Save(nil) }()
	<-inner.entered

	// Slow but within the bound: still healthy.
	clock.Advance(bound)
	require.False(t, d.check(), "a write in flight for exactly the bound is not a stall")
	require.True(t, k.Valid(time.Now()))
	before := arb.heartbeats.Load()
	waitFor(t, "renewals to go on", func() bool { return arb.heartbeats.Load() > before+2 })

	// Past the bound: stalled; renewals stop and the lease counts as lost.
	clock.Advance(time.Millisecond)
	require.True(t, d.check())
	require.True(t, d.Stalled())
	require.False(t, k.Valid(time.Now()), "a stalled node holds no lease")
	// A heartbeat already past its check may still land; once the keeper asked again,
	// nothing may.
	from := asked.Load()
	waitFor(t, "the keeper to ask", func() bool { return asked.Load() >= from+2 })
	stopped := arb.heartbeats.Load()
	for range 5 {
		// Each check leaves the verdict as it is while the Save stays stuck.
		clock.Advance(bound)
		require.True(t, d.check())
	}
	from = asked.Load()
	waitFor(t, "the keeper to ask again", func() bool { return asked.Load() >= from+5 })
	after := arb.heartbeats.Load()
	require.Equal(t, stopped, after, "no renewal while the Save is stuck")

	// The Save returns: healthy at once, without waiting for a check, and renewals resume.
	close(inner.release)
	require.NoError(t, <-saved)
	require.False(t, d.Stalled())
	waitFor(t, "renewals to resume", func() bool { return arb.heartbeats.Load() > after })
	require.True(t, k.Valid(time.Now()))
}

// Only writes that wait for the disk are timed, and one stuck write is enough: a second,
// quick write returning meanwhile does not clear the stall.
func TestStallLastsWhileAnyWriteIsStuck(t *testing.T) {
	clock := &handClock{now: time.Unix(1_000_000, 0)}
	d := newDiskStall(100*time.Millisecond, clock.Now, nil)
	stuck := d.begin()
	clock.Advance(50 * time.Millisecond)
	quick := d.begin()
	clock.Advance(60 * time.Millisecond)
	require.True(t, d.check(), "the first write is 110 ms old")
	d.end(quick)
	require.True(t, d.Stalled(), "the stuck write is still in flight")
	d.end(stuck)
	require.False(t, d.Stalled())

	off := newDiskStall(-1, clock.Now, nil)
	off.begin()
	clock.Advance(time.Hour)
	require.False(t, off.check(), "a negative bound turns detection off")
}
