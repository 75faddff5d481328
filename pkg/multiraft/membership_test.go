package multiraft_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

func confChange(typ raftpb.ConfChangeType, node uint64) *raftpb.ConfChangeV2 {
	return &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: typ.Enum(), NodeId: new(node)}}}
}

// changeConf proposes cc on node, lets the cluster settle and returns the entry's index.
func changeConf(t *testing.T, h *multiraft.Host, stabilize func(), g uint64, cc *raftpb.ConfChangeV2) uint64 {
	t.Helper()
	p := h.ProposeConfChangeAsync(g, cc)
	stabilize()
	idx, err := p.Result()
	if err != nil {
		t.Fatalf("conf change %v: %v", cc, err)
	}
	return idx
}

func requireConf(t *testing.T, st multiraft.Status, voters, learners, outgoing []uint64) {
	t.Helper()
	cs := st.ConfState
	if !slices.Equal(cs.GetVoters(), voters) || !slices.Equal(cs.GetLearners(), learners) || !slices.Equal(cs.GetVotersOutgoing(), outgoing) {
		t.Fatalf("group %d on node %d: configuration %v, want voters %v, learners %v, outgoing voters %v",
			st.GroupID, st.NodeID, cs, voters, learners, outgoing)
	}
}

// Replica-set repair in the replica tier: a new replica joins with an empty log, is caught up
// as a learner, promoted, and a failed replica (the leader, here) is removed. The new voter
// set survives hibernation and restarts.
func TestAddPromoteAndRemoveReplicas(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 3, memnet.Options{Seed: 41}, nil)
	g := groupIDs(1)[0]
	c.load(g)
	c.campaign(3, g)
	mustSucceedAfter(t, c, c.propose(3, g, seq("a", 5)...))

	c.stores[4] = raftstore.NewMemory()
	c.appliers[4] = newMemApplier()
	c.startHost(4)
	if err := c.hosts[4].LoadGroup(ctx, multiraft.GroupSpec{GroupID: g, Join: true, Voters: []uint64{4}}); err == nil {
		t.Fatal("a join with voters was accepted")
	}
	if err := c.hosts[4].LoadGroup(ctx, multiraft.GroupSpec{GroupID: g, Join: true}); err != nil {
		t.Fatal(err)
	}
	if st := c.status(4, g); st.LastIndex != 0 || st.Term != 0 || len(st.ConfState.GetVoters()) != 0 {
		t.Fatalf("a joining replica before the leader reached it: %+v", st)
	}
	if err := c.hosts[4].Campaign(ctx, g); !errors.Is(err, multiraft.ErrCampaignIgnored) {
		t.Fatalf("campaign on a replica that has not joined yet: %v, want ErrCampaignIgnored", err)
	}

	var snaps []uint64
	c.hub.SetHook(func(from uint64, env multiraft.Envelope) {
		if env.Msg.GetType() == raftpb.MessageType_MsgSnap {
			snaps = append(snaps, env.Msg.GetSnapshot().GetMetadata().GetIndex())
		}
	})
	onFollower := c.hosts[1].ProposeConfChangeAsync(g, confChange(raftpb.ConfChangeType_ConfChangeAddLearnerNode, 4))
	c.stabilize()
	var nle *multiraft.NotLeaderError
	if _, err := onFollower.Result(); !errors.As(err, &nle) || nle.LeaderID != 3 {
		t.Fatalf("conf change on a follower: %v, want NotLeaderError naming 3", err)
	}
	changeConf(t, c.hosts[3], c.stabilize, g, confChange(raftpb.ConfChangeType_ConfChangeAddLearnerNode, 4))
	c.hub.SetHook(nil)
	// The leader probed node 4 as soon as it applied the change; the empty log had nothing in
	// common with it, so it got the bootstrap state, then every entry.
	if !slices.Equal(snaps, []uint64{multiraft.BootstrapIndex}) {
		t.Fatalf("snapshots sent to the joining replica: %v, want the bootstrap state only", snaps)
	}
	lead := c.status(3, g)
	if pr := lead.Progress[4]; !pr.Learner || pr.Match != lead.LastIndex {
		t.Fatalf("leader's view of the new learner: %+v, want a learner caught up to %d", pr, lead.LastIndex)
	}
	if got, want := c.appliers[4].entries(g), c.appliers[3].entries(g); !slices.Equal(got, want) {
		t.Fatalf("the learner applied %v, the leader %v", got, want)
	}
	requireConf(t, c.status(4, g), []uint64{1, 2, 3}, []uint64{4}, nil)
	if err := c.hosts[4].Campaign(ctx, g); !errors.Is(err, multiraft.ErrCampaignIgnored) {
		t.Fatalf("campaign on a learner: %v, want ErrCampaignIgnored", err)
	}

	// Raft takes one conf change at a time; the host says which one it refused.
	promote := c.hosts[3].ProposeConfChangeAsync(g, confChange(raftpb.ConfChangeType_ConfChangeAddNode, 4))
	early := c.hosts[3].ProposeConfChangeAsync(g, confChange(raftpb.ConfChangeType_ConfChangeRemoveNode, 3))
	invalid := c.hosts[3].ProposeConfChangeAsync(g, &raftpb.ConfChangeV2{}) // leave a joint config that is not joint
	c.stabilize()
	if _, err := promote.Result(); err != nil {
		t.Fatalf("promotion: %v", err)
	}
	for name, p := range map[string]*multiraft.Proposal{"pending": early, "invalid": invalid} {
		if _, err := p.Result(); !errors.Is(err, multiraft.ErrConfChangeRefused) {
			t.Fatalf("%s conf change: %v, want ErrConfChangeRefused", name, err)
		}
	}
	for _, id := range []uint64{1, 2, 3, 4} {
		requireConf(t, c.status(id, g), []uint64{1, 2, 3, 4}, nil, nil)
	}

	// The leader removes itself and steps down once the change is applied.
	changeConf(t, c.hosts[3], c.stabilize, g, confChange(raftpb.ConfChangeType_ConfChangeRemoveNode, 3))
	if st := c.status(3, g); st.Role == raft.StateLeader {
		t.Fatal("the removed leader still leads")
	}
	for _, id := range []uint64{1, 2, 4} {
		requireConf(t, c.status(id, g), []uint64{1, 2, 4}, nil, nil)
	}
	if err := c.hosts[3].Campaign(ctx, g); !errors.Is(err, multiraft.ErrCampaignIgnored) {
		t.Fatalf("campaign on a removed replica: %v, want ErrCampaignIgnored", err)
	}
	c.campaign(1, g)
	mustSucceedAfter(t, c, c.propose(1, g, seq("b", 5)...))
	want := append(seq("a", 5), seq("b", 5)...)
	for _, id := range []uint64{1, 2, 4} {
		if got := c.appliers[id].userData(g); !slices.Equal(got, want) {
			t.Fatalf("node %d applied %q, want %q", id, got, want)
		}
	}
	if got := c.appliers[3].userData(g); !slices.Equal(got, seq("a", 5)) {
		t.Fatalf("the removed node applied %q", got)
	}
	if got, ref := c.storedLog(4, g), c.storedLog(1, g); !slices.Equal(got, ref) {
		t.Fatalf("node 4 stored %v, node 1 stored %v", got, ref)
	}

	// Hibernation and restarts bring back the current voters, not the bootstrap ones.
	for _, id := range []uint64{4, 1} {
		if err := c.hosts[id].UnloadGroup(ctx, g); err != nil {
			t.Fatalf("node %d: unload: %v", id, err)
		}
		if err := c.hosts[id].LoadGroup(ctx, multiraft.GroupSpec{GroupID: g}); err != nil {
			t.Fatalf("node %d: reload: %v", id, err)
		}
		requireConf(t, c.status(id, g), []uint64{1, 2, 4}, nil, nil)
	}
	c.hub.Detach(2)
	c.startHost(2)
	if err := c.hosts[2].LoadGroup(ctx, multiraft.GroupSpec{GroupID: g}); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	requireConf(t, c.status(2, g), []uint64{1, 2, 4}, nil, nil)

	c.campaign(4, g)
	if st := c.status(4, g); st.Role != raft.StateLeader {
		t.Fatalf("node 4 is %v after its campaign", st.Role)
	}
	mustSucceedAfter(t, c, c.propose(4, g, seq("c", 3)...))
	want = append(want, seq("c", 3)...)
	for _, id := range []uint64{1, 2, 4} {
		if got := c.appliers[id].userData(g); !slices.Equal(got, want) {
			t.Fatalf("node %d applied %q, want %q", id, got, want)
		}
	}
}

// A replica added to a group whose log was compacted gets the leader's last snapshot, taken
// before the replica was added (its configuration lacks the replica), and catches up from it.
func TestJoinACompactedGroup(t *testing.T) {
	ctx := context.Background()
	c := newFSMCluster(t, 3, 42, nil, snapshotEvery(20, 5))
	g := groupIDs(1)[0]
	c.load(g)
	c.campaign(1, g)
	c.proposeAll(1, g, seq("a", 100), 10)

	c.stores[4] = raftstore.NewMemory()
	c.appliers[4] = newFSMApplier()
	c.startHost(4)
	if err := c.hosts[4].LoadGroup(ctx, multiraft.GroupSpec{GroupID: g, Join: true}); err != nil {
		t.Fatal(err)
	}
	var sent []*raftpb.Snapshot
	c.hub.SetHook(func(from uint64, env multiraft.Envelope) {
		if env.Msg.GetType() == raftpb.MessageType_MsgSnap {
			sent = append(sent, env.Msg.GetSnapshot())
		}
	})
	changeConf(t, c.hosts[1], c.stabilize, g, confChange(raftpb.ConfChangeType_ConfChangeAddLearnerNode, 4))
	c.hub.SetHook(nil)
	if len(sent) != 1 || slices.Contains(sent[0].GetMetadata().GetConfState().GetLearners(), 4) {
		t.Fatalf("snapshots sent: %v, want one from before node 4 was added", sent)
	}
	if _, restores := c.appliers[4].counts(g); restores != 1 {
		t.Fatalf("node 4 restored %d snapshots, want 1", restores)
	}
	requireConf(t, c.status(4, g), []uint64{1, 2, 3}, []uint64{4}, nil)
	c.requireSameState(g, seq("a", 100), 1, 2, 3, 4)

	changeConf(t, c.hosts[1], c.stabilize, g, confChange(raftpb.ConfChangeType_ConfChangeAddNode, 4))
	c.proposeAll(1, g, seq("b", 50), 10)
	c.requireSameState(g, append(seq("a", 100), seq("b", 50)...), 1, 2, 3, 4)
	requireConf(t, c.status(4, g), []uint64{1, 2, 3, 4}, nil, nil)
}

// forgetfulStore loses every configuration record, as a crash right after each conf change
// is applied (and before its record is durable) would.
type forgetfulStore struct{ raftstore.Store }

func (forgetfulStore) SaveConfState(uint64, uint64, *raftpb.ConfState) error { return nil }

// forgetAfter drops what the applier applied after index, as a state machine that persists
// lazily loses in a crash.
func (a *memApplier) forgetAfter(groupID, index uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	log := a.logs[groupID]
	n := 0
	for n < len(log) && log[n].Index <= index {
		n++
	}
	a.logs[groupID] = log[:n]
}

// The configuration record and the Applier's durable state may each be ahead of the other
// after a crash. A joint configuration makes a conf change applied twice, or missed, visible:
// leaving a joint configuration twice makes raft panic.
func TestConfigurationSurvivesLostRecordsAndLaggingAppliers(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 3, memnet.Options{Seed: 43}, func(cfg *multiraft.Config) {
		if cfg.NodeID == 2 {
			cfg.Store = forgetfulStore{cfg.Store}
		}
	})
	g := groupIDs(1)[0]
	c.load(g)
	c.campaign(1, g)
	mustSucceedAfter(t, c, c.propose(1, g, seq("a", 3)...))

	joint := &raftpb.ConfChangeV2{
		Transition: raftpb.ConfChangeTransition_ConfChangeTransitionJointExplicit.Enum(),
		Changes: []*raftpb.ConfChangeSingle{
			{Type: raftpb.ConfChangeType_ConfChangeAddNode.Enum(), NodeId: new(uint64(4))},
			{Type: raftpb.ConfChangeType_ConfChangeRemoveNode.Enum(), NodeId: new(uint64(3))},
		},
	}
	enter := changeConf(t, c.hosts[1], c.stabilize, g, joint)
	requireConf(t, c.status(1, g), []uint64{1, 2, 4}, nil, []uint64{1, 2, 3})
	changeConf(t, c.hosts[1], c.stabilize, g, &raftpb.ConfChangeV2{})
	requireConf(t, c.status(1, g), []uint64{1, 2, 4}, nil, nil)
	mustSucceedAfter(t, c, c.propose(1, g, seq("b", 3)...))

	// Node 1's state machine made only the entries up to the joint one durable; its record
	// is of the later one. Node 2 has no record at all.
	c.appliers[1].forgetAfter(g, enter)
	for _, id := range []uint64{1, 2} {
		c.hub.Detach(id)
		c.startHost(id)
		if err := c.hosts[id].LoadGroup(ctx, multiraft.GroupSpec{GroupID: g}); err != nil {
			t.Fatalf("node %d: reload: %v", id, err)
		}
	}
	c.stabilize()
	for _, id := range []uint64{1, 2} {
		requireConf(t, c.status(id, g), []uint64{1, 2, 4}, nil, nil)
		if got, want := c.appliers[id].userData(g), append(seq("a", 3), seq("b", 3)...); !slices.Equal(got, want) {
			t.Fatalf("node %d applied %q after the restart, want %q", id, got, want)
		}
	}
	c.campaign(1, g)
	mustSucceedAfter(t, c, c.propose(1, g, "c"))
	for _, id := range []uint64{1, 2} {
		if got := c.appliers[id].userData(g); last(got) != "c" {
			t.Fatalf("node %d applied %q", id, got)
		}
	}
}

// A replica whose store was replaced (wiped disk) comes back on probation: the group's
// configuration still counts it as the voter its old store was, so until the leader removes
// it and adds it back with its token it must neither vote (its empty log would elect a
// lagging candidate) nor take a heartbeat's commit index (raft would panic: the leader
// believes this replica holds what the old store held).
func TestReplacedStoreRejoinsOnProbation(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 3, memnet.Options{Seed: 43}, nil)
	g := groupIDs(1)[0]
	c.load(g)
	c.campaign(1, g)
	mustSucceedAfter(t, c, c.propose(1, g, seq("a", 5)...))

	// Node 3's disk is replaced: a new, empty store and state machine.
	c.hub.Detach(3)
	c.stores[3] = raftstore.NewMemory()
	c.appliers[3] = newMemApplier()
	c.startHost(3)
	token := []byte("store-3b")
	if err := c.hosts[3].LoadGroup(ctx, multiraft.GroupSpec{GroupID: g, Join: true, AdmitToken: token}); err != nil {
		t.Fatal(err)
	}
	mustSucceedAfter(t, c, c.propose(1, g, seq("b", 3)...))
	c.tick(5) // heartbeats, with the commit index the leader believes node 3 holds
	if err := c.hosts[3].Failure(g); err != nil {
		t.Fatalf("the replaced store's group failed on a heartbeat: %v", err)
	}
	if st := c.status(3, g); !st.OnProbation {
		t.Fatalf("node 3 is not on probation: %+v", st)
	}
	if err := c.hosts[3].Campaign(ctx, g); !errors.Is(err, multiraft.ErrCampaignIgnored) {
		t.Fatalf("campaign on probation: %v, want ErrCampaignIgnored", err)
	}

	// The leader is cut off; node 2 can win only with node 3's vote, which it must not get.
	c.hub.Isolate(1)
	if err := c.hosts[2].Campaign(ctx, g); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if st := c.status(2, g); st.Role == raft.StateLeader {
		t.Fatalf("node 2 was elected with the vote of a replica on probation (term %d)", st.Term)
	}
	c.hub.Heal()
	c.campaign(2, g)
	if st := c.status(2, g); st.Role != raft.StateLeader {
		t.Fatalf("node 2 is %v after its campaign with node 1's vote", st.Role)
	}

	// The rejoin: the old store's place goes, the new store comes back as a learner with its
	// token, catches up and is promoted.
	changeConf(t, c.hosts[2], c.stabilize, g, confChange(raftpb.ConfChangeType_ConfChangeRemoveNode, 3))
	add := confChange(raftpb.ConfChangeType_ConfChangeAddLearnerNode, 3)
	add.Context = token
	changeConf(t, c.hosts[2], c.stabilize, g, add)
	c.tick(3) // a probe beyond node 3's log is answered once per heartbeat
	if st := c.status(3, g); st.OnProbation {
		t.Fatalf("node 3 applied its re-admission and is still on probation: %+v", st)
	}
	changeConf(t, c.hosts[2], c.stabilize, g, confChange(raftpb.ConfChangeType_ConfChangeAddNode, 3))
	for _, id := range []uint64{1, 2, 3} {
		requireConf(t, c.status(id, g), []uint64{1, 2, 3}, nil, nil)
	}
	want := append(seq("a", 5), seq("b", 3)...)
	if got := c.appliers[3].userData(g); !slices.Equal(got, want) {
		t.Fatalf("node 3 applied %q, want %q", got, want)
	}

	// Admitted, it votes again: node 1 wins with it while the leader is cut off.
	c.hub.Isolate(2)
	c.campaign(1, g)
	if st := c.status(1, g); st.Role != raft.StateLeader {
		t.Fatalf("node 1 is %v: the admitted replica did not vote", st.Role)
	}
}

// Admit ends a probation without a conf change: the control tier recorded the new store.
func TestAdmitEndsProbation(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 3, memnet.Options{Seed: 44}, nil)
	g := groupIDs(1)[0]
	c.load(g)
	c.hosts[3].UnloadGroup(ctx, g) //nolint:errcheck // reloaded on probation below
	if err := c.hosts[3].LoadGroup(ctx, multiraft.GroupSpec{GroupID: g, AdmitToken: []byte("t")}); err != nil {
		t.Fatal(err)
	}
	if !c.status(3, g).OnProbation {
		t.Fatal("not on probation")
	}
	if err := c.hosts[3].Admit(ctx, g); err != nil {
		t.Fatal(err)
	}
	if c.status(3, g).OnProbation {
		t.Fatal("still on probation after Admit")
	}
	c.campaign(3, g)
	if st := c.status(3, g); st.Role != raft.StateLeader {
		t.Fatalf("node 3 is %v after its campaign", st.Role)
	}
}
