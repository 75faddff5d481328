package multiraft_test

import (
	"errors"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

func snapshotEvery(entries, keep uint64) func(*multiraft.Config) {
	return func(cfg *multiraft.Config) {
		cfg.SnapshotEntries = entries
		cfg.SnapshotKeepEntries = keep
	}
}

// Periodic snapshots compact every replica's log; a follower that was away while the
// leader compacted past it catches up from the leader's snapshot.
func TestSnapshotsCompactAndCatchUpALaggingFollower(t *testing.T) {
	c := newFSMCluster(t, 3, 21, nil, snapshotEvery(20, 5))
	g := groupIDs(1)[0]
	c.load(g)
	c.campaign(1, g)
	first := seq("a", 200)
	c.proposeAll(1, g, first, 10)
	c.requireSameState(g, first)
	for _, id := range c.ids {
		snaps, restores := c.appliers[id].counts(g)
		if snaps < 5 || restores != 0 {
			t.Fatalf("node %d took %d snapshots and restored %d, want at least 5 and none", id, snaps, restores)
		}
		l, err := c.stores[id].Open(g)
		if err != nil {
			t.Fatal(err)
		}
		snap, err := l.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		f := c.firstIndex(id, g)
		si := snap.GetMetadata().GetIndex()
		if f < 150 || si+1 < f || si+1-f > 5 {
			t.Fatalf("node %d: log starts at %d with a snapshot at %d; want it compacted to at most 5 entries behind a recent snapshot", id, f, si)
		}
		if v := snap.GetMetadata().GetConfState().GetVoters(); len(v) != 3 {
			t.Fatalf("node %d: snapshot configuration %v, want the 3 voters", id, v)
		}
	}

	c.hub.Isolate(3)
	behind := c.status(3, g).LastIndex
	second := seq("b", 200)
	c.proposeAll(1, g, second, 10)
	if f := c.firstIndex(1, g); f <= behind+1 {
		t.Fatalf("the leader's log starts at %d; node 3 is at %d and would not need a snapshot", f, behind)
	}
	var snaps []uint64
	c.hub.SetHook(func(from uint64, env multiraft.Envelope) {
		if env.Msg.GetType() == raftpb.MessageType_MsgSnap {
			snaps = append(snaps, env.Msg.GetSnapshot().GetMetadata().GetIndex())
		}
	})
	c.hub.Heal()
	c.tick(2) // the heartbeat's response shows node 3 behind the compacted log
	c.hub.SetHook(nil)
	if len(snaps) != 1 {
		t.Fatalf("snapshots sent after the heal: %v, want one", snaps)
	}
	if _, restores := c.appliers[3].counts(g); restores != 1 {
		t.Fatalf("node 3 restored %d snapshots, want 1", restores)
	}
	all := append(append([]string{}, first...), second...)
	c.requireSameState(g, all)
	if st := c.status(1, g).Progress[3]; st.State != tracker.StateReplicate || st.Match != c.status(1, g).LastIndex {
		t.Fatalf("leader's view of node 3 after the snapshot: %+v", st)
	}

	// Node 3 goes on with entries as usual.
	c.proposeAll(1, g, seq("c", 30), 10)
	c.requireSameState(g, append(all, seq("c", 30)...))
}

// A MsgSnap the transport drops is reported failed: the leader forgets the snapshot at once
// (it probes from the follower's match, not from the snapshot's index) and sends it again
// once the follower answers.
func TestDroppedSnapshotIsReportedAndResent(t *testing.T) {
	c := newFSMCluster(t, 3, 22, nil, snapshotEvery(20, 1))
	g := groupIDs(1)[0]
	c.load(g)
	c.campaign(1, g)
	c.hub.Isolate(3)
	c.proposeAll(1, g, seq("a", 100), 10)

	sent := 0
	c.hub.SetHook(func(from uint64, env multiraft.Envelope) {
		if env.Msg.GetType() == raftpb.MessageType_MsgSnap {
			sent++
			if sent == 1 {
				c.hub.Partition(1, 3) // this one is lost, and reported unreachable
			}
		}
	})
	c.hub.Heal()
	c.tick(1)
	if sent != 1 {
		t.Fatalf("%d snapshots sent, want 1", sent)
	}
	pr := c.status(1, g).Progress[3]
	if pr.State != tracker.StateProbe || pr.Next != pr.Match+1 {
		t.Fatalf("leader's view of node 3 after its snapshot was dropped: %+v, want probing from its match", pr)
	}
	c.hub.Heal()
	c.tick(2)
	c.hub.SetHook(nil)
	if sent != 2 {
		t.Fatalf("%d snapshots sent, want the dropped one sent again", sent)
	}
	c.requireSameState(g, seq("a", 100))
}

// The arbiter's case: a whole-cluster restart on Badger, with state machines that lived in
// memory. Each host restores its state machine from the stored snapshot and replays the
// log after it.
func TestRestartRestoresFromStoredSnapshot(t *testing.T) {
	dirs := map[uint64]string{}
	open := func(id uint64) raftstore.Store {
		if dirs[id] == "" {
			dirs[id] = t.TempDir()
		}
		b, err := raftstore.OpenBadger(dirs[id])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	c := newFSMCluster(t, 3, 23, open, snapshotEvery(20, 5))
	t.Cleanup(func() {
		for _, s := range c.stores {
			_ = s.Close()
		}
	})
	g := groupIDs(1)[0]
	c.load(g)
	c.campaign(2, g)
	before := seq("a", 200)
	c.proposeAll(2, g, before, 7)
	applied := c.appliers[1].state(g).Applied

	for _, id := range c.ids {
		c.restart(id, true, true)
	}
	c.load(g)
	for _, id := range c.ids {
		if _, restores := c.appliers[id].counts(g); restores != 1 {
			t.Fatalf("node %d restored %d snapshots on load, want 1", id, restores)
		}
	}
	c.stabilize()
	for _, id := range c.ids {
		if st := c.appliers[id].state(g); st.Applied > applied || st.Applied+5 < applied {
			t.Fatalf("node %d resumed at %d, want close to %d (the stored commit index)", id, st.Applied, applied)
		}
	}
	c.campaign(3, g)
	c.proposeAll(3, g, seq("b", 50), 10)
	c.requireSameState(g, append(before, seq("b", 50)...))

	// One more restart, of a follower alone, while the others go on.
	c.restart(1, true, true)
	c.loadOn(g, 1)
	c.proposeAll(3, g, seq("c", 50), 10)
	c.tick(1)
	c.requireSameState(g, append(append(before, seq("b", 50)...), seq("c", 50)...))
}

// A replica whose Applier cannot restore a snapshot stops with an error instead of applying
// later entries to a state that lacks the snapshot's.
func TestSnapshotWithoutSnapshotterStopsTheHost(t *testing.T) {
	c := newFSMCluster(t, 3, 24, nil, func(cfg *multiraft.Config) {
		if cfg.NodeID == 3 {
			cfg.Applier = plainApplier{cfg.Applier}
			return
		}
		cfg.SnapshotEntries, cfg.SnapshotKeepEntries = 20, 1
	})
	g := groupIDs(1)[0]
	c.load(g)
	c.campaign(1, g)
	c.hub.Isolate(3)
	c.proposeAll(1, g, seq("a", 60), 10)
	c.hub.Heal()
	for _, id := range c.ids {
		c.hosts[id].Tick()
	}
	err := c.hub.Stabilize(0)
	if err == nil || !errors.Is(err, multiraft.ErrStopped) || !strings.Contains(err.Error(), "Snapshotter") {
		t.Fatalf("stabilize with a snapshot sent to a host without Snapshotter: %v", err)
	}
	if herr := c.hosts[3].Err(); herr == nil {
		t.Fatal("node 3 did not stop")
	}
	if st := c.appliers[3].state(g); st.Applied > 3 {
		t.Fatalf("node 3 applied up to %d past a snapshot it could not restore", st.Applied)
	}

	_, err = multiraft.New(multiraft.Config{
		NodeID: 1, Store: raftstore.NewMemory(), Transport: c.hub.Transport(9), Applier: plainApplier{newFSMApplier()},
		SnapshotEntries: 10,
	})
	if err == nil {
		t.Fatal("SnapshotEntries without a Snapshotter was accepted")
	}
}
