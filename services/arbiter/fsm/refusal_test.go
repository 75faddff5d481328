package fsm

import (
	"testing"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// Refusals reach programs as an enum, not only as text.
func TestChangeRefusalInProto(t *testing.T) {
	f := New()
	for id := uint64(1); id <= 3; id++ {
		register(t, f, id, arbiterv1.NodeRole_NODE_ROLE_REPLICA, "")
	}
	register(t, f, 10, arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL, "")
	register(t, f, 11, arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL, "")
	ch := create(t, f, "c", 3).Channel
	owner := ownerOf(t, f, "c")
	other := uint64(10)
	if owner == 10 {
		other = 11
	}
	leader := uint64(1)
	outsider := uint64(9)
	for _, tc := range []struct {
		name      string
		requester uint64
		change    *arbiterv1.ChannelChange
		want      arbiterv1.ChangeRefusal
	}{
		{"stale epoch", owner, &arbiterv1.ChannelChange{ChannelId: "c", ExpectedEpoch: ch.Epoch + 5}, arbiterv1.ChangeRefusal_CHANGE_REFUSAL_STALE_EPOCH},
		{"not owner", other, &arbiterv1.ChannelChange{ChannelId: "c", ExpectedEpoch: ch.Epoch}, arbiterv1.ChangeRefusal_CHANGE_REFUSAL_NOT_SLOT_OWNER},
		{"unknown", owner, &arbiterv1.ChannelChange{ChannelId: "nope", ExpectedEpoch: 1}, arbiterv1.ChangeRefusal_CHANGE_REFUSAL_UNKNOWN_CHANNEL},
		{"invalid", owner, &arbiterv1.ChannelChange{ChannelId: "c", ExpectedEpoch: ch.Epoch, LeaderNodeId: &outsider}, arbiterv1.ChangeRefusal_CHANGE_REFUSAL_INVALID_CHANGE},
		{"accepted", owner, &arbiterv1.ChannelChange{ChannelId: "c", ExpectedEpoch: ch.Epoch, LeaderNodeId: &leader}, arbiterv1.ChangeRefusal_CHANGE_REFUSAL_UNSPECIFIED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := cas(t, f, tc.requester, tc.change).Results[0].Proto()
			require.Equal(t, tc.want, res.GetRefusal(), res.GetError())
			require.Equal(t, tc.want == arbiterv1.ChangeRefusal_CHANGE_REFUSAL_UNSPECIFIED, res.GetSucceeded())
		})
	}
}
