package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
)

// running is a cluster whose hosts and hub run their own goroutines.
type running struct {
	*cluster[*memApplier]
	cancel context.CancelFunc
	done   sync.WaitGroup
	errs   chan error
}

func startRunning(t testing.TB, n int, tickEvery time.Duration, tweak func(*multiraft.Config)) *running {
	c := newCluster(t, n, memnet.Options{Seed: 9, ShareMessages: true}, func(cfg *multiraft.Config) {
		cfg.Manual = false
		if tweak != nil {
			tweak(cfg)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cluster: c, cancel: cancel, errs: make(chan error, n)}
	r.done.Go(func() { c.hub.Run(ctx) })
	for _, id := range c.ids {
		h := c.hosts[id]
		r.done.Go(func() { r.errs <- h.Run(ctx) })
	}
	// The service ticks from a time.Ticker; so does this test, to run ticks concurrently
	// with everything else.
	r.done.Go(func() {
		tk := time.NewTicker(tickEvery)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				for _, id := range c.ids {
					c.hosts[id].Tick()
				}
			}
		}
	})
	return r
}

func (r *running) stop(t testing.TB) {
	r.cancel()
	r.done.Wait()
	close(r.errs)
	for err := range r.errs {
		if err != nil {
			t.Fatalf("host Run: %v", err)
		}
	}
}

// waitLeader waits until leader has applied its own first entry of its term, i.e. until it
// leads with a committed entry.
func (r *running) waitLeader(ctx context.Context, t testing.TB, g, leader uint64) {
	t.Helper()
	a := r.appliers[leader]
	err := a.waitFor(ctx, func() bool {
		ents := a.entries(g)
		return len(ents) > 0 && ents[len(ents)-1].Term >= 2
	})
	if err != nil {
		t.Fatalf("group %d: node %d never led: %v", g, leader, err)
	}
}

func TestRunPipelineEndToEnd(t *testing.T) {
	r := startRunning(t, 3, time.Millisecond, func(cfg *multiraft.Config) { cfg.Workers = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	gids := groupIDs(10)
	leaderOf := func(g uint64) uint64 { return g%3 + 1 }
	specs := make([]multiraft.GroupSpec, len(gids))
	for i, g := range gids {
		specs[i] = multiraft.GroupSpec{GroupID: g, Voters: r.ids}
	}
	for _, id := range r.ids {
		if err := r.hosts[id].LoadGroups(ctx, specs); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range gids {
		if err := r.hosts[leaderOf(g)].Campaign(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range gids {
		r.waitLeader(ctx, t, g, leaderOf(g))
	}

	const perGroup = 100
	var wg sync.WaitGroup
	errs := make(chan error, len(gids)*perGroup)
	indexes := make(map[uint64][]uint64)
	var mu sync.Mutex
	for _, g := range gids {
		for i := range perGroup {
			wg.Go(func() {
				idx, err := r.hosts[leaderOf(g)].Propose(ctx, g, fmt.Appendf(nil, "g%d-%03d", g, i))
				if err != nil {
					errs <- fmt.Errorf("group %d proposal %d: %w", g, i, err)
					return
				}
				mu.Lock()
				indexes[g] = append(indexes[g], idx)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	for _, g := range gids {
		for _, id := range r.ids {
			a := r.appliers[id]
			if err := a.waitFor(ctx, func() bool { return len(a.userData(g)) == perGroup }); err != nil {
				t.Fatalf("group %d on node %d applied %d of %d: %v", g, id, len(a.userData(g)), perGroup, err)
			}
		}
		ref := r.appliers[1].entries(g)
		for _, id := range r.ids {
			if got := r.appliers[id].entries(g); !slices.Equal(got, ref) {
				t.Fatalf("group %d: nodes 1 and %d applied different logs", g, id)
			}
		}
		// Each proposer got the index its entry was applied at, and no two the same.
		idx := indexes[g]
		slices.Sort(idx)
		if len(slices.Compact(idx)) != perGroup {
			t.Fatalf("group %d: %d distinct indexes for %d proposals", g, len(idx), perGroup)
		}
		byIndex := make(map[uint64]string)
		for _, e := range ref {
			byIndex[e.Index] = e.Data
		}
		for _, i := range idx {
			if byIndex[i] == "" {
				t.Fatalf("group %d: a proposal reported index %d, which holds no proposal", g, i)
			}
		}
	}

	st, err := r.hosts[leaderOf(gids[0])].Status(ctx, gids[0])
	if err != nil || st.Role != raft.StateLeader || len(st.Progress) != 3 {
		t.Fatalf("status of a leader under Run: %+v, %v", st, err)
	}

	r.stop(t)
	if _, err := r.hosts[1].Propose(context.Background(), gids[0], []byte("late")); !errors.Is(err, multiraft.ErrStopped) {
		t.Fatalf("proposal after Run returned: %v, want ErrStopped", err)
	}
}
