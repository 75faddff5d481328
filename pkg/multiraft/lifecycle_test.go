package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"go.etcd.io/raft/v3"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func TestHibernateAndWake(t *testing.T) {
	const groups = 1000
	c := newCluster(t, 3, memnet.Options{Seed: 5}, nil)
	gids := groupIDs(groups)
	leaderOf := func(g uint64) uint64 { return g%3 + 1 }

	c.load(gids...)
	for _, g := range gids {
		if err := c.hosts[leaderOf(g)].Campaign(context.Background(), g); err != nil {
			t.Fatal(err)
		}
	}
	c.stabilize()
	for _, g := range gids {
		c.propose(leaderOf(g), g, fmt.Sprint("first-", g))
	}
	c.stabilize()

	// A follower that lags keeps its leader from hibernating.
	lag := gids[0]
	leader := leaderOf(lag)
	follower := leader%3 + 1
	c.hub.Partition(leader, follower)
	ps := c.propose(leader, lag, "while lagging")
	c.stabilize()
	mustSucceed(t, ps)
	err := c.hosts[leader].UnloadGroup(context.Background(), lag)
	if !errors.Is(err, multiraft.ErrNotQuiescent) {
		t.Fatalf("unload with follower %d behind: %v, want ErrNotQuiescent", follower, err)
	}
	c.hub.Heal()
	c.tick(1) // the heartbeat response shows the follower behind; the leader catches it up

	type position struct{ term, vote, commit, applied, last, lastTerm uint64 }
	before := make(map[[2]uint64]position)
	for _, id := range c.ids {
		for _, g := range gids {
			st := c.status(id, g)
			before[[2]uint64{id, g}] = position{st.Term, st.Vote, st.Commit, st.Applied, st.LastIndex, st.LastTerm}
		}
	}
	active := heapAlloc()

	for _, id := range c.ids {
		for _, g := range gids {
			if err := c.hosts[id].UnloadGroup(context.Background(), g); err != nil {
				t.Fatalf("node %d: unload group %d: %v", id, g, err)
			}
		}
	}
	after := heapAlloc()
	for _, id := range c.ids {
		loaded, err := c.hosts[id].Groups(context.Background())
		if err != nil || len(loaded) != 0 {
			t.Fatalf("node %d after unloading everything: groups %v, %v", id, loaded, err)
		}
		if g, l, d, w := c.hosts[id].GroupStateForTest(); g+l+d+w != 0 {
			t.Fatalf("node %d still holds %d groups, %d leaders, %d dirty, %d waiters", id, g, l, d, w)
		}
		if _, err := c.hosts[id].Status(context.Background(), gids[1]); !errors.Is(err, multiraft.ErrGroupNotFound) {
			t.Fatalf("status of a hibernated group: %v, want ErrGroupNotFound", err)
		}
	}
	released := int64(active) - int64(after)
	perGroup := released / (3 * groups)
	t.Logf("heap: %d bytes with %d active groups on 3 hosts, %d after hibernating them: %d bytes released per active group",
		active, groups, after, perGroup)
	// A RawNode with its progress tracker is about 2 KiB; if unloading kept it, the heap
	// would not move.
	if perGroup < 1024 {
		t.Fatalf("unloading released %d bytes per group, want at least 1024", perGroup)
	}

	c.load(gids...)
	for _, id := range c.ids {
		for _, g := range gids {
			st := c.status(id, g)
			got := position{st.Term, st.Vote, st.Commit, st.Applied, st.LastIndex, st.LastTerm}
			if want := before[[2]uint64{id, g}]; got != want || st.Leader != 0 || st.Role != raft.StateFollower {
				t.Fatalf("group %d on node %d reloaded at %+v (leader %d, %v), want %+v as a follower without leader",
					g, id, got, st.Leader, st.Role, want)
			}
		}
	}
	c.stabilize() // nothing to re-apply: the memApplier would fail on a repeat

	for _, g := range gids {
		if err := c.hosts[2].Campaign(context.Background(), g); err != nil {
			t.Fatal(err)
		}
	}
	c.stabilize()
	props := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		props[g] = c.propose(2, g, fmt.Sprint("second-", g))
	}
	c.stabilize()
	for _, g := range gids {
		mustSucceed(t, props[g])
		want := []string{fmt.Sprint("first-", g), fmt.Sprint("second-", g)}
		if g == lag {
			want = []string{want[0], "while lagging", want[1]}
		}
		requireApplied(c, g, want)
		c.requireLeader(g, 2, 3)
	}
}

// A restart is a reload by a new host: the store and the applier are all that survive.
func TestRestartResumesFromStoreAndApplier(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 6}, nil)
	gids := groupIDs(20)
	c.load(gids...)
	c.campaign(1, gids...)
	for _, g := range gids {
		c.propose(1, g, seq("before", 3)...)
	}
	c.stabilize()

	for _, id := range c.ids {
		c.hub.Detach(id)
		c.startHost(id)
	}
	c.load(gids...)
	c.stabilize()
	for _, g := range gids {
		for _, id := range c.ids {
			if st := c.status(id, g); st.Term != 2 || st.Commit != 5 || st.Applied != 5 || st.LastIndex != 5 {
				t.Fatalf("group %d on restarted node %d: %+v, want term 2, commit, applied and last 5", g, id, st)
			}
		}
	}
	c.campaign(3, gids...)
	props := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		props[g] = c.propose(3, g, seq("after", 2)...)
	}
	c.stabilize()
	for _, g := range gids {
		if idx := mustSucceed(t, props[g]); idx[0] != 7 || idx[1] != 8 {
			t.Fatalf("group %d: proposals after restart at %v, want [7 8]", g, idx)
		}
		requireApplied(c, g, append(seq("before", 3), seq("after", 2)...))
	}
}

// The Applier may finish applying before the commit index that covers the entries is saved;
// a reload then resumes raft at the saved commit index and must not hand those entries to
// the Applier again.
func TestReloadWithApplierAheadOfStoredCommit(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 7}, nil)
	g := groupIDs(1)[0]
	c.load(g)
	c.campaign(1, g)
	mustSucceedAfter(t, c, c.propose(1, g, seq("x", 3)...))

	// Rewind node 3's stored commit index to 2, as if it crashed before saving the hard
	// state that followed its last apply.
	st := c.status(3, g)
	if err := c.hosts[3].UnloadGroup(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	hs := hardState(st.Term, st.Vote, 2)
	if err := c.stores[3].Save([]raftstore.Update{{GroupID: g, HardState: hs}}); err != nil {
		t.Fatal(err)
	}
	if err := c.hosts[3].LoadGroup(context.Background(), multiraft.GroupSpec{GroupID: g}); err != nil {
		t.Fatal(err)
	}
	if st := c.status(3, g); st.Commit != 2 || st.Applied != 2 {
		t.Fatalf("reloaded with commit 2: %+v", st)
	}
	c.tick(1) // the leader's heartbeat brings commit 5 back; entries 3..5 are not re-applied
	mustSucceedAfter(t, c, c.propose(1, g, "y"))
	requireApplied(c, g, append(seq("x", 3), "y"))
}

func mustSucceedAfter(t *testing.T, c *cluster[*memApplier], ps []*multiraft.Proposal) []uint64 {
	t.Helper()
	c.stabilize()
	return mustSucceed(t, ps)
}
