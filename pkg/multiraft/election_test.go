package multiraft_test

import (
	"errors"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
)

// The arbiter's mode: no one orders elections, ticks alone elect a leader, a leader cut off
// steps down (CheckQuorum) while the others elect another, and after the heal there is one
// leader again.
func TestSelfElectingHostsElectAndFailOver(t *testing.T) {
	c := newFSMCluster(t, 3, 31, nil, func(cfg *multiraft.Config) { cfg.SelfElecting = true })
	g := groupIDs(1)[0]
	c.load(g)

	var leader uint64
	c.tickUntil(100, "no leader elected by ticks alone", c.ids, func() bool {
		leader = c.leaderOf(g, c.ids...)
		return leader != 0
	})
	term := c.status(leader, g).Term
	c.proposeAll(leader, g, seq("a", 5), 5)

	c.hub.Isolate(leader)
	var others []uint64
	for _, id := range c.ids {
		if id != leader {
			others = append(others, id)
		}
	}
	var next uint64
	c.tickUntil(100, "the majority side elected no new leader, or the old one kept leading", c.ids, func() bool {
		next = c.leaderOf(g, others...)
		return next != 0 && c.status(leader, g).Role != raft.StateLeader
	})
	if st := c.status(next, g); st.Term <= term {
		t.Fatalf("new leader %d at term %d, not above the old term %d", next, st.Term, term)
	}
	if st := c.status(leader, g); st.Role == raft.StateLeader || st.Role == raft.StateCandidate || st.Term != term {
		t.Fatalf("the isolated old leader is %v at term %d; want it stepped down at its term %d (PreVote keeps it from bumping it)",
			st.Role, st.Term, term)
	}
	c.proposeAll(next, g, seq("b", 5), 5)

	c.hub.Heal()
	c.tickUntil(100, "no single leader after the heal", c.ids, func() bool {
		return c.leaderOf(g, c.ids...) == next
	})
	c.proposeAll(next, g, seq("c", 5), 5)
	c.requireSameState(g, append(append(seq("a", 5), seq("b", 5)...), seq("c", 5)...))
}

// A self-electing group on probation (the arbiter's member whose store is in doubt) does not
// run its election timer: it would campaign on its own, with a vote the group cannot trust.
func TestSelfElectingGroupOnProbationDoesNotCampaign(t *testing.T) {
	c := newFSMCluster(t, 3, 32, nil, func(cfg *multiraft.Config) { cfg.SelfElecting = true })
	g := groupIDs(1)[0]
	c.load(g)
	var leader uint64
	c.tickUntil(100, "no leader elected by ticks alone", c.ids, func() bool {
		leader = c.leaderOf(g, c.ids...)
		return leader != 0
	})
	c.proposeAll(leader, g, seq("a", 3), 3)

	follower := c.ids[0]
	if follower == leader {
		follower = c.ids[1]
	}
	c.restart(follower, false, false)
	if err := c.hosts[follower].LoadGroup(t.Context(), multiraft.GroupSpec{GroupID: g, AdmitToken: []byte("t")}); err != nil {
		t.Fatal(err)
	}
	c.hub.Isolate(follower)
	for range 50 { // far beyond an election timeout
		c.hosts[follower].Tick()
		c.stabilize()
		if st := c.status(follower, g); st.Role != raft.StateFollower {
			t.Fatalf("the member on probation became %v on its own", st.Role)
		}
	}
}

// LastAcked is contact within the group: a peer cut off from the leader stops counting even
// while other groups' traffic (not modelled here) would still flow, and a replica that stops
// leading reports none.
func TestLeaderReportsContactPerGroup(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 33}, nil)
	gs := groupIDs(2)
	c.load(gs...)
	c.campaign(1, gs...)
	c.tick(2)
	st := c.status(1, gs[0])
	if len(st.LastAcked) != 2 || st.LastAcked[2].IsZero() || st.LastAcked[3].IsZero() {
		t.Fatalf("leader's contacts after heartbeats: %v, want nodes 2 and 3", st.LastAcked)
	}
	cut := st.LastAcked[3]

	// Node 3 stops answering group gs[0] only (its responses for gs[1] still arrive).
	c.hub.SetFilter(func(from uint64, env multiraft.Envelope) bool { return from != 3 || env.GroupID != gs[0] })
	c.tick(3)
	c.hub.SetFilter(nil)
	if got := c.status(1, gs[0]).LastAcked[3]; !got.Equal(cut) {
		t.Fatalf("contact with node 3 in group %d moved to %v while it did not answer there", gs[0], got)
	}
	if got := c.status(1, gs[1]).LastAcked[3]; !got.After(cut) {
		t.Fatalf("contact with node 3 in group %d did not move (%v, was %v)", gs[1], got, cut)
	}

	c.campaign(2, gs[0])
	if st := c.status(1, gs[0]); st.Role == raft.StateLeader || st.LastAcked != nil {
		t.Fatalf("a replica that stopped leading reports %v as %v", st.LastAcked, st.Role)
	}
}

// ReadIndex: a leader confirms with a quorum before a read; one deposed behind its back (the
// others elected a new leader and committed more) gets no confirmation and then fails when
// it learns of the new term; reads queued in one round share one heartbeat per peer.
func TestReadIndexConfirmsLeadershipWithAQuorum(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 34}, nil)
	g := groupIDs(1)[0]
	c.load(g)
	c.campaign(1, g)
	mustSucceedAfter(t, c, c.propose(1, g, seq("a", 3)...))

	heartbeats := 0
	c.hub.SetHook(func(from uint64, env multiraft.Envelope) {
		if env.Msg.GetType() == raftpb.MessageType_MsgHeartbeat && len(env.Msg.GetContext()) > 0 {
			heartbeats++
		}
	})
	r1, r2 := c.hosts[1].ReadIndexAsync(g), c.hosts[1].ReadIndexAsync(g)
	c.stabilize()
	c.hub.SetHook(nil)
	commit := c.status(1, g).Commit
	for _, r := range []*multiraft.Proposal{r1, r2} {
		if idx, err := r.Result(); err != nil || idx != commit {
			t.Fatalf("read on the leader: index %d, %v; want the commit index %d", idx, err, commit)
		}
	}
	if heartbeats != 2 {
		t.Fatalf("two reads of one round sent %d heartbeats, want one per peer", heartbeats)
	}
	var nle *multiraft.NotLeaderError
	r := c.hosts[2].ReadIndexAsync(g)
	c.stabilize()
	if _, err := r.Result(); !errors.As(err, &nle) || nle.LeaderID != 1 {
		t.Fatalf("read on a follower: %v, want NotLeaderError naming 1", err)
	}

	// Node 1 is cut off; 2 and 3 elect 2 and commit more. Node 1 still believes it leads.
	c.hub.Isolate(1)
	c.campaign(2, g)
	mustSucceedAfter(t, c, c.propose(2, g, seq("b", 2)...))
	if st := c.status(1, g); st.Role != raft.StateLeader {
		t.Fatalf("the cut-off leader is %v; the test needs it unaware", st.Role)
	}
	stale := c.hosts[1].ReadIndexAsync(g)
	c.tick(5)
	select {
	case <-stale.Done():
		idx, err := stale.Result()
		t.Fatalf("the deposed leader's read was answered: index %d, %v", idx, err)
	default:
	}
	c.hub.Heal()
	c.tick(3)
	if _, err := stale.Result(); !errors.Is(err, multiraft.ErrLeadershipLost) {
		t.Fatalf("the deposed leader's read after it learned of the new term: %v, want ErrLeadershipLost", err)
	}
}
