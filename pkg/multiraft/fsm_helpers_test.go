package multiraft_test

import (
	"context"
	"encoding/json"
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

// fsmState is a group's state machine in an fsmApplier: the data of every proposal applied,
// in order, and the index of the last entry applied.
type fsmState struct {
	Applied uint64
	Data    []string
}

// fsmApplier is an Applier and Snapshotter whose state lives in memory only, as the arbiter's
// does: a new fsmApplier after a restart knows nothing, and the host must restore it from the
// stored snapshot. Apply insists on contiguous, exactly-once delivery after the last entry
// applied or restored.
type fsmApplier struct {
	mu        sync.Mutex
	groups    map[uint64]*fsmState
	snapshots map[uint64]int
	restores  map[uint64]int
}

var _ multiraft.Snapshotter = (*fsmApplier)(nil)

func newFSMApplier() *fsmApplier {
	return &fsmApplier{groups: make(map[uint64]*fsmState), snapshots: make(map[uint64]int), restores: make(map[uint64]int)}
}

func (a *fsmApplier) group(id uint64) *fsmState {
	st := a.groups[id]
	if st == nil {
		st = &fsmState{}
		a.groups[id] = st
	}
	return st
}

func (a *fsmApplier) Apply(batch []multiraft.Committed) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range batch {
		st := a.group(c.GroupID)
		for _, e := range c.Entries {
			if want := max(st.Applied, multiraft.BootstrapIndex) + 1; e.GetIndex() != want {
				return fmt.Errorf("group %d: applied entry %d, want %d", c.GroupID, e.GetIndex(), want)
			}
			st.Applied = e.GetIndex()
			if e.GetType() == raftpb.EntryType_EntryNormal && len(e.GetData()) > 0 {
				st.Data = append(st.Data, string(e.GetData()))
			}
		}
	}
	return nil
}

func (a *fsmApplier) Applied(groupID uint64) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.group(groupID).Applied, nil
}

func (a *fsmApplier) Snapshot(groupID uint64) ([]byte, uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.group(groupID)
	data, err := json.Marshal(st)
	a.snapshots[groupID]++
	return data, st.Applied, err
}

func (a *fsmApplier) Restore(groupID uint64, snap *raftpb.Snapshot) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var st fsmState
	if err := json.Unmarshal(snap.GetData(), &st); err != nil {
		return fmt.Errorf("group %d: decode snapshot: %w", groupID, err)
	}
	if idx := snap.GetMetadata().GetIndex(); st.Applied != idx {
		return fmt.Errorf("group %d: snapshot at %d holds a state at %d", groupID, idx, st.Applied)
	}
	a.groups[groupID] = &st
	a.restores[groupID]++
	return nil
}

func (a *fsmApplier) state(groupID uint64) fsmState {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.group(groupID)
	return fsmState{Applied: st.Applied, Data: slices.Clone(st.Data)}
}

func (a *fsmApplier) counts(groupID uint64) (snapshots, restores int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.snapshots[groupID], a.restores[groupID]
}

// plainApplier hides the Snapshotter of the Applier it wraps.
type plainApplier struct{ multiraft.Applier }

// fsmCluster is n manual hosts on one hub, each with an fsmApplier and a store that open
// returns (memory, or Badger in a directory that survives restarts).
type fsmCluster struct {
	t        *testing.T
	hub      *memnet.Hub
	ids      []uint64
	hosts    map[uint64]*multiraft.Host
	stores   map[uint64]raftstore.Store
	appliers map[uint64]*fsmApplier
	open     func(id uint64) raftstore.Store
	tweak    func(*multiraft.Config)
}

func newFSMCluster(t *testing.T, n int, seed uint64, open func(id uint64) raftstore.Store, tweak func(*multiraft.Config)) *fsmCluster {
	t.Helper()
	if open == nil {
		open = func(uint64) raftstore.Store { return raftstore.NewMemory() }
	}
	c := &fsmCluster{
		t:        t,
		hub:      memnet.New(memnet.Options{Seed: seed}),
		hosts:    make(map[uint64]*multiraft.Host),
		stores:   make(map[uint64]raftstore.Store),
		appliers: make(map[uint64]*fsmApplier),
		open:     open,
		tweak:    tweak,
	}
	for id := uint64(1); id <= uint64(n); id++ {
		c.ids = append(c.ids, id)
		c.stores[id] = open(id)
		c.appliers[id] = newFSMApplier()
		c.start(id)
	}
	return c
}

// start (re)creates node id's host on its current store and applier.
func (c *fsmCluster) start(id uint64) {
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
}

// restart is a crash of node id: its host goes and a new one starts on the same store. With
// fresh, the state machine is lost too (it lived in memory), as the arbiter's is.
func (c *fsmCluster) restart(id uint64, reopen, fresh bool) {
	c.t.Helper()
	c.hub.Detach(id)
	if reopen {
		if err := c.stores[id].Close(); err != nil {
			c.t.Fatalf("node %d: close store: %v", id, err)
		}
		c.stores[id] = c.open(id)
	}
	if fresh {
		c.appliers[id] = newFSMApplier()
	}
	c.start(id)
}

func (c *fsmCluster) load(gid uint64, nodes ...uint64) {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.ids
	}
	for _, id := range nodes {
		if err := c.hosts[id].LoadGroup(context.Background(), multiraft.GroupSpec{GroupID: gid, Voters: c.ids}); err != nil {
			c.t.Fatalf("node %d: load group %d: %v", id, gid, err)
		}
	}
}

func (c *fsmCluster) stabilize() {
	c.t.Helper()
	if err := c.hub.Stabilize(0); err != nil {
		c.t.Fatal(err)
	}
}

func (c *fsmCluster) tick(n int) {
	c.t.Helper()
	for range n {
		for _, id := range c.ids {
			c.hosts[id].Tick()
		}
		c.stabilize()
	}
}

func (c *fsmCluster) status(node, gid uint64) multiraft.Status {
	c.t.Helper()
	st, err := c.hosts[node].Status(context.Background(), gid)
	if err != nil {
		c.t.Fatalf("node %d: status of group %d: %v", node, gid, err)
	}
	return st
}

// leaderOf returns the replica that every given node agrees leads gid, or 0.
func (c *fsmCluster) leaderOf(gid uint64, nodes ...uint64) uint64 {
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

// proposeAll proposes data on node in rounds of perRound proposals and requires them all
// to succeed.
func (c *fsmCluster) proposeAll(node, gid uint64, data []string, perRound int) {
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

func (c *fsmCluster) firstIndex(node, gid uint64) uint64 {
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

// requireSameState checks that every node's state machine holds want, at the same index.
func (c *fsmCluster) requireSameState(gid uint64, want []string, nodes ...uint64) {
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

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}
