package multiraft_test

import (
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/raft/v3"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
)

func flowLimits(cfg *multiraft.Config) {
	cfg.MaxUncommittedEntriesSize = 64 << 10
	cfg.MaxProposalBatchBytes = 8 << 10
	cfg.MaxSizePerMsg = 8 << 10
	cfg.MaxInflightBytes = 32 << 10
	cfg.MaxInflightMsgs = 4
}

func kib(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		s := fmt.Sprintf("%s-%04d-", prefix, i)
		for len(s) < 1024 {
			s += "x"
		}
		out[i] = s
	}
	return out
}

// countOutcomes splits proposals into applied ones and ones refused by raft's uncommitted
// limit; anything else fails the test.
func countOutcomes(t *testing.T, ps []*multiraft.Proposal) (applied, dropped int) {
	t.Helper()
	for i, p := range ps {
		_, err := p.Result()
		switch {
		case err == nil:
			if dropped > 0 {
				t.Fatalf("proposal %d applied after an earlier one was dropped", i)
			}
			applied++
		case errors.Is(err, raft.ErrProposalDropped):
			dropped++
		default:
			t.Fatalf("proposal %d: %v, want success or raft.ErrProposalDropped", i, err)
		}
	}
	return applied, dropped
}

func TestBurstBeyondUncommittedLimitIsRefused(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 8}, flowLimits)
	g := groupIDs(1)[0]
	c.load(g)
	c.campaign(1, g)

	// One follower partitioned; 256 KiB arrive in one round. Raft takes 8 KiB MsgProps
	// until 64 KiB are uncommitted and refuses the rest.
	c.hub.Partition(1, 3)
	burst := kib("burst", 256)
	ps := c.propose(1, g, burst...)
	c.stabilize()
	applied, dropped := countOutcomes(t, ps)
	if applied != 64 || dropped != 192 {
		t.Fatalf("burst of 256 x 1 KiB with a 64 KiB limit: %d applied, %d dropped; want 64 and 192", applied, dropped)
	}
	if got := c.appliers[2].userData(g); len(got) != 64 || got[63] != burst[63] {
		t.Fatalf("node 2 applied %d entries, want the first 64 of the burst", len(got))
	}

	// With the leader cut off nothing commits, so the uncommitted tail only grows: it stops
	// at the limit however many rounds keep proposing.
	c.hub.Heal()
	c.tick(1)
	c.hub.Isolate(1)
	var all []*multiraft.Proposal
	for round := range 10 {
		all = append(all, c.propose(1, g, kib(fmt.Sprint("r", round), 16)...)...)
		c.stabilize()
	}
	accepted := 0
	for _, p := range all {
		if _, err := p.Result(); errors.Is(err, raft.ErrProposalDropped) {
			continue
		}
		accepted++ // still pending: in the log, not committed
	}
	if st := c.status(1, g); accepted != 64 || st.LastIndex-st.Commit != 64 {
		t.Fatalf("isolated leader accepted %d of 160 KiB, %d entries uncommitted; want 64 and 64", accepted, st.LastIndex-st.Commit)
	}

	c.hub.Heal()
	c.tick(2)
	applied, dropped = countOutcomes(t, all)
	if applied != 64 || dropped != 96 {
		t.Fatalf("after healing: %d applied, %d dropped; want 64 and 96", applied, dropped)
	}
	for _, id := range c.ids {
		if got := len(c.appliers[id].userData(g)); got != 128 {
			t.Fatalf("node %d applied %d entries, want 128", id, got)
		}
	}
}
