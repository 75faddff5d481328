package multiraft_test

import (
	"fmt"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
)

// FuzzStepForgedFrame steps an arbitrary message, as a forged or corrupted frame carries, into
// a follower's group (issue 17 item 5). Whatever it holds, the host keeps running and the other
// group on it keeps committing and applying: at worst the group the frame names fails there
// (raft refuses what contradicts its committed log by panicking, which the host turns into
// that group's failure), never the process.
func FuzzStepForgedFrame(f *testing.F) {
	seed := func(m *raftpb.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	u := proto.Uint64
	typ := func(t raftpb.MessageType) *raftpb.MessageType { return &t }
	seed(&raftpb.Message{Type: typ(raftpb.MessageType_MsgHeartbeat), From: u(1), Term: u(2), Commit: u(1 << 40)})
	seed(&raftpb.Message{Type: typ(raftpb.MessageType_MsgApp), From: u(1), Term: u(2), Index: u(1 << 40), LogTerm: u(2), Commit: u(1 << 40)})
	seed(&raftpb.Message{Type: typ(raftpb.MessageType_MsgApp), From: u(1), Term: u(2), Index: u(0), LogTerm: u(0),
		Entries: []*raftpb.Entry{{Term: u(9), Index: u(1), Data: []byte("x")}}, Commit: u(1)})
	seed(&raftpb.Message{Type: typ(raftpb.MessageType_MsgVote), From: u(3), Term: u(1 << 50), Index: u(1 << 40), LogTerm: u(1 << 40)})
	seed(&raftpb.Message{Type: typ(raftpb.MessageType_MsgSnap), From: u(1), Term: u(2)})
	seed(&raftpb.Message{Type: typ(raftpb.MessageType_MsgTimeoutNow), From: u(1), Term: u(2)})
	seed(&raftpb.Message{Type: typ(raftpb.MessageType(99)), From: u(7), Term: u(3)})
	f.Add([]byte{0xff, 0x01, 0x02})

	f.Fuzz(func(t *testing.T, data []byte) {
		var m raftpb.Message
		if proto.Unmarshal(data, &m) != nil {
			return // the transport refuses what does not decode
		}
		c := newCluster(t, 3, memnet.Options{Seed: 5}, nil)
		gs := groupIDs(2)
		c.load(gs...)
		c.campaign(1, gs...)
		mustSucceed(t, c.proposeAndSettle(1, gs[1], "before"))

		const victim = 2
		m.To = proto.Uint64(victim)
		c.hosts[victim].Step(multiraft.Envelope{GroupID: gs[0], Msg: &m})
		c.stabilize()

		if err := c.hosts[victim].Err(); err != nil {
			t.Fatalf("the host stopped on a forged frame %v: %v", &m, err)
		}
		for _, g := range c.hosts[victim].FailedGroups() {
			if g != gs[0] {
				t.Fatalf("group %d failed on a frame naming group %d", g, gs[0])
			}
		}
		mustSucceed(t, c.proposeAndSettle(1, gs[1], "after"))
		c.tick(3)
		if got := fmt.Sprint(c.appliers[victim].userData(gs[1])); got != "[before after]" {
			t.Fatalf("the other group applied %s on the victim, want [before after]", got)
		}
	})
}
