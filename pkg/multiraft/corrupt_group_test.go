package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
)

// corruptApplier is a memApplier whose node, when damaged, cannot read any entry whose data
// starts with "corrupt", as a replica whose copy of the log is corrupt: it fails that group
// alone, having applied the group's entries before it, and fails the test (a plain error,
// which stops the host) if it is ever handed an entry of a failed group again.
type corruptApplier struct {
	*memApplier
	damaged bool

	mu     sync.Mutex
	failed map[uint64]uint64 // group -> index it failed at
}

func (a *corruptApplier) Apply(batch []multiraft.Committed) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var (
		good  []multiraft.Committed
		fails []*multiraft.GroupFailedError
	)
	for _, c := range batch {
		if at, ok := a.failed[c.GroupID]; ok {
			return fmt.Errorf("group %d: handed entry %d after it failed at %d", c.GroupID, c.Entries[0].GetIndex(), at)
		}
		ents := c.Entries
		for i, e := range ents {
			if a.damaged && strings.HasPrefix(string(e.GetData()), "corrupt") {
				a.failed[c.GroupID] = e.GetIndex()
				fails = append(fails, &multiraft.GroupFailedError{GroupID: c.GroupID, Index: e.GetIndex(), Err: errors.New("entry unreadable")})
				ents = ents[:i]
				break
			}
		}
		if len(ents) > 0 {
			good = append(good, multiraft.Committed{GroupID: c.GroupID, Entries: ents})
		}
	}
	if len(good) > 0 {
		if err := a.memApplier.Apply(good); err != nil {
			return err
		}
	}
	if len(fails) > 0 {
		return &multiraft.FailedGroupsError{Groups: fails}
	}
	return nil
}

// Item 5 of issue 12: an entry one replica cannot apply fails that group on that replica
// only. The host goes on, every other group keeps committing and applying there, the failed
// group keeps committing on the other replicas (without this one's acknowledgements), elects
// another leader when the failed replica led it, and stays failed on the damaged replica:
// no status, campaign, proposal or reload brings it back silently.
func TestCorruptEntryFailsOnlyItsGroup(t *testing.T) {
	const damaged = 2
	next := uint64(0)
	c := startCluster(t, 3, memnet.Options{Seed: 12}, memoryStore, func() *corruptApplier {
		next++
		return &corruptApplier{memApplier: newMemApplier(), damaged: next == damaged, failed: map[uint64]uint64{}}
	}, nil)
	gs := groupIDs(4)
	healthy0, follows, healthy2, leads := gs[0], gs[1], gs[2], gs[3]
	c.load(gs...)
	c.campaign(1, healthy0, follows, healthy2)
	c.campaign(damaged, leads)

	want := map[uint64][]string{}
	propose := func(node, g uint64, data ...string) {
		t.Helper()
		mustSucceed(t, c.proposeAndSettle(node, g, data...))
		want[g] = append(want[g], data...)
	}
	for _, g := range []uint64{healthy0, follows, healthy2} {
		propose(1, g, seq(fmt.Sprint("before-", g), 3)...)
	}
	propose(damaged, leads, seq("before-leads", 3)...)

	// A corrupt entry in a group the damaged replica follows: the leader's proposals commit.
	propose(1, follows, "corrupt-follows", "after-follows")
	// And in one it leads: its own proposals fail with the group's failure.
	ps := c.proposeAndSettle(damaged, leads, "corrupt-leads", "after-leads")
	for i, p := range ps {
		if _, err := p.Result(); !errors.Is(err, multiraft.ErrGroupFailed) {
			t.Fatalf("proposal %d on the failed leader: %v, want ErrGroupFailed", i, err)
		}
	}

	h := c.hosts[damaged]
	if err := h.Err(); err != nil {
		t.Fatalf("the damaged replica's host stopped: %v", err)
	}
	if got := h.FailedGroups(); !slices.Equal(got, []uint64{follows, leads}) {
		t.Fatalf("failed groups %v, want %v", got, []uint64{follows, leads})
	}
	var gf *multiraft.GroupFailedError
	_, err := h.Status(context.Background(), follows)
	if !errors.As(err, &gf) || gf.GroupID != follows || gf.Index == 0 {
		t.Fatalf("status of the failed group: %v, want its GroupFailedError", err)
	}
	failedAt := gf.Index
	if err := h.LoadGroup(context.Background(), multiraft.GroupSpec{GroupID: follows, Voters: c.ids}); !errors.Is(err, multiraft.ErrGroupFailed) {
		t.Fatalf("reloading the failed group: %v, want ErrGroupFailed", err)
	}
	if err := h.Campaign(context.Background(), leads); !errors.Is(err, multiraft.ErrGroupFailed) {
		t.Fatalf("campaign on the failed group: %v, want ErrGroupFailed", err)
	}
	if err := h.UnloadGroup(context.Background(), leads); !errors.Is(err, multiraft.ErrGroupFailed) {
		t.Fatalf("unload of the failed group: %v, want ErrGroupFailed", err)
	}
	if err := h.Failure(healthy0); err != nil {
		t.Fatalf("healthy group reported failed: %v", err)
	}

	// The group the damaged replica led elects another leader, with the third replica's vote.
	c.campaign(1, leads)
	if l := c.leaderOf(leads, 1, 3); l != 1 {
		t.Fatalf("group %d after its leader failed: leader %d on nodes 1 and 3, want 1", leads, l)
	}
	want[leads] = append(want[leads], "corrupt-leads", "after-leads")
	for _, g := range gs {
		propose(1, g, seq(fmt.Sprint("later-", g), 5)...)
	}
	c.tick(3) // heartbeats: any acknowledgement the damaged replica still sent would land now

	for _, g := range gs {
		for _, id := range []uint64{1, 3} {
			if got := c.appliers[id].userData(g); !slices.Equal(got, want[g]) {
				t.Fatalf("group %d on node %d: applied %q, want %q", g, id, got, want[g])
			}
		}
	}
	for _, g := range []uint64{healthy0, healthy2} {
		if got := c.appliers[damaged].userData(g); !slices.Equal(got, want[g]) {
			t.Fatalf("healthy group %d on the damaged replica: applied %q, want %q", g, got, want[g])
		}
	}
	for _, g := range []uint64{follows, leads} {
		got := c.appliers[damaged].userData(g)
		if len(got) != 3 || !strings.HasPrefix(got[2], "before-") {
			t.Fatalf("failed group %d on the damaged replica: applied %q, want the 3 entries before the corrupt one", g, got)
		}
	}
	// The leader committed the later entries without the damaged replica, which never
	// acknowledged anything past what it held when it failed.
	st := c.status(1, follows)
	if m := st.Progress[damaged].Match; m > failedAt+1 || st.Commit <= failedAt+1 {
		t.Fatalf("group %d: damaged replica matches %d (failed at %d), commit %d", follows, m, failedAt, st.Commit)
	}
}

// proposeAndSettle proposes on node and runs the cluster until nothing moves.
func (c *cluster[A]) proposeAndSettle(node, gid uint64, data ...string) []*multiraft.Proposal {
	c.t.Helper()
	ps := c.propose(node, gid, data...)
	c.stabilize()
	return ps
}

// resetCopy forgets what the damaged replica applied of a group, as its state machine's
// records go with the group's data on a reset, and lets it read the group's entries again:
// the corruption was in its own copy, and the entries it receives from the leader are sound.
func (a *corruptApplier) resetCopy(groupID uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.failed, groupID)
	a.damaged = false
	a.memApplier.mu.Lock()
	delete(a.memApplier.logs, groupID)
	a.memApplier.mu.Unlock()
}

// Item 5 of issue 12, the repair: a group that failed on one replica is reset there (its copy
// discarded, the failure forgotten), joins again on probation and is rejoined by the leader
// as a learner carrying its token, then promoted: it ends with every entry, the corrupt one
// included as the leader holds it, and votes again. Resetting a healthy group is refused.
func TestResetGroupRepairsAFailedCopyFromItsPeers(t *testing.T) {
	ctx := context.Background()
	const damaged = 3
	next := uint64(0)
	c := startCluster(t, 3, memnet.Options{Seed: 13}, memoryStore, func() *corruptApplier {
		next++
		return &corruptApplier{memApplier: newMemApplier(), damaged: next == damaged, failed: map[uint64]uint64{}}
	}, nil)
	gs := groupIDs(2)
	g, healthy := gs[0], gs[1]
	c.load(gs...)
	c.campaign(1, gs...)
	want := append(seq("before", 3), "corrupt-1", "after")
	mustSucceed(t, c.proposeAndSettle(1, g, want...))
	h := c.hosts[damaged]
	if err := h.Failure(g); !errors.Is(err, multiraft.ErrGroupFailed) {
		t.Fatalf("group on the damaged replica: %v, want it failed", err)
	}
	if err := h.ResetGroup(ctx, healthy); !errors.Is(err, multiraft.ErrNotFailed) {
		t.Fatalf("reset of a healthy group: %v, want ErrNotFailed", err)
	}

	// On a manual host the reset drives the rounds it needs itself.
	if err := h.ResetGroup(ctx, g); err != nil {
		t.Fatalf("reset: %v", err)
	}
	if err := h.Failure(g); err != nil {
		t.Fatalf("failure after the reset: %v", err)
	}
	log, err := c.stores[damaged].Open(g)
	if err != nil {
		t.Fatal(err)
	}
	hs, _, _ := log.InitialState()
	last, _ := log.LastIndex()
	c.stores[damaged].Release(g)
	if last != 0 || hs.GetTerm() != 0 || hs.GetVote() != 0 {
		t.Fatalf("the reset group kept last index %d, hard state %+v: want nothing left", last, hs)
	}
	c.appliers[damaged].resetCopy(g)

	token := []byte("copy-3")
	if err := h.LoadGroup(ctx, multiraft.GroupSpec{GroupID: g, Join: true, AdmitToken: token}); err != nil {
		t.Fatalf("join after the reset: %v", err)
	}
	if st := c.status(damaged, g); !st.OnProbation {
		t.Fatalf("the reset copy is not on probation: %+v", st)
	}
	changeConf(t, c.hosts[1], c.stabilize, g, confChange(raftpb.ConfChangeType_ConfChangeRemoveNode, damaged))
	add := confChange(raftpb.ConfChangeType_ConfChangeAddLearnerNode, damaged)
	add.Context = token
	changeConf(t, c.hosts[1], c.stabilize, g, add)
	c.tick(3) // a probe beyond the joined copy's log is answered once per heartbeat
	changeConf(t, c.hosts[1], c.stabilize, g, confChange(raftpb.ConfChangeType_ConfChangeAddNode, damaged))
	if st := c.status(damaged, g); st.OnProbation {
		t.Fatalf("still on probation after the change that admits it: %+v", st)
	}
	mustSucceed(t, c.proposeAndSettle(1, g, "later"))
	want = append(want, "later")
	for id := uint64(1); id <= 3; id++ {
		requireConf(t, c.status(id, g), []uint64{1, 2, 3}, nil, nil)
		if got := c.appliers[id].userData(g); !slices.Equal(got, want) {
			t.Fatalf("node %d applied %q, want %q", id, got, want)
		}
	}

	// A voter again: node 2 wins with its vote while the leader is cut off.
	c.hub.Isolate(1)
	c.campaign(2, g)
	if st := c.status(2, g); st.Role != raft.StateLeader {
		t.Fatalf("node 2 is %v: the repaired replica did not vote", st.Role)
	}
}
