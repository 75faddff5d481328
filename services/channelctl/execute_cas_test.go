package channelctl

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

// miscountingArbiter answers a compare-and-set with extra results, or with fewer when extra
// is negative.
type miscountingArbiter struct {
	*fakeArbiter
	extra int
}

func (a miscountingArbiter) CompareAndSetChannels(ctx context.Context, req *arbiterv1.CompareAndSetChannelsRequest) (*arbiterv1.CompareAndSetChannelsResponse, error) {
	resp, err := a.fakeArbiter.CompareAndSetChannels(ctx, req)
	if err != nil {
		return nil, err
	}
	for range a.extra {
		resp.Results = append(resp.Results, &arbiterv1.ChannelChangeResult{Succeeded: true})
	}
	if a.extra < 0 {
		resp.Results = resp.Results[:len(resp.Results)+a.extra]
	}
	return resp, nil
}

// An arbiter reply without one result per change fails the call (each channel is read back
// and reported refused with its record, as when the call fails): a longer one used to index
// past the changes and stop the controller, a shorter one to leave channels with no outcome.
func TestCASReplyOfTheWrongLengthFailsTheCall(t *testing.T) {
	for _, extra := range []int{1, -1} {
		arb := &fakeArbiter{watch: make(chan *arbiterv1.WatchResponse, 4), channels: map[string]*arbiterv1.Channel{
			"a": {ChannelId: "a", GroupId: 1, Slot: 3, Epoch: 10, State: arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED},
			"b": {ChannelId: "b", GroupId: 2, Slot: 3, Epoch: 20, State: arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED},
		}}
		c := NewController(ControllerConfig{NodeID: 101, HibernateAfter: time.Minute, Arbiter: miscountingArbiter{arb, extra}})
		got := map[string]machine.CASResult{}
		c.commitCAS(context.Background(), []*arbiterv1.ChannelChange{{ChannelId: "a", ExpectedEpoch: 10}, {ChannelId: "b", ExpectedEpoch: 20}},
			func(channel string, ev machine.Event) { got[channel] = ev.(machine.CASResult) })
		require.Len(t, got, 2, "extra %d: one outcome per channel", extra)
		for id, res := range got {
			require.False(t, res.Accepted, id)
			require.Equal(t, machine.RefusedStaleEpoch, res.Refusal, id)
			require.Contains(t, res.Reason, "results for 2 changes", id)
			require.Equal(t, id, res.Channel.GetChannelId(), "the channel's record read back")
		}
	}
}
