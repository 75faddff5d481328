package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// raft.RawNode.Campaign returns nil for a learner and does nothing; the host must say so.
func TestCampaignIgnoredIsAnError(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 10}, nil)
	g := groupIDs(1)[0]
	for _, id := range c.ids {
		err := c.stores[id].Save([]raftstore.Update{{
			GroupID:   g,
			HardState: hardState(1, 0, 1),
			Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
				Index: proto.Uint64(1), Term: proto.Uint64(1),
				ConfState: &raftpb.ConfState{Voters: []uint64{1, 2}, Learners: []uint64{3}},
			}},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	c.load(g)
	err := c.hosts[3].Campaign(context.Background(), g)
	if !errors.Is(err, multiraft.ErrCampaignIgnored) {
		t.Fatalf("campaign on a learner: %v, want ErrCampaignIgnored", err)
	}
	if st := c.status(3, g); st.Role != raft.StateFollower || st.Term != 1 {
		t.Fatalf("learner after an ignored campaign: %v at term %d", st.Role, st.Term)
	}
	if err := c.hosts[1].Campaign(context.Background(), groupIDs(2)[1]); !errors.Is(err, multiraft.ErrGroupNotFound) {
		t.Fatalf("campaign on a group not loaded: %v, want ErrGroupNotFound", err)
	}

	c.campaign(1, g)
	mustSucceedAfter(t, c, c.propose(1, g, "to the learner too"))
	requireApplied(c, g, []string{"to the learner too"})
	st := c.status(1, g)
	if pr := st.Progress[3]; !pr.Learner || pr.Match != 3 {
		t.Fatalf("leader's view of learner 3: %+v, want a learner matching 3", pr)
	}
	// Campaigning again on the leader is a no-op, not an error.
	if err := c.hosts[1].Campaign(context.Background(), g); err != nil {
		t.Fatalf("campaign on the leader: %v", err)
	}
}

func TestTransferLeader(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 11}, nil)
	gids := groupIDs(5)
	c.load(gids...)
	c.campaign(1, gids...)
	for _, g := range gids {
		mustSucceedAfter(t, c, c.propose(1, g, "before"))
	}

	var nle *multiraft.NotLeaderError
	if err := c.hosts[2].TransferLeader(context.Background(), gids[0], 3); !errors.As(err, &nle) || nle.LeaderID != 1 {
		t.Fatalf("transfer ordered to a follower: %v, want NotLeaderError naming 1", err)
	}
	if err := c.hosts[1].TransferLeader(context.Background(), gids[0], 9); err == nil {
		t.Fatal("transfer to a node outside the group succeeded")
	}
	for _, g := range gids {
		if err := c.hosts[1].TransferLeader(context.Background(), g, 3); err != nil {
			t.Fatal(err)
		}
	}
	c.stabilize()
	for _, g := range gids {
		c.requireLeader(g, 3, 3)
		mustSucceedAfter(t, c, c.propose(3, g, "after"))
		requireApplied(c, g, []string{"before", "after"})
	}
}

func TestBadInputIsDroppedOrRefused(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 12}, nil)
	g := groupIDs(1)[0]
	c.load(g)
	c.campaign(1, g)
	before := c.status(1, g)

	msg := func(typ raftpb.MessageType, from, to uint64) *raftpb.Message {
		return &raftpb.Message{
			Type: typ.Enum(), From: proto.Uint64(from), To: proto.Uint64(to), Term: proto.Uint64(before.Term),
			Entries: []*raftpb.Entry{{Data: []byte("smuggled")}},
		}
	}
	c.hosts[1].Step(
		multiraft.Envelope{GroupID: g},
		multiraft.Envelope{GroupID: 0, Msg: msg(raftpb.MessageType_MsgHeartbeatResp, 2, 1)},
		multiraft.Envelope{GroupID: g, Msg: msg(raftpb.MessageType_MsgProp, 2, 1)},
		multiraft.Envelope{GroupID: g, Msg: msg(raftpb.MessageType_MsgHup, 2, 1)},
		multiraft.Envelope{GroupID: g, Msg: msg(raftpb.MessageType_MsgStorageAppendResp, raft.LocalAppendThread, 1)},
		multiraft.Envelope{GroupID: g, Msg: msg(raftpb.MessageType_MsgApp, 2, 3)},
		multiraft.Envelope{GroupID: g, Msg: msg(raftpb.MessageType_MsgAppResp, 1, 1)},
		multiraft.Envelope{GroupID: 424242, Msg: msg(raftpb.MessageType_MsgHeartbeatResp, 2, 1)},
	)
	c.stabilize()
	if after := c.status(1, g); after.LastIndex != before.LastIndex || after.Term != before.Term || after.Role != raft.StateLeader {
		t.Fatalf("bad messages changed the leader: before %+v, after %+v", before, after)
	}

	for _, tc := range []struct {
		name string
		gid  uint64
		data []byte
		want error
	}{
		{"empty", g, nil, multiraft.ErrEmptyProposal},
		{"unknown group", 424242, []byte("x"), multiraft.ErrGroupNotFound},
	} {
		p := c.hosts[1].ProposeAsync(tc.gid, tc.data)
		c.stabilize()
		if _, err := p.Result(); !errors.Is(err, tc.want) {
			t.Errorf("%s proposal: %v, want %v", tc.name, err, tc.want)
		}
	}

	for _, spec := range []multiraft.GroupSpec{
		{GroupID: 0, Voters: []uint64{1, 2, 3}},
		{GroupID: 7, Voters: []uint64{2, 3}},
		{GroupID: 8},
	} {
		if err := c.hosts[1].LoadGroup(context.Background(), spec); err == nil {
			t.Errorf("LoadGroup(%+v) succeeded", spec)
		}
	}
	if ids, _ := c.hosts[1].Groups(context.Background()); len(ids) != 1 || ids[0] != g {
		t.Fatalf("groups after bad loads: %v, want [%d]", ids, g)
	}
	if err := c.hosts[1].UnloadGroup(context.Background(), 424242); !errors.Is(err, multiraft.ErrGroupNotFound) {
		t.Fatalf("unload of an unknown group: %v", err)
	}
}

// Seeded faults, random orders: whatever happens, every proposal reported applied is in
// every replica's log at its index, and the replicas' logs agree.
func TestChaosKeepsAcknowledgedEntries(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { chaos(t, seed) })
	}
}

func (c *cluster[A]) agreeOnLeader(g, leader uint64) bool {
	term := c.status(leader, g).Term
	for _, id := range c.ids {
		if st := c.status(id, g); st.Leader != leader || st.Term != term {
			return false
		}
	}
	return c.status(leader, g).Role == raft.StateLeader
}

func chaos(t *testing.T, seed uint64) {
	c := newCluster(t, 3, memnet.Options{Seed: seed}, nil)
	rng := rand.New(rand.NewPCG(seed, 42))
	gids := groupIDs(20)
	c.load(gids...)
	c.hub.SetDropRate(0.1)
	c.hub.SetDelay(0, 3)
	c.hub.SetReorder(true)

	type sent struct {
		p    *multiraft.Proposal
		gid  uint64
		data string
	}
	var all []sent
	for phase := range 30 {
		switch rng.IntN(4) {
		case 0:
			c.hub.Heal()
		case 1:
			c.hub.Isolate(uint64(rng.IntN(3) + 1))
		}
		for _, g := range gids {
			if rng.IntN(5) == 0 {
				_ = c.hosts[uint64(rng.IntN(3)+1)].Campaign(context.Background(), g)
			}
			node := uint64(rng.IntN(3) + 1)
			for i := range 3 {
				d := fmt.Sprintf("p%d-n%d-%d", phase, node, i)
				all = append(all, sent{c.hosts[node].ProposeAsync(g, []byte(d)), g, d})
			}
		}
		for range 3 {
			for _, id := range c.ids {
				c.hosts[id].Tick()
			}
			c.stabilize()
		}
	}

	c.hub.SetDropRate(0)
	c.hub.SetDelay(0, 0)
	c.hub.Heal()
	// As the control tier does: elect the most up-to-date replica of each group.
	leaders := make(map[uint64]uint64)
	for _, g := range gids {
		best := c.ids[0]
		for _, id := range c.ids {
			st, b := c.status(id, g), c.status(best, g)
			if st.LastTerm > b.LastTerm || (st.LastTerm == b.LastTerm && st.LastIndex > b.LastIndex) {
				best = id
			}
		}
		leaders[g] = best
		// The control tier confirms a leader with every replica, not with the leader alone:
		// a replica can believe it leads at an old term, and the one with the longest log
		// can be behind in term, so that its first pre-vote only teaches it the term.
		for attempt := 0; !c.agreeOnLeader(g, best); attempt++ {
			if attempt == 5 {
				t.Fatalf("group %d: node %d not confirmed as leader after 5 orders", g, best)
			}
			if err := c.hosts[best].Campaign(context.Background(), g); err != nil {
				t.Fatalf("group %d: campaign on node %d: %v", g, best, err)
			}
			c.stabilize()
			c.tick(1)
		}
	}
	c.tick(3)

	applied := 0
	for _, s := range all {
		idx, err := s.p.Result()
		select {
		case <-s.p.Done():
		default:
			t.Fatalf("%s still pending after the cluster settled: %v", s.data, err)
		}
		if err != nil {
			if errors.Is(err, multiraft.ErrProposalLost) {
				for _, id := range c.ids {
					for _, e := range c.appliers[id].entries(s.gid) {
						if e.Data == s.data {
							t.Fatalf("%s failed with ErrProposalLost but node %d applied it at %d", s.data, id, e.Index)
						}
					}
				}
			}
			continue
		}
		applied++
		for _, id := range c.ids {
			ents := c.appliers[id].entries(s.gid)
			i := int(idx - multiraft.BootstrapIndex - 1)
			if i >= len(ents) || ents[i].Data != s.data {
				t.Fatalf("%s reported applied at %d, but node %d applied %v", s.data, idx, id, ents)
			}
		}
	}
	for _, g := range gids {
		c.requireLeader(g, leaders[g], c.status(leaders[g], g).Term)
		ref := c.appliers[1].entries(g)
		seen := make(map[string]bool)
		for _, e := range ref {
			if e.Data != "" && seen[e.Data] {
				t.Fatalf("group %d applied %s twice", g, e.Data)
			}
			seen[e.Data] = true
		}
		for _, id := range c.ids {
			if got := c.appliers[id].entries(g); len(got) != len(ref) {
				t.Fatalf("group %d: node %d applied %d entries, node 1 %d", g, id, len(got), len(ref))
			}
		}
	}
	if applied == 0 {
		t.Fatal("no proposal succeeded; the scenario tests nothing")
	}
	t.Logf("seed %d: %d of %d proposals applied, hub %+v", seed, applied, len(all), c.hub.Stats())
}
