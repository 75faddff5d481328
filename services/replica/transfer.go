package replica

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// transferPoll is how often a transfer's progress is looked at.
const transferPoll = 2 * time.Millisecond

// TransferLeaderAndWait orders this replica, the leader, to hand the channel to target, and
// waits up to wait until the group has a leader again: the order only starts raft's transfer
// (the target campaigns once it has the whole log), and a channelctl that confirmed at once
// would find nobody leading yet and give the move up. It returns nil when target leads; the
// caller's confirmation decides what a different outcome means.
func (e *Engine) TransferLeaderAndWait(ctx context.Context, channelID string, target uint64, wait time.Duration) error {
	if err := e.TransferLeader(ctx, channelID, target); err != nil {
		return err
	}
	ch, err := e.channel(channelID)
	if err != nil {
		return err
	}
	deadline := e.cfg.Now().Add(wait)
	for {
		st, err := e.host.Status(ctx, ch.group)
		if err != nil {
			return err
		}
		switch {
		case st.Leader == target:
			return nil
		case st.Leader != 0 && st.Leader != e.cfg.NodeID, st.Leader == e.cfg.NodeID && st.LeadTransferee == 0:
			// Another node won, or raft gave the transfer up (the target did not catch up in
			// an election timeout) and this replica still leads.
			return fmt.Errorf("replica: transfer of %s to node %d ended with leader %d", channelID, target, st.Leader)
		}
		if e.cfg.Now().After(deadline) {
			return fmt.Errorf("replica: transfer of %s to node %d still running after %v", channelID, target, wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.cfg.After(transferPoll):
		}
	}
}

// TransferLeader orders this replica, the leader, to hand leadership to target.
func (e *Engine) TransferLeader(ctx context.Context, channelID string, target uint64) error {
	ch, err := e.channel(channelID)
	if err != nil {
		return err
	}
	if !slices.Contains(ch.currentVoters(), target) {
		return fmt.Errorf("%w: node %d is not a replica of %s", ErrInvalid, target, channelID)
	}
	return e.notLeader(ch, e.host.TransferLeader(ctx, ch.group, target))
}
