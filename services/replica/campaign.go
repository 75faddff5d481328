package replica

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/raft/v3"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/multiraft"
)

// Ordered campaigns: the control tier elects, the groups never elect themselves.

// Campaign orders this replica to campaign for a channel's group.
func (e *Engine) Campaign(ctx context.Context, channelID string) error {
	ch, err := e.channel(channelID)
	if err != nil {
		return err
	}
	return e.host.Campaign(ctx, ch.group)
}

// CampaignOutcome is the result of one ordered campaign.
type CampaignOutcome struct {
	Status *replicav1.GroupStatus
	Err    error
}

// CampaignAndWait orders this replica to campaign for the channels and waits, up to wait,
// until each either leads here or sees another leader. A campaign that stalls with no leader
// at all (its vote requests were lost: followers are never ticked, so nobody sends them
// again) is ordered again; one that lost to a known leader is not, since with CheckQuorum off
// a second campaign could unseat that leader.
func (e *Engine) CampaignAndWait(ctx context.Context, channelIDs []string, wait time.Duration) []CampaignOutcome {
	out := make([]CampaignOutcome, len(channelIDs))
	pending := map[int]*channel{}
	for i, id := range channelIDs {
		ch, err := e.channel(id)
		if err != nil {
			out[i].Err = err
			continue
		}
		pending[i] = ch
	}
	// Orders and status reads go to the host in one batch per sweep (one queued operation
	// per shard): a failover campaigns thousands of groups here at once, and one round trip
	// to the worker per group would take longer than the elections themselves.
	campaign := func(idx []int) {
		groups := make([]uint64, len(idx))
		for k, i := range idx {
			groups[k] = pending[i].group
		}
		errs, err := e.host.Campaigns(ctx, groups)
		for k, i := range idx {
			gerr := err
			if gerr == nil {
				gerr = errs[groups[k]]
			}
			if gerr != nil {
				out[i].Err = gerr
				delete(pending, i)
			}
		}
	}
	// A campaign that fell back to follower with no leader (its pre-vote was refused or lost)
	// is ordered again soon; one still (pre-)campaigning only after stall, long enough for
	// a slow round trip: ordering again restarts the campaign and, past the pre-vote, takes a
	// new term, so re-ordering faster than votes come back would never elect anyone.
	const poll, again, stall = 2 * time.Millisecond, 50 * time.Millisecond, 300 * time.Millisecond
	deadline := e.cfg.Now().Add(wait)
	e.confirmLeaders(ctx, pending, out, wait)
	ordered := map[int]time.Time{}
	first := make([]int, 0, len(pending))
	confirmed := map[int]bool{}
	for i := range pending {
		if out[i].Status != nil {
			confirmed[i] = true // leads already, confirmed: nothing to campaign for
			continue
		}
		first = append(first, i)
		ordered[i] = e.cfg.Now()
	}
	campaign(first)
	for len(pending) > 0 {
		groups := make([]uint64, 0, len(pending))
		for _, ch := range pending {
			groups = append(groups, ch.group)
		}
		sts, err := e.host.Statuses(ctx, groups)
		if err != nil {
			for i := range pending {
				out[i].Err = err
			}
			return out
		}
		var reorder []int
		for i, ch := range pending {
			st, ok := sts[ch.group]
			if !ok {
				out[i].Err = fmt.Errorf("%w: %s", ErrUnknownChannel, ch.id)
				delete(pending, i)
				continue
			}
			out[i].Status = e.statusProto(ch, st)
			// This replica won and can serve (it applied an entry of its term, see leads),
			// or another one leads: the channel control tier records a leader that serves
			// at once, and clients routed to it do not meet a refusal first.
			if (st.Leader == e.cfg.NodeID && ch.appliedTerm.Load() >= st.Term) || (st.Leader != 0 && st.Leader != e.cfg.NodeID) {
				delete(pending, i)
				continue
			}
			if since := e.cfg.Now().Sub(ordered[i]); !confirmed[i] && ((st.Role == raft.StateFollower && since >= again) || since >= stall) {
				reorder = append(reorder, i)
				ordered[i] = e.cfg.Now()
			}
		}
		if len(reorder) > 0 {
			campaign(reorder)
		}
		if len(pending) == 0 || !e.cfg.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return out
		case <-e.cfg.After(poll):
		}
	}
	return out
}

// confirmLeaders handles the channels of a campaign order that this replica already leads:
// raft ignores a leader's campaign, so the term stays the one the control tier recorded, and
// the leader may have been deposed behind its back. It must show that a quorum still follows
// it in that term (ReadIndex) before it is reported as leader; a channel that cannot is
// reported with ErrReadUnconfirmed. Confirmed channels get a status in out and stay pending
// (the wait for an entry of the term applies as for any winner). It is the rare case of an
// election whose chosen replica never stopped leading, so it confirms one channel at a time
// in parallel, not in batches.
func (e *Engine) confirmLeaders(ctx context.Context, pending map[int]*channel, out []CampaignOutcome, wait time.Duration) {
	groups := make([]uint64, 0, len(pending))
	for _, ch := range pending {
		groups = append(groups, ch.group)
	}
	sts, err := e.host.Statuses(ctx, groups)
	if err != nil {
		return // the campaign loop reports it
	}
	bound := wait
	if e.cfg.LeaseTTL > 0 {
		bound = min(bound, e.cfg.LeaseTTL)
	}
	type leader struct {
		i   int
		ch  *channel
		st  multiraft.Status
		err error
	}
	var leaders []*leader
	for i, ch := range pending {
		if st, ok := sts[ch.group]; ok && st.Role == raft.StateLeader {
			leaders = append(leaders, &leader{i: i, ch: ch, st: st})
		}
	}
	var wg sync.WaitGroup
	for _, l := range leaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, bound)
			defer cancel()
			_, l.err = e.host.ReadIndex(cctx, l.ch.group)
		}()
	}
	wg.Wait()
	for _, l := range leaders {
		if l.err != nil {
			out[l.i].Err = fmt.Errorf("%w: %s already led here in term %d: %w", ErrReadUnconfirmed, l.ch.id, l.st.Term, l.err)
			delete(pending, l.i)
			continue
		}
		out[l.i].Status = e.statusProto(l.ch, l.st)
	}
}
