package nodelease

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// An unhealthy node (a replica whose disk stopped returning its writes) sends no heartbeat,
// so its lease runs out at the arbiter, and its own Valid says false at once; once healthy it
// heartbeats again.
func TestUnhealthyNodeStopsRenewingAndResumes(t *testing.T) {
	fa := &fakeArbiter{ttl: time.Hour}
	var healthy atomic.Bool
	healthy.Store(true)
	var asked atomic.Int64
	k := New(Config{Arbiter: fa, NodeID: 3, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA,
		Healthy: func() bool { asked.Add(1); return healthy.Load() }})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = k.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	eventually(t, "a heartbeat", func() bool { _, hb := fa.counts(); return hb >= 2 })
	require.True(t, k.Valid(time.Now()))

	healthy.Store(false)
	require.False(t, k.Valid(time.Now()), "an unhealthy node holds no lease")
	// The keeper asks before every heartbeat: once it has asked a few times after the heartbeat
	// in flight (if any) is done, no heartbeat may follow while the answer stays no.
	_, before := fa.counts()
	from := asked.Load()
	eventually(t, "the keeper to ask again", func() bool { return asked.Load() >= from+3 })
	_, base := fa.counts()
	require.LessOrEqual(t, base, before+1, "at most the heartbeat already past its check")
	from = asked.Load()
	eventually(t, "the keeper to ask again", func() bool { return asked.Load() >= from+5 })
	_, after := fa.counts()
	require.Equal(t, base, after, "no heartbeat while unhealthy")

	healthy.Store(true)
	eventually(t, "heartbeats to resume", func() bool { _, hb := fa.counts(); return hb > after })
	require.True(t, k.Valid(time.Now()))
}
