package multiraft_test

import (
	"fmt"
	"slices"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
)

// Issue 17 (the forged-frame panic): a heartbeat whose commit index lies past the follower's
// log, as a forged or corrupted frame carries, makes etcd raft panic in commitTo. The frame
// is dropped before raft sees it: the receiving host goes on, the group it names is neither
// failed nor disturbed (its entries keep committing and applying there), and so are the
// other groups.
func TestForgedHeartbeatPastTheLogFailsNothing(t *testing.T) {
	c := newCluster(t, 3, memnet.Options{Seed: 17}, nil)
	gs := groupIDs(2)
	target := gs[0]
	c.load(gs...)
	c.campaign(1, gs...)
	want := map[uint64][]string{}
	for _, g := range gs {
		want[g] = seq(fmt.Sprint("before-", g), 3)
		mustSucceed(t, c.proposeAndSettle(1, g, want[g]...))
	}

	const victim = 2
	st := c.status(victim, target)
	forged := &raftpb.Message{
		Type:   raftpb.MessageType_MsgHeartbeat.Enum(),
		From:   proto.Uint64(1),
		To:     proto.Uint64(victim),
		Term:   proto.Uint64(st.Term),
		Commit: proto.Uint64(st.LastIndex + 1000),
	}
	c.hosts[victim].Step(multiraft.Envelope{GroupID: target, Msg: forged})
	c.stabilize()

	h := c.hosts[victim]
	if err := h.Err(); err != nil {
		t.Fatalf("the host stopped on a forged heartbeat: %v", err)
	}
	if got := h.FailedGroups(); len(got) != 0 {
		t.Fatalf("failed groups %v after a forged heartbeat, want none", got)
	}
	for _, g := range gs {
		more := seq(fmt.Sprint("after-", g), 3)
		mustSucceed(t, c.proposeAndSettle(1, g, more...))
		want[g] = append(want[g], more...)
	}
	c.tick(3)
	for _, g := range gs {
		for _, id := range c.ids {
			if got := c.appliers[id].userData(g); !slices.Equal(got, want[g]) {
				t.Fatalf("group %d on node %d: applied %q, want %q", g, id, got, want[g])
			}
		}
	}
}
