package multiraft_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// appliedEntry is what a memApplier recorded of one entry.
type appliedEntry struct {
	Index, Term uint64
	Type        raftpb.EntryType
	Data        string
}

// memApplier records every applied entry and insists on contiguous, exactly-once delivery:
// a gap or a repeat fails Apply, which stops the host and fails the test.
type memApplier struct {
	mu      sync.Mutex
	logs    map[uint64][]appliedEntry
	changed chan struct{}
}

func newMemApplier() *memApplier {
	return &memApplier{logs: make(map[uint64][]appliedEntry), changed: make(chan struct{})}
}

func (a *memApplier) Apply(batch []multiraft.Committed) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range batch {
		log := a.logs[c.GroupID]
		for _, e := range c.Entries {
			want := multiraft.BootstrapIndex + 1
			if n := len(log); n > 0 {
				want = log[n-1].Index + 1
			}
			if e.GetIndex() != want {
				return fmt.Errorf("group %d: applied entry %d, want %d", c.GroupID, e.GetIndex(), want)
			}
			log = append(log, appliedEntry{e.GetIndex(), e.GetTerm(), e.GetType(), string(e.GetData())})
		}
		a.logs[c.GroupID] = log
	}
	close(a.changed)
	a.changed = make(chan struct{})
	return nil
}

func (a *memApplier) Applied(groupID uint64) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if log := a.logs[groupID]; len(log) > 0 {
		return log[len(log)-1].Index, nil
	}
	return 0, nil
}

func (a *memApplier) entries(groupID uint64) []appliedEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.logs[groupID])
}

// userData is the data of the applied entries that came from proposals, in order.
func (a *memApplier) userData(groupID uint64) []string {
	var out []string
	for _, e := range a.entries(groupID) {
		if e.Type == raftpb.EntryNormal && e.Data != "" {
			out = append(out, e.Data)
		}
	}
	return out
}

// state is the memApplier's view as a testApplier.
func (a *memApplier) state(groupID uint64) fsmState {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := fsmState{}
	for _, e := range a.logs[groupID] {
		st.Applied = e.Index
		if e.Type == raftpb.EntryNormal && e.Data != "" {
			st.Data = append(st.Data, e.Data)
		}
	}
	return st
}

// waitFor waits, without polling, until cond holds after some Apply.
func (a *memApplier) waitFor(ctx context.Context, cond func() bool) error {
	for {
		a.mu.Lock()
		ch := a.changed
		a.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// testApplier is an applier the cluster can compare across nodes: memApplier (a durable state
// machine, every entry recorded) or fsmApplier (in memory only, restored from snapshots).
type testApplier interface {
	multiraft.Applier
	// state is the data of the proposals applied, in order, and the index last applied.
	state(groupID uint64) fsmState
}

// cluster is n hosts on one memnet hub, in manual mode, each with a store (memory unless open
// says otherwise) and an applier of type A. Everything runs when the test says so (Tick,
// Stabilize), so a seed replays a scenario exactly.
type cluster[A testApplier] struct {
	t          testing.TB
	hub        *memnet.Hub
	ids        []uint64
	hosts      map[uint64]*multiraft.Host
	stores     map[uint64]raftstore.Store
	appliers   map[uint64]A
	open       func(id uint64) raftstore.Store
	newApplier func() A
	tweak      func(*multiraft.Config)
}

func memoryStore(uint64) raftstore.Store { return raftstore.NewMemory() }

// newCluster is n hosts with memory stores and memAppliers.
func newCluster(t testing.TB, n int, opts memnet.Options, tweak func(*multiraft.Config)) *cluster[*memApplier] {
	t.Helper()
	return startCluster(t, n, opts, memoryStore, newMemApplier, tweak)
}

// newFSMCluster is n hosts with fsmAppliers and the stores open returns (memory when nil; or
// Badger in a directory that survives restarts).
func newFSMCluster(t testing.TB, n int, seed uint64, open func(id uint64) raftstore.Store, tweak func(*multiraft.Config)) *cluster[*fsmApplier] {
	t.Helper()
	if open == nil {
		open = memoryStore
	}
	return startCluster(t, n, memnet.Options{Seed: seed}, open, newFSMApplier, tweak)
}

func startCluster[A testApplier](t testing.TB, n int, opts memnet.Options, open func(uint64) raftstore.Store, newApplier func() A, tweak func(*multiraft.Config)) *cluster[A] {
	t.Helper()
	c := &cluster[A]{
		t:          t,
		hub:        memnet.New(opts),
		hosts:      make(map[uint64]*multiraft.Host),
		stores:     make(map[uint64]raftstore.Store),
		appliers:   make(map[uint64]A),
		open:       open,
		newApplier: newApplier,
		tweak:      tweak,
	}
	for id := uint64(1); id <= uint64(n); id++ {
		c.ids = append(c.ids, id)
		c.stores[id] = open(id)
		c.appliers[id] = newApplier()
		c.startHost(id)
	}
	return c
}

// startHost (re)creates node id's host on its existing store and applier: a restart.
func (c *cluster[A]) startHost(id uint64) *multiraft.Host {
	c.t.Helper()
	cfg := multiraft.Config{
		NodeID:    id,
		Store:     c.stores[id],
		Transport: c.hub.Transport(id),
		Applier:   c.appliers[id],
		Logger:    slog.New(slog.NewTextHandler(c.t.Output(), &slog.HandlerOptions{Level: slog.LevelError})),
		Workers:   2,
		Manual:    true,
	}
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	h, err := multiraft.New(cfg)
	if err != nil {
		c.t.Fatalf("new host %d: %v", id, err)
	}
	c.hosts[id] = h
	c.hub.Attach(id, h)
	return h
}

// restart is a crash of node id: its host goes and a new one starts on the same store
// (closed and opened again with reopen). With fresh, the state machine is lost too (it lived
// in memory), as the arbiter's is.
func (c *cluster[A]) restart(id uint64, reopen, fresh bool) {
	c.t.Helper()
	c.hub.Detach(id)
	if reopen {
		if err := c.stores[id].Close(); err != nil {
			c.t.Fatalf("node %d: close store: %v", id, err)
		}
		c.stores[id] = c.open(id)
	}
	if fresh {
		c.appliers[id] = c.newApplier()
	}
	c.startHost(id)
}

// load loads the groups on every node, with every node a voter.
func (c *cluster[A]) load(gids ...uint64) {
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
}

// loadOn loads one group, with every node a voter, on the given nodes only.
func (c *cluster[A]) loadOn(gid uint64, nodes ...uint64) {
	c.t.Helper()
	for _, id := range nodes {
		if err := c.hosts[id].LoadGroup(context.Background(), multiraft.GroupSpec{GroupID: gid, Voters: c.ids}); err != nil {
			c.t.Fatalf("node %d: load group %d: %v", id, gid, err)
		}
	}
}

func (c *cluster[A]) stabilize() {
	c.t.Helper()
	if err := c.hub.Stabilize(0); err != nil {
		c.t.Fatal(err)
	}
}

// tick ticks every host n times, settling the cluster after each tick.
func (c *cluster[A]) tick(n int) {
	c.t.Helper()
	for range n {
		for _, id := range c.ids {
			c.hosts[id].Tick()
		}
		c.stabilize()
	}
}

// tickUntil ticks the given hosts, settling after each tick, until cond holds; it fails the
// test after max ticks.
func (c *cluster[A]) tickUntil(max int, what string, nodes []uint64, cond func() bool) {
	c.t.Helper()
	for i := 0; !cond(); i++ {
		if i == max {
			c.t.Fatalf("after %d ticks: %s", max, what)
		}
		for _, id := range nodes {
			c.hosts[id].Tick()
		}
		c.stabilize()
	}
}

func (c *cluster[A]) campaign(node uint64, gids ...uint64) {
	c.t.Helper()
	for _, g := range gids {
		if err := c.hosts[node].Campaign(context.Background(), g); err != nil {
			c.t.Fatalf("node %d: campaign group %d: %v", node, g, err)
		}
	}
	c.stabilize()
}

func (c *cluster[A]) status(node, gid uint64) multiraft.Status {
	c.t.Helper()
	st, err := c.hosts[node].Status(context.Background(), gid)
	if err != nil {
		c.t.Fatalf("node %d: status of group %d: %v", node, gid, err)
	}
	return st
}

// requireLeader checks that every host knows leader as the leader of gid at term, and that
// leader itself is in the leader role.
func (c *cluster[A]) requireLeader(gid, leader, term uint64) {
	c.t.Helper()
	for _, id := range c.ids {
		st := c.status(id, gid)
		if st.Leader != leader || st.Term != term {
			c.t.Fatalf("group %d on node %d: leader %d term %d, want leader %d term %d", gid, id, st.Leader, st.Term, leader, term)
		}
		wantRole := raft.StateFollower
		if id == leader {
			wantRole = raft.StateLeader
		}
		if st.Role != wantRole {
			c.t.Fatalf("group %d on node %d: role %v, want %v", gid, id, st.Role, wantRole)
		}
	}
}

// leaderOf returns the replica that every given node agrees leads gid, or 0.
func (c *cluster[A]) leaderOf(gid uint64, nodes ...uint64) uint64 {
	c.t.Helper()
	var leader, term uint64
	for i, id := range nodes {
		st := c.status(id, gid)
		if i == 0 {
			leader, term = st.Leader, st.Term
		}
		if st.Leader == 0 || st.Leader != leader || st.Term != term {
			return 0
		}
	}
	if st := c.status(leader, gid); st.Role != raft.StateLeader || st.Term != term {
		return 0
	}
	return leader
}

func (c *cluster[A]) propose(node, gid uint64, data ...string) []*multiraft.Proposal {
	ps := make([]*multiraft.Proposal, len(data))
	for i, d := range data {
		ps[i] = c.hosts[node].ProposeAsync(gid, []byte(d))
	}
	return ps
}

// proposeAll proposes data on node in rounds of perRound proposals and requires them all
// to succeed.
func (c *cluster[A]) proposeAll(node, gid uint64, data []string, perRound int) {
	c.t.Helper()
	for len(data) > 0 {
		n := min(perRound, len(data))
		ps := make([]*multiraft.Proposal, n)
		for i, d := range data[:n] {
			ps[i] = c.hosts[node].ProposeAsync(gid, []byte(d))
		}
		c.stabilize()
		mustSucceed(c.t, ps)
		data = data[n:]
	}
}

// requireApplied checks that every host applied exactly want, in order, for gid, and that
// their applied logs (index, term, type, data) are identical. It needs the memApplier's
// record of every entry.
func requireApplied(c *cluster[*memApplier], gid uint64, want []string) {
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

// requireSameState checks that every node's state machine holds want, at the same index.
func (c *cluster[A]) requireSameState(gid uint64, want []string, nodes ...uint64) {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.ids
	}
	ref := c.appliers[nodes[0]].state(gid)
	for _, id := range nodes {
		st := c.appliers[id].state(gid)
		if !slices.Equal(st.Data, want) {
			c.t.Fatalf("group %d on node %d: state %d entries (last %q) at %d, want %d entries (last %q)",
				gid, id, len(st.Data), last(st.Data), st.Applied, len(want), last(want))
		}
		if st.Applied != ref.Applied {
			c.t.Fatalf("group %d: node %d applied %d, node %d applied %d", gid, id, st.Applied, nodes[0], ref.Applied)
		}
	}
}

func (c *cluster[A]) firstIndex(node, gid uint64) uint64 {
	c.t.Helper()
	l, err := c.stores[node].Open(gid)
	if err != nil {
		c.t.Fatal(err)
	}
	first, err := l.FirstIndex()
	if err != nil {
		c.t.Fatal(err)
	}
	return first
}

// storedLog reads a group's whole log from node id's store.
func (c *cluster[A]) storedLog(id, gid uint64) []appliedEntry {
	c.t.Helper()
	log, err := c.stores[id].Open(gid)
	if err != nil {
		c.t.Fatal(err)
	}
	first, _ := log.FirstIndex()
	last, _ := log.LastIndex()
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

func groupIDs(n int) []uint64 {
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = uint64(1000 + i)
	}
	return ids
}

func mustSucceed(t testing.TB, ps []*multiraft.Proposal) []uint64 {
	t.Helper()
	idx := make([]uint64, len(ps))
	for i, p := range ps {
		n, err := p.Result()
		if err != nil {
			t.Fatalf("proposal %d: %v", i, err)
		}
		idx[i] = n
	}
	return idx
}

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

func hardState(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: &term, Vote: &vote, Commit: &commit}
}
