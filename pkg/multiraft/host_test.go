package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
)

// No order, no leader: ticks reach leaders only, so however long the clock runs no follower
// times out and campaigns. The second half shows the ticks are real: once a leader exists,
// they make it heartbeat.
func TestNoGroupElectsItselfWithoutOrders(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 1}, nil)
	gids := groupIDs(100)
	c.load(gids...)

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
	for _, id := range c.ids {
		for _, g := range gids {
			st := c.status(id, g)
			if st.Leader != 0 || st.Role != raft.StateFollower || st.Term != 1 || st.Vote != 0 {
				t.Fatalf("group %d on node %d after 10,000 ticks: leader %d role %v term %d vote %d; want no leader, follower, term 1",
					g, id, st.Leader, st.Role, st.Term, st.Vote)
			}
		}
	}
	if s := c.hub.Stats(); s.Sent != 0 {
		t.Fatalf("%d messages sent without any order, want 0", s.Sent)
	}

	c.campaign(1, gids[0])
	c.requireLeader(gids[0], 1, 2)
	before := c.hub.Stats().Sent
	c.tick(3) // HeartbeatTick is 1: one heartbeat to each follower per tick
	if got := c.hub.Stats().Sent - before; got != 3*2*2 {
		t.Fatalf("3 ticks of one leader sent %d messages, want 12 (heartbeats and responses)", got)
	}
	c.requireLeader(gids[1], 0, 1)
}

func TestOrderedCampaignElectsChosenNode(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 2}, nil)
	gids := groupIDs(100)
	c.load(gids...)
	c.campaign(2, gids...)
	for _, g := range gids {
		c.requireLeader(g, 2, 2)
	}

	// Count what the leader sends for one group's round of 10 proposals: if they went to
	// raft as one MsgProp, each follower gets one MsgApp with all 10 entries.
	var apps []int
	c.hub.SetHook(func(from uint64, env multiraft.Envelope) {
		if env.GroupID == gids[0] && env.Msg.GetType() == raftpb.MessageType_MsgApp && len(env.Msg.GetEntries()) > 0 {
			apps = append(apps, len(env.Msg.GetEntries()))
		}
	})
	props := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		props[g] = c.propose(2, g, seq(fmt.Sprint("g", g), 10)...)
	}
	c.stabilize()
	c.hub.SetHook(nil)
	if !slices.Equal(apps, []int{10, 10}) {
		t.Fatalf("MsgApp entry counts for one round of 10 proposals: %v, want [10 10]", apps)
	}

	for _, g := range gids {
		idx := mustSucceed(t, props[g])
		// Index 1 is the bootstrap snapshot, 2 the new leader's empty entry.
		for i, n := range idx {
			if n != uint64(3+i) {
				t.Fatalf("group %d proposal %d applied at %d, want %d", g, i, n, 3+i)
			}
		}
		requireApplied(c, g, seq(fmt.Sprint("g", g), 10))
		for _, id := range c.ids {
			st := c.status(id, g)
			if st.Commit != 12 || st.Applied != 12 || st.LastIndex != 12 || st.LastTerm != 2 {
				t.Fatalf("group %d on node %d: %+v, want commit, applied, last 12 at term 2", g, id, st)
			}
		}
	}

	p := c.hosts[1].ProposeAsync(gids[0], []byte("on a follower"))
	c.stabilize()
	_, err := p.Result()
	var nle *multiraft.NotLeaderError
	if !errors.As(err, &nle) || nle.LeaderID != 2 || nle.Term != 2 || nle.GroupID != gids[0] {
		t.Fatalf("proposal on a follower: %v, want NotLeaderError naming leader 2 at term 2", err)
	}
}

func TestStaleReplicaCampaignFails(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 3}, nil)
	gids := groupIDs(10)
	c.load(gids...)
	c.campaign(1, gids...)

	c.hub.Isolate(3)
	props := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		props[g] = c.propose(1, g, seq("a", 5)...)
	}
	c.stabilize()
	for _, g := range gids {
		mustSucceed(t, props[g])
	}
	c.hub.Heal()

	for _, g := range gids {
		if s3, s1 := c.status(3, g), c.status(1, g); s3.LastIndex >= s1.LastIndex {
			t.Fatalf("group %d: node 3 at %d is not behind node 1 at %d", g, s3.LastIndex, s1.LastIndex)
		}
		if err := c.hosts[3].Campaign(context.Background(), g); err != nil {
			t.Fatalf("group %d: campaign on node 3: %v", g, err)
		}
		if st := c.status(3, g); st.Role != raft.StatePreCandidate {
			t.Fatalf("group %d: node 3 is %v after the order, want pre-candidate", g, st.Role)
		}
	}
	c.stabilize()
	for _, g := range gids {
		// The pre-vote failed: nobody's term moved and leader 1 is undisturbed. Node 3 went
		// back to follower without a known leader until the leader's next message.
		for _, id := range []uint64{1, 2} {
			if st := c.status(id, g); st.Leader != 1 || st.Term != 2 {
				t.Fatalf("group %d on node %d: leader %d term %d, want leader 1 at term 2", g, id, st.Leader, st.Term)
			}
		}
		if s3 := c.status(3, g); s3.Role != raft.StateFollower || s3.LastIndex != 2 || s3.Term != 2 {
			t.Fatalf("group %d: node 3 %v at index %d term %d, want a follower at index 2 (not caught up) and term 2",
				g, s3.Role, s3.LastIndex, s3.Term)
		}
	}

	c.campaign(2, gids...)
	for _, g := range gids {
		c.requireLeader(g, 2, 3)
		requireApplied(c, g, seq("a", 5))
		if s3, s2 := c.status(3, g), c.status(2, g); s3.LastIndex != s2.LastIndex || s3.LastIndex != 8 {
			t.Fatalf("group %d: node 3 at %d, node 2 at %d, want both at 8 (term 3's empty entry)", g, s3.LastIndex, s2.LastIndex)
		}
	}
}

func TestDeposedLeaderTailIsTruncated(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 4}, nil)
	gids := groupIDs(10)
	c.load(gids...)
	c.campaign(1, gids...)

	a := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		a[g] = c.propose(1, g, seq("a", 3)...)
	}
	c.stabilize()

	// Node 1 appends B locally (and saves it) but nobody else gets it.
	c.hub.Isolate(1)
	b := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		b[g] = c.propose(1, g, seq("b", 4)...)
	}
	c.stabilize()
	for _, g := range gids {
		st := c.status(1, g)
		if st.Role != raft.StateLeader || st.LastIndex != 9 || st.Commit != 5 {
			t.Fatalf("group %d on isolated node 1: %v last %d commit %d, want leader with last 9 commit 5", g, st.Role, st.LastIndex, st.Commit)
		}
		if log := c.storedLog(1, g); len(log) != 8 || log[7].Data != "b-003" {
			t.Fatalf("group %d: node 1 stored %v, want 8 entries ending with b-003", g, log)
		}
		for _, p := range b[g] {
			if _, err := p.Result(); err == nil {
				t.Fatalf("group %d: an uncommitted proposal of the isolated leader succeeded", g)
			}
		}
	}

	c.campaign(2, gids...)
	cc := make(map[uint64][]*multiraft.Proposal)
	for _, g := range gids {
		st := c.status(2, g)
		if st.Role != raft.StateLeader || st.Term != 3 {
			t.Fatalf("group %d: node 2 is %v at term %d, want leader at 3", g, st.Role, st.Term)
		}
		cc[g] = c.propose(2, g, seq("c", 2)...)
	}
	c.stabilize()

	c.hub.Heal()
	c.tick(1) // both leaders heartbeat; node 1 meets term 3 and steps down
	for _, g := range gids {
		mustSucceed(t, a[g])
		mustSucceed(t, cc[g])
		for i, p := range b[g] {
			_, err := p.Result()
			if !errors.Is(err, multiraft.ErrLeadershipLost) && !errors.Is(err, multiraft.ErrProposalLost) {
				t.Fatalf("group %d: lost proposal b-%03d: %v, want ErrLeadershipLost or ErrProposalLost", g, i, err)
			}
		}
		c.requireLeader(g, 2, 3)
		requireApplied(c, g, append(seq("a", 3), seq("c", 2)...))
		ref := c.storedLog(2, g)
		if len(ref) != 7 || ref[6].Data != "c-001" || ref[4].Term != 3 || ref[4].Data != "" {
			t.Fatalf("group %d: node 2 stored %v, want a-000..a-002 at term 2, then c-000, c-001 after term 3's empty entry", g, ref)
		}
		for _, id := range c.ids {
			if got := c.storedLog(id, g); !slices.Equal(got, ref) {
				t.Fatalf("group %d: node %d stored %v, node 2 stored %v", g, id, got, ref)
			}
			if st := c.status(id, g); st.LastIndex != 8 || st.LastTerm != 3 || st.Commit != 8 || st.Applied != 8 {
				t.Fatalf("group %d on node %d: %+v, want last 8 at term 3, commit and applied 8", g, id, st)
			}
		}
	}
}

// Campaigns and Statuses do for many groups what Campaign and Status do for one, in one
// operation per shard: every group ordered is elected, a group not loaded is reported (an
// error for Campaigns, missing for Statuses), and the statuses match Status group by group.
func TestBatchedCampaignsAndStatuses(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 9}, nil)
	gids := groupIDs(50)
	c.load(gids...)
	const missing = 9999
	errs, err := c.hosts[2].Campaigns(context.Background(), append(slices.Clone(gids), missing))
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != 1 || !errors.Is(errs[missing], multiraft.ErrGroupNotFound) {
		t.Fatalf("campaign errors %v, want only group %d not found", errs, missing)
	}
	c.stabilize()
	sts, err := c.hosts[1].Statuses(context.Background(), append(slices.Clone(gids), missing))
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != len(gids) {
		t.Fatalf("%d statuses for %d loaded groups", len(sts), len(gids))
	}
	for _, g := range gids {
		c.requireLeader(g, 2, 2)
		one := c.status(1, g)
		if got := sts[g]; got.Leader != one.Leader || got.Term != one.Term || got.LastIndex != one.LastIndex || got.Role != one.Role {
			t.Fatalf("group %d: batched status %+v, single %+v", g, got, one)
		}
	}
}
