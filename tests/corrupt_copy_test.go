package tests

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/pkg/multiraft"
)

// Issue 12 item 5, end to end: an entry damaged on its way to one follower (one payload byte
// flipped, so that it fails its checksum there) fails the channel on that replica alone; the
// channel control tier finds the failed copy, the replica discards it and rejoins from its
// peers, and it ends a voter holding every message: with the third replica stopped, the
// channel still takes writes, which need the repaired replica's acknowledgements, and
// nothing acknowledged is lost or duplicated.
func TestCorruptCopyIsRepairedFromItsPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a cluster")
	}
	c := testcluster.Start(t, testcluster.Channelctls(1))
	ctx := testutil.Context(t, 3*time.Minute)
	l := c.NewAckLedger(t, ctx, 3, "cc")
	l.SendAll("before")

	arb := arbiterv1.NewArbiterServiceClient(c.Dial(c.Addr(testcluster.KindArbiter, 1)))
	rec := channelRecord(t, ctx, arb, l.Name(0))
	leader, group := rec.GetLeaderNodeId(), rec.GetGroupId()
	victim := slices.DeleteFunc(slices.Clone(rec.GetReplicaNodeIds()), func(n uint64) bool { return n == leader })[0]
	marker := []byte("corrupt-me")
	c.SetReplicaTamper(func(_, to uint64, env multiraft.Envelope) multiraft.Envelope {
		if to != victim || env.GroupID != group || env.Msg.GetType() != raftpb.MessageType_MsgApp {
			return env
		}
		var m *raftpb.Message
		for i, e := range env.Msg.GetEntries() {
			if at := bytes.Index(e.GetData(), marker); at >= 0 {
				if m == nil {
					m = proto.Clone(env.Msg).(*raftpb.Message)
				}
				m.Entries[i].Data = bytes.Clone(e.GetData())
				m.Entries[i].Data[at] ^= 1
			}
		}
		if m != nil {
			env.Msg = m
		}
		return env
	})
	l.Send(0, string(marker))

	failed := func() []string {
		ids, err := c.Replica(victim).Engine.FailedChannels()
		require.NoError(t, err)
		return ids
	}
	testutil.Eventually(t, time.Minute, func() error {
		if !slices.Contains(failed(), l.Name(0)) {
			return fmt.Errorf("replica %d lists failed copies %v", victim, failed())
		}
		return nil
	})
	c.SetReplicaTamper(nil) // the damage was on the way: what the peers send now is sound

	testutil.Eventually(t, 2*time.Minute, func() error {
		if ids := failed(); len(ids) > 0 {
			return fmt.Errorf("replica %d still lists failed copies %v", victim, ids)
		}
		lead, err := groupStatus(ctx, c, leader, l.Name(0))
		if err != nil {
			return err
		}
		st, err := groupStatus(ctx, c, victim, l.Name(0))
		if err != nil {
			return err
		}
		if st.GetCopyReset() || !slices.Contains(lead.GetVoters(), victim) || st.GetLastSeq() != lead.GetLastSeq() {
			return fmt.Errorf("replica %d: reset %t, seq %d of %d, voters %v", victim, st.GetCopyReset(), st.GetLastSeq(),
				lead.GetLastSeq(), lead.GetVoters())
		}
		return nil
	})

	third := slices.DeleteFunc(slices.Clone(rec.GetReplicaNodeIds()), func(n uint64) bool { return n == leader || n == victim })[0]
	c.Stop(testcluster.KindReplica, third)
	l.SendAll("after")
	l.Verify()
}
