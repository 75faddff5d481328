package multiraft_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/triarch-io/triarch/pkg/multiraft"
)

// BenchmarkCommit measures committed entries per second with three hosts in one process,
// driven by Run, on the in-memory store and hub (messages shared, not marshalled). Each
// Propose returns once its entry is committed and applied on the leader; 256 proposers
// keep the pipeline full, leaders are spread over the three hosts, payloads are 128 bytes,
// the hosts tick every 100 ms as a service would.
//
// The store is raftstore.Memory (newCluster); Badger plugs in there, as
// raftstore.OpenBadger(b.TempDir()) per host, to measure with fsync.
func BenchmarkCommit(b *testing.B) {
	for _, groups := range []int{1, 100} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) { benchCommit(b, groups) })
	}
}

func benchCommit(b *testing.B, groups int) {
	r := startRunning(b, 3, 100*time.Millisecond, nil)
	defer r.stop(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	gids := groupIDs(groups)
	leaderOf := func(g uint64) uint64 { return g%3 + 1 }
	specs := make([]multiraft.GroupSpec, len(gids))
	for i, g := range gids {
		specs[i] = multiraft.GroupSpec{GroupID: g, Voters: r.ids}
	}
	for _, id := range r.ids {
		if err := r.hosts[id].LoadGroups(ctx, specs); err != nil {
			b.Fatal(err)
		}
	}
	for _, g := range gids {
		if err := r.hosts[leaderOf(g)].Campaign(ctx, g); err != nil {
			b.Fatal(err)
		}
	}
	for _, g := range gids {
		r.waitLeader(ctx, b, g, leaderOf(g))
	}

	payload := make([]byte, 128)
	const proposers = 256
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, proposers)
	b.ResetTimer()
	start := time.Now()
	for w := range proposers {
		g := gids[w%len(gids)]
		h := r.hosts[leaderOf(g)]
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := h.Propose(ctx, g, payload); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "entries/s")
}
