package tests

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
)

// instruct sends one instruction to whichever channelctl owns the channel's slot.
func instruct(c *testcluster.Cluster, ctx context.Context, t *testing.T, in *channelctlv1.Instruction) *channelctlv1.InstructionResult {
	t.Helper()
	ch, ok := c.Arbiter(1).FSM().Channel(in.GetChannelId())
	require.True(t, ok)
	owner := c.Arbiter(1).FSM().Slots()[ch.Slot].Owner
	cl := channelctlv1.NewChannelControlServiceClient(c.Dial(c.Channelctl(owner).Advertise()))
	resp, err := cl.Instruct(ctx, &channelctlv1.InstructRequest{Instructions: []*channelctlv1.Instruction{in}})
	require.NoError(t, err)
	return resp.GetResults()[0]
}

// Operator orders: move the leader, hibernate, activate; each runs as the machine's own
// transition, and the data survives all of them.
func TestInstructMovesHibernatesAndActivates(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := testcluster.Start(t)
	ctx := testutil.Context(t, 2*time.Minute)
	const channel = "ops"
	acked := map[uint64]string{}
	seq, err := c.Send(ctx, channel, "m1")
	require.NoError(t, err)
	acked[seq] = "m1"

	ch, _ := c.Arbiter(1).FSM().Channel(channel)
	target := ch.Replicas[0]
	if target == ch.Leader {
		target = ch.Replicas[1]
	}
	require.Eventually(t, func() bool {
		// The move check refuses a target that has not yet acknowledged the last entry.
		return instruct(c, ctx, t, &channelctlv1.Instruction{ChannelId: channel,
			Kind: &channelctlv1.Instruction_MoveLeaderToNodeId{MoveLeaderToNodeId: target}}).GetSucceeded()
	}, 10*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool {
		ch, _ := c.Arbiter(1).FSM().Channel(channel)
		return ch.Leader == target && ch.State == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE
	}, 20*time.Second, 20*time.Millisecond, "leader never moved to %d", target)

	// The arbiter's record can be ahead of the channelctl's machine by one result: an order
	// that arrives in between is refused as busy and taken on the next try.
	require.Eventually(t, func() bool {
		return instruct(c, ctx, t, &channelctlv1.Instruction{ChannelId: channel,
			Kind: &channelctlv1.Instruction_Hibernate{Hibernate: true}}).GetSucceeded()
	}, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		ch, _ := c.Arbiter(1).FSM().Channel(channel)
		return ch.State == arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED
	}, 20*time.Second, 20*time.Millisecond)
	res := instruct(c, ctx, t, &channelctlv1.Instruction{ChannelId: channel, Kind: &channelctlv1.Instruction_MoveLeaderToNodeId{MoveLeaderToNodeId: target}})
	require.False(t, res.GetSucceeded(), "a hibernated channel has no leader to move")
	require.Contains(t, res.GetError(), "not active")

	res = instruct(c, ctx, t, &channelctlv1.Instruction{ChannelId: channel, Kind: &channelctlv1.Instruction_Activate{Activate: true}})
	require.True(t, res.GetSucceeded(), res.GetError())
	require.Eventually(t, func() bool {
		ch, _ := c.Arbiter(1).FSM().Channel(channel)
		return ch.State == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE
	}, 20*time.Second, 20*time.Millisecond)
	seq, err = c.Send(ctx, channel, "m2")
	require.NoError(t, err)
	acked[seq] = "m2"
	c.RequireExactlyOnce(t, ctx, channel, acked)
}

func TestInstructRefusesBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := testcluster.Start(t)
	ctx := testutil.Context(t, time.Minute)
	cl := channelctlv1.NewChannelControlServiceClient(c.Dial(c.Channelctl(101).Advertise()))
	for name, req := range map[string]*channelctlv1.InstructRequest{
		"empty":       {},
		"no channel":  {Instructions: []*channelctlv1.Instruction{{Kind: &channelctlv1.Instruction_Activate{Activate: true}}}},
		"no kind":     {Instructions: []*channelctlv1.Instruction{{ChannelId: "x"}}},
		"move to 0":   {Instructions: []*channelctlv1.Instruction{{ChannelId: "x", Kind: &channelctlv1.Instruction_MoveLeaderToNodeId{}}}},
		"false order": {Instructions: []*channelctlv1.Instruction{{ChannelId: "x", Kind: &channelctlv1.Instruction_Hibernate{}}}},
	} {
		_, err := cl.Instruct(ctx, req)
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%s: %v", name, err)
	}
	// A channel nobody created is answered per instruction, not by failing the call.
	resp, err := cl.Instruct(ctx, &channelctlv1.InstructRequest{Instructions: []*channelctlv1.Instruction{
		{ChannelId: "never-created", Kind: &channelctlv1.Instruction_Activate{Activate: true}}}})
	require.NoError(t, err)
	require.False(t, resp.GetResults()[0].GetSucceeded())
	require.NotEmpty(t, resp.GetResults()[0].GetError())
}
