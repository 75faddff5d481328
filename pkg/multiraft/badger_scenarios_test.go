package multiraft_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"

	"go.etcd.io/raft/v3"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// badgerCluster is n manual hosts on one hub, each on a real Badger store in its own
// t.TempDir(), with a memApplier standing for the durable state machine. restart closes
// every host and store and reopens them on the same directories, as a whole-cluster
// restart would; the appliers (what the state machine made durable) survive it.
type badgerCluster struct {
	t        *testing.T
	hub      *memnet.Hub
	ids      []uint64
	dirs     map[uint64]string
	hosts    map[uint64]*multiraft.Host
	stores   map[uint64]*raftstore.Badger
	appliers map[uint64]*memApplier
	loaded   []uint64
	restarts int
}

func newBadgerCluster(t *testing.T, n int, seed uint64) *badgerCluster {
	t.Helper()
	c := &badgerCluster{
		t:        t,
		hub:      memnet.New(memnet.Options{Seed: seed}),
		dirs:     make(map[uint64]string),
		hosts:    make(map[uint64]*multiraft.Host),
		stores:   make(map[uint64]*raftstore.Badger),
		appliers: make(map[uint64]*memApplier),
	}
	for id := uint64(1); id <= uint64(n); id++ {
		c.ids = append(c.ids, id)
		c.dirs[id] = t.TempDir()
		c.appliers[id] = newMemApplier()
		c.open(id)
	}
	t.Cleanup(func() {
		for _, id := range c.ids {
			if s := c.stores[id]; s != nil {
				if err := s.Close(); err != nil {
					t.Errorf("node %d: close store: %v", id, err)
				}
			}
		}
	})
	return c
}

// open opens node id's store on its directory and starts a new host on it.
func (c *badgerCluster) open(id uint64) {
	c.t.Helper()
	st, err := raftstore.OpenBadger(c.dirs[id], raftstore.WithValueLogGC(0))
	if err != nil {
		c.t.Fatalf("node %d: open badger: %v", id, err)
	}
	c.stores[id] = st
	h, err := multiraft.New(multiraft.Config{
		NodeID:    id,
		Store:     st,
		Transport: c.hub.Transport(id),
		Applier:   c.appliers[id],
		Logger:    slog.New(slog.NewTextHandler(c.t.Output(), &slog.HandlerOptions{Level: slog.LevelError})),
		Workers:   2,
		Manual:    true,
	})
	if err != nil {
		c.t.Fatalf("new host %d: %v", id, err)
	}
	c.hosts[id] = h
	c.hub.Attach(id, h)
}

// restart stops every host, closes every store, then reopens them all on the same
// directories and reloads the groups loaded before (GroupSpec without voters: the stored
// configuration must be what brings them back).
func (c *badgerCluster) restart() {
	c.t.Helper()
	c.restarts++
	for _, id := range c.ids {
		c.hub.Detach(id)
		if err := c.stores[id].Close(); err != nil {
			c.t.Fatalf("node %d: close store: %v", id, err)
		}
		c.stores[id] = nil
	}
	for _, id := range c.ids {
		c.open(id)
	}
	specs := make([]multiraft.GroupSpec, len(c.loaded))
	for i, g := range c.loaded {
		specs[i] = multiraft.GroupSpec{GroupID: g}
	}
	for _, id := range c.ids {
		if err := c.hosts[id].LoadGroups(context.Background(), specs); err != nil {
			c.t.Fatalf("node %d: reload after restart %d: %v", id, c.restarts, err)
		}
	}
	c.stabilize()
}

func (c *badgerCluster) load(gids ...uint64) {
	c.t.Helper()
	specs := make([]multiraft.GroupSpec, len(gids))
	for i, g := range gids {
		specs[i] = multiraft.GroupSpec{GroupID: g, Voters: c.ids}
	}
	for _, id := range c.ids {
		if err := c.hosts[id].LoadGroups(context.Background(), specs); err != nil {
			c.t.Fatalf("node %d: load: %v", id, err)
		}
	}
	c.loaded = append(c.loaded, gids...)
}

func (c *badgerCluster) stabilize() {
	c.t.Helper()
	if err := c.hub.Stabilize(0); err != nil {
		c.t.Fatal(err)
	}
}

func (c *badgerCluster) tick(n int) {
	c.t.Helper()
	for range n {
		for _, id := range c.ids {
			c.hosts[id].Tick()
		}
		c.stabilize()
	}
}

func (c *badgerCluster) status(node, gid uint64) multiraft.Status {
	c.t.Helper()
	st, err := c.hosts[node].Status(context.Background(), gid)
	if err != nil {
		c.t.Fatalf("node %d: status of group %d: %v", node, gid, err)
	}
	return st
}

func (c *badgerCluster) campaign(node uint64, gids ...uint64) {
	c.t.Helper()
	for _, g := range gids {
		if err := c.hosts[node].Campaign(context.Background(), g); err != nil {
			c.t.Fatalf("node %d: campaign group %d: %v", node, g, err)
		}
	}
	c.stabilize()
}

// requireLeader checks that every host agrees leader leads gid at term.
func (c *badgerCluster) requireLeader(gid, leader, term uint64) {
	c.t.Helper()
	for _, id := range c.ids {
		st := c.status(id, gid)
		wantRole := raft.StateFollower
		if id == leader {
			wantRole = raft.StateLeader
		}
		if st.Leader != leader || st.Term != term || st.Role != wantRole {
			c.t.Fatalf("group %d on node %d (after %d restarts): %v, leader %d, term %d; want %v, leader %d, term %d",
				gid, id, c.restarts, st.Role, st.Leader, st.Term, wantRole, leader, term)
		}
	}
}

// requireNoLeader checks that no host knows a leader of gid and every one is a follower at
// term.
func (c *badgerCluster) requireNoLeader(gid, term uint64) {
	c.t.Helper()
	for _, id := range c.ids {
		st := c.status(id, gid)
		if st.Leader != 0 || st.Role != raft.StateFollower || st.Term != term {
			c.t.Fatalf("group %d on node %d (after %d restarts): %v, leader %d, term %d; want a follower without leader at term %d",
				gid, id, c.restarts, st.Role, st.Leader, st.Term, term)
		}
	}
}

func (c *badgerCluster) propose(node, gid uint64, data ...string) []*multiraft.Proposal {
	ps := make([]*multiraft.Proposal, len(data))
	for i, d := range data {
		ps[i] = c.hosts[node].ProposeAsync(gid, []byte(d))
	}
	return ps
}

// requireApplied checks that every node applied exactly want for gid and that the applied
// logs are identical.
func (c *badgerCluster) requireApplied(gid uint64, want []string) {
	c.t.Helper()
	ref := c.appliers[c.ids[0]].entries(gid)
	for _, id := range c.ids {
		if got := c.appliers[id].userData(gid); !slices.Equal(got, want) {
			c.t.Fatalf("group %d on node %d: applied %q, want %q", gid, id, got, want)
		}
		if got := c.appliers[id].entries(gid); !slices.Equal(got, ref) {
			c.t.Fatalf("group %d: node %d applied %v, node %d applied %v", gid, id, got, c.ids[0], ref)
		}
	}
}

// storedLog reads a group's whole log back from node id's Badger store.
func (c *badgerCluster) storedLog(id, gid uint64) []appliedEntry {
	c.t.Helper()
	log, err := c.stores[id].Open(gid)
	if err != nil {
		c.t.Fatal(err)
	}
	first, err := log.FirstIndex()
	if err != nil {
		c.t.Fatal(err)
	}
	last, err := log.LastIndex()
	if err != nil {
		c.t.Fatal(err)
	}
	if last < first {
		return nil
	}
	ents, err := log.Entries(first, last+1, 1<<40)
	if err != nil {
		c.t.Fatalf("node %d group %d: entries [%d, %d]: %v", id, gid, first, last, err)
	}
	out := make([]appliedEntry, len(ents))
	for i, e := range ents {
		out[i] = appliedEntry{e.GetIndex(), e.GetTerm(), e.GetType(), string(e.GetData())}
	}
	return out
}

func userEntries(log []appliedEntry) []string {
	var out []string
	for _, e := range log {
		if e.Data != "" {
			out = append(out, e.Data)
		}
	}
	return out
}

// No order, no leader, on real disks and across a restart of every host: 10,000 ticks
// before and 10,000 after the restart move nothing, not even the term, and send nothing.
func TestBadgerNoGroupElectsItselfAcrossRestarts(t *testing.T) {
	c := newBadgerCluster(t, 3, 11)
	gids := groupIDs(100)
	c.load(gids...)

	run := func() {
		for range 10_000 {
			for _, id := range c.ids {
				c.hosts[id].Tick()
			}
			for _, id := range c.ids {
				if _, err := c.hosts[id].ProcessRound(); err != nil {
					t.Fatal(err)
				}
			}
			c.hub.DeliverAll()
		}
		for _, g := range gids {
			c.requireNoLeader(g, 1)
			for _, id := range c.ids {
				if st := c.status(id, g); st.Vote != 0 || st.LastIndex != multiraft.BootstrapIndex {
					t.Fatalf("group %d on node %d: vote %d, last index %d; want no vote, only the bootstrap", g, id, st.Vote, st.LastIndex)
				}
			}
		}
		if s := c.hub.Stats(); s.Sent != 0 {
			t.Fatalf("after %d restarts: %d messages sent without any order, want 0", c.restarts, s.Sent)
		}
	}
	run()
	c.restart()
	run()

	// The clock is live: an order still elects, and only then do ticks make traffic.
	c.campaign(3, gids[7])
	c.requireLeader(gids[7], 3, 2)
	c.requireNoLeader(gids[8], 1)
}

// An ordered campaign elects the chosen up-to-date replica, and a stale replica's ordered
// campaign fails, with every host restarted from Badger between the steps.
func TestBadgerOrderedCampaignAndStaleReplicaAcrossRestarts(t *testing.T) {
	c := newBadgerCluster(t, 3, 12)
	gids := groupIDs(20)
	c.load(gids...)

	c.campaign(2, gids...)
	a := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		c.requireLeader(g, 2, 2)
		a[g] = c.propose(2, g, seq(fmt.Sprint("a", g), 5)...)
	}
	c.stabilize()
	for _, g := range gids {
		mustSucceed(t, a[g])
	}

	c.restart()
	for _, g := range gids {
		// Leadership is not stored: after the restart nobody leads until ordered to.
		c.requireNoLeader(g, 2)
		for _, id := range c.ids {
			if st := c.status(id, g); st.LastIndex != 7 || st.Commit != 7 || st.Applied != 7 || st.LastTerm != 2 {
				t.Fatalf("group %d on node %d after restart: %+v, want last, commit and applied 7 at term 2", g, id, st)
			}
		}
		c.requireApplied(g, seq(fmt.Sprint("a", g), 5))
	}

	// Node 1 (up to date) is ordered and wins. Node 3 then misses a batch.
	c.campaign(1, gids...)
	for _, g := range gids {
		c.requireLeader(g, 1, 3)
	}
	c.hub.Isolate(3)
	b := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		b[g] = c.propose(1, g, seq(fmt.Sprint("b", g), 5)...)
	}
	c.stabilize()
	for _, g := range gids {
		mustSucceed(t, b[g])
	}

	c.restart()
	c.hub.Heal()
	for _, g := range gids {
		c.requireNoLeader(g, 3)
		if s3, s1 := c.status(3, g), c.status(1, g); s3.LastIndex != 8 || s1.LastIndex != 13 {
			t.Fatalf("group %d after restart: node 3 at %d, node 1 at %d; want 8 (stale) and 13", g, s3.LastIndex, s1.LastIndex)
		}
		// The stale replica is ordered to campaign: raft takes the order, and the pre-vote
		// fails on the up-to-date majority.
		if err := c.hosts[3].Campaign(context.Background(), g); err != nil {
			t.Fatalf("group %d: campaign on stale node 3: %v", g, err)
		}
		if st := c.status(3, g); st.Role != raft.StatePreCandidate {
			t.Fatalf("group %d: stale node 3 is %v after the order, want pre-candidate", g, st.Role)
		}
	}
	c.stabilize()
	for _, g := range gids {
		c.requireNoLeader(g, 3) // nobody's term moved, nobody leads
	}

	c.restart()
	c.campaign(2, gids...)
	for _, g := range gids {
		c.requireLeader(g, 2, 4)
		want := append(seq(fmt.Sprint("a", g), 5), seq(fmt.Sprint("b", g), 5)...)
		c.requireApplied(g, want)
		ref := c.storedLog(2, g)
		for _, id := range c.ids {
			if got := c.storedLog(id, g); !slices.Equal(got, ref) {
				t.Fatalf("group %d: node %d stored %v, node 2 stored %v", g, id, got, ref)
			}
		}
	}

	// Caught up, node 3 is no longer stale: after one more restart an order elects it.
	c.restart()
	c.campaign(3, gids...)
	last := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		c.requireLeader(g, 3, 5)
		last[g] = c.propose(3, g, "c")
	}
	c.stabilize()
	for _, g := range gids {
		mustSucceed(t, last[g])
		want := append(append(seq(fmt.Sprint("a", g), 5), seq(fmt.Sprint("b", g), 5)...), "c")
		c.requireApplied(g, want)
	}
}

// A leader is cut off with entries nobody else has; another replica is elected and commits
// more; every committed entry survives and the cut-off leader's divergent tail is truncated.
// All three hosts restart from Badger between every step.
func TestBadgerDeposedLeaderTailIsTruncatedAcrossRestarts(t *testing.T) {
	c := newBadgerCluster(t, 3, 13)
	gids := groupIDs(10)
	c.load(gids...)
	c.campaign(1, gids...)
	a := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		a[g] = c.propose(1, g, seq("a", 3)...)
	}
	c.stabilize()
	for _, g := range gids {
		mustSucceed(t, a[g])
	}

	// Node 1 appends and saves B, which nobody else gets.
	c.hub.Isolate(1)
	b := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		b[g] = c.propose(1, g, seq("b", 4)...)
	}
	c.stabilize()
	for _, g := range gids {
		for _, p := range b[g] {
			if _, err := p.Result(); err == nil {
				t.Fatalf("group %d: an uncommitted proposal of the isolated leader succeeded", g)
			}
		}
	}

	c.restart() // node 1 stays cut off
	for _, g := range gids {
		c.requireNoLeader(g, 2)
		st := c.status(1, g)
		if st.LastIndex != 9 || st.LastTerm != 2 || st.Commit != 5 {
			t.Fatalf("group %d on node 1 after restart: %+v, want the divergent tail on disk: last 9 at term 2, commit 5", g, st)
		}
		if log := c.storedLog(1, g); len(log) != 8 || log[7].Data != "b-003" {
			t.Fatalf("group %d: node 1 stored %v, want 8 entries ending with b-003", g, log)
		}
	}

	c.campaign(2, gids...)
	cc := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		if st := c.status(2, g); st.Role != raft.StateLeader || st.Term != 3 {
			t.Fatalf("group %d: node 2 is %v at term %d, want leader at 3", g, st.Role, st.Term)
		}
		cc[g] = c.propose(2, g, seq("c", 2)...)
	}
	c.stabilize()
	for _, g := range gids {
		mustSucceed(t, cc[g])
	}

	c.restart()
	c.hub.Heal()
	// The old leader's log is longer but older (last term 2 against 3): an order to it fails.
	for _, g := range gids {
		for _, id := range c.ids {
			// Node 1 never heard of term 3.
			if st, want := c.status(id, g), map[uint64]uint64{1: 2, 2: 3, 3: 3}[id]; st.Leader != 0 || st.Role != raft.StateFollower || st.Term != want {
				t.Fatalf("group %d on node %d after restart: %v, leader %d, term %d; want a follower without leader at term %d", g, id, st.Role, st.Leader, st.Term, want)
			}
		}
		if err := c.hosts[1].Campaign(context.Background(), g); err != nil {
			t.Fatalf("group %d: campaign on node 1: %v", g, err)
		}
	}
	c.stabilize()
	for _, g := range gids {
		c.requireNoLeader(g, 3)
		if st := c.status(1, g); st.LastIndex != 9 || st.LastTerm != 2 {
			t.Fatalf("group %d: node 1 %+v after its failed campaign, want its log untouched (last 9 at term 2)", g, st)
		}
	}

	c.restart()
	c.campaign(2, gids...)
	for _, g := range gids {
		c.requireLeader(g, 2, 4)
	}
	c.restart() // the truncation must be durable
	for _, g := range gids {
		c.requireApplied(g, append(seq("a", 3), seq("c", 2)...))
		ref := c.storedLog(2, g)
		if got := userEntries(ref); !slices.Equal(got, append(seq("a", 3), seq("c", 2)...)) {
			t.Fatalf("group %d: node 2 stored %q", g, got)
		}
		if len(ref) != 8 || ref[7].Term != 4 || ref[7].Data != "" || ref[4].Term != 3 {
			t.Fatalf("group %d: node 2 stored %v, want 2..9: a at term 2, term 3's empty entry and c, term 4's empty entry", g, ref)
		}
		for _, id := range c.ids {
			if got := c.storedLog(id, g); !slices.Equal(got, ref) {
				t.Fatalf("group %d: node %d stored %v, node 2 stored %v", g, id, got, ref)
			}
			if st := c.status(id, g); st.LastIndex != 9 || st.LastTerm != 4 || st.Commit != 9 || st.Applied != 9 {
				t.Fatalf("group %d on node %d: %+v, want last, commit and applied 9 at term 4", g, id, st)
			}
		}
	}
	// Writes go on after all that.
	c.campaign(3, gids...)
	d := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		d[g] = c.propose(3, g, "d")
	}
	c.stabilize()
	for _, g := range gids {
		mustSucceed(t, d[g])
		c.requireApplied(g, append(append(seq("a", 3), seq("c", 2)...), "d"))
	}
}
