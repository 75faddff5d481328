package liveness

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Heartbeats arrive on RPC goroutines while the leader's ticker evaluates; under -race this
// checks the locking.
func TestConcurrentHeartbeatsAndEvaluate(t *testing.T) {
	tr, err := New(DefaultConfig())
	require.NoError(t, err)
	for id := uint64(1); id <= 8; id++ {
		tr.Observe(id, alive, t0)
	}
	var wg sync.WaitGroup
	for id := uint64(1); id <= 8; id++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			now := t0
			for range 500 {
				now = now.Add(100 * time.Millisecond)
				iv := tr.Heartbeat(Heartbeat{Node: id, Now: now, RTT: time.Millisecond,
					Peers: []PeerReport{{Node: id%8 + 1, Reachable: true}}})
				assert.GreaterOrEqual(t, iv, DefaultConfig().MinInterval)
				_ = tr.Phi(id, now)
			}
		}()
	}
	now := t0
	for range 500 {
		now = now.Add(100 * time.Millisecond)
		for _, d := range tr.Evaluate(now, func(uint64) []uint64 { return []uint64{1, 2, 3} }) {
			tr.Observe(d.Node, d.State, now)
		}
	}
	tr.ResetAll(now)
	wg.Wait()
}
