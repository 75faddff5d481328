package multiraft_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3"

	"github.com/triarch-io/triarch/pkg/multiraft"
)

// The arbiter's configuration under Run, with every stage on its own goroutine: a
// self-elected leader, snapshots while proposals stream in, and a follower that comes back
// after the log moved on and catches up from a snapshot installed concurrently with
// everything else.
func TestRunSelfElectingWithSnapshots(t *testing.T) {
	c := newFSMCluster(t, 3, 51, nil, func(cfg *multiraft.Config) {
		cfg.Manual = false
		cfg.SelfElecting = true
		cfg.ElectionTick = 50
		cfg.SnapshotEntries, cfg.SnapshotKeepEntries = 20, 5
	})
	g := groupIDs(1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(c.ids))
	wg.Go(func() { c.hub.Run(ctx) })
	for _, id := range c.ids {
		h := c.hosts[id]
		wg.Go(func() { errs <- h.Run(ctx) })
	}
	wg.Go(func() {
		tk := time.NewTicker(2 * time.Millisecond)
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
	c.load(g)

	// eventually polls: under Run the test has no round to wait for.
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("%s: %v", what, ctx.Err())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	leader := func() uint64 {
		for _, id := range c.ids {
			if st, err := c.hosts[id].Status(ctx, g); err == nil && st.Role == raft.StateLeader {
				return id
			}
		}
		return 0
	}
	// propose retries until the entry is applied: an election may come in between.
	propose := func(prefix string, n int) {
		t.Helper()
		var pw sync.WaitGroup
		for i := range n {
			pw.Go(func() {
				for ctx.Err() == nil {
					l := leader()
					if l == 0 {
						time.Sleep(time.Millisecond)
						continue
					}
					// Any failure is retried; an entry that commits twice is harmless here.
					if _, err := c.hosts[l].Propose(ctx, g, fmt.Appendf(nil, "%s-%03d", prefix, i)); err == nil {
						return
					}
				}
			})
		}
		pw.Wait()
	}
	eventually("no leader elected", func() bool { return leader() != 0 })
	propose("a", 100)

	l := leader()
	follower := l%3 + 1
	c.hub.Isolate(follower)
	propose("b", 100)
	l = leader()
	eventually("the leader did not compact past the isolated follower", func() bool {
		return c.firstIndex(l, g) > c.appliers[follower].state(g).Applied+1
	})
	c.hub.Heal()
	eventually("the follower did not catch up", func() bool {
		st := c.appliers[follower].state(g)
		return len(st.Data) >= 200 && st.Applied == c.appliers[l].state(g).Applied
	})
	if _, restores := c.appliers[follower].counts(g); restores == 0 {
		t.Fatal("the follower caught up without a snapshot")
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("host Run: %v", err)
		}
	}
	ref := c.appliers[l].state(g)
	for _, id := range c.ids {
		st := c.appliers[id].state(g)
		if st.Applied == ref.Applied && !slices.Equal(st.Data, ref.Data) {
			t.Fatalf("node %d and node %d applied different entries up to %d", id, l, st.Applied)
		}
		seen := make(map[string]bool)
		for _, d := range st.Data {
			seen[d] = true
		}
		for _, p := range []string{"a", "b"} {
			for i := range 100 {
				if d := fmt.Sprintf("%s-%03d", p, i); !seen[d] {
					t.Fatalf("node %d lacks %s", id, d)
				}
			}
		}
	}
}
