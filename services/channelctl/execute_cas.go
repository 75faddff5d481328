package channelctl

import (
	"context"
	"fmt"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

// commitCAS sends all compare-and-sets of a round in one call. When the call itself fails its
// outcome is unknown, so each channel is read back and reported as a refusal carrying the
// current record: the machine adopts it and resumes from there. A reply without one result
// per change (a bug, another version) is such a failure too, not an index past its end.
func (c *Controller) commitCAS(ctx context.Context, changes []*arbiterv1.ChannelChange, emit func(string, machine.Event)) {
	resp, err := c.cfg.Arbiter.CompareAndSetChannels(ctx, &arbiterv1.CompareAndSetChannelsRequest{NodeId: c.cfg.NodeID, Changes: changes})
	if err == nil && len(resp.GetResults()) != len(changes) {
		err = fmt.Errorf("arbiter answered %d results for %d changes", len(resp.GetResults()), len(changes))
	}
	if err != nil {
		for _, ch := range changes {
			got, gerr := c.cfg.Arbiter.GetChannel(ctx, &arbiterv1.GetChannelRequest{ChannelId: ch.GetChannelId()})
			ev := machine.CASResult{Refusal: machine.RefusedStaleEpoch, Reason: fmt.Sprintf("compare-and-set failed: %v", err), At: c.cfg.Now()}
			if gerr == nil {
				ev.Channel = got.GetChannel()
			}
			emit(ch.GetChannelId(), ev)
		}
		return
	}
	for i, res := range resp.GetResults() {
		ev := machine.CASResult{Accepted: res.GetSucceeded(), Channel: res.GetChannel(), Reason: res.GetError(), At: c.cfg.Now()}
		if !ev.Accepted {
			ev.Refusal = machine.RefusedStaleEpoch
			if res.GetRefusal() == arbiterv1.ChangeRefusal_CHANGE_REFUSAL_NOT_SLOT_OWNER {
				ev.Refusal = machine.RefusedNotOwner
			}
		}
		emit(changes[i].GetChannelId(), ev)
	}
}
