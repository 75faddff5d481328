package raftnet

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/triarch-io/triarch/pkg/multiraft"
)

// Only a follower's answer to a leader counts as an acknowledgement of leadership: a vote
// request from a peer that lost touch with the leader must not keep its lease alive.
func TestOnlyLeaderAnswersCountAsAcks(t *testing.T) {
	a := startNode(t, 1, "127.0.0.1:0")
	b := startNode(t, 2, "127.0.0.1:0")
	b.tr.SetPeer(1, a.addr)
	typed := func(typ raftpb.MessageType, index uint64) multiraft.Envelope {
		m := msg(2, 1, index)
		m.Type = typ.Enum()
		return multiraft.Envelope{GroupID: 1, Msg: m}
	}
	b.tr.Send([]multiraft.Envelope{typed(raftpb.MessageType_MsgPreVote, 1)})
	eventually(t, "the vote request arrived", func() bool { return a.host.steppedCount() == 1 })
	require.NotZero(t, a.tr.LastHeard()[2], "any frame is contact")
	require.Zero(t, a.tr.LastAcked()[2], "a vote request acknowledges nobody")

	b.tr.Send([]multiraft.Envelope{typed(raftpb.MessageType_MsgHeartbeatResp, 2)})
	eventually(t, "the heartbeat answer arrived", func() bool { return a.host.steppedCount() == 2 })
	require.NotZero(t, a.tr.LastAcked()[2])
	require.True(t, acknowledgesLeader([]multiraft.Envelope{{GroupID: 1, Msg: &raftpb.Message{Type: raftpb.MessageType_MsgAppResp.Enum(), Index: proto.Uint64(3)}}}))
}
