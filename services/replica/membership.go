package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3/raftpb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/multiraft"
)

// Replica-set repair, on the leader. The order of the steps is what keeps a second failure
// harmless: the new replica becomes a voter only once it holds the whole log (a voter that
// lags would count towards a quorum it cannot serve), and the dead one leaves only after that,
// so the group never has fewer caught-up voters than it had.

// Fence checks a control order made under epoch against the newest epoch of the channel seen
// here (from loads and orders) and raises it: an order under an older epoch comes from a
// channelctl that lost the channel's slot or acts on a stale record, and is refused with
// ErrStaleOrder. The fence is seeded at each load from the load's epoch and the epoch of the
// spec stored by the previous load, so it survives unloads and restarts.
func (e *Engine) Fence(channelID string, epoch uint64) error {
	ch, err := e.channel(channelID)
	if err != nil {
		return err
	}
	if !ch.seeEpoch(epoch) {
		return fmt.Errorf("%w: order for %s under epoch %d, epoch %d seen", ErrStaleOrder, ch.id, epoch, ch.epoch.Load())
	}
	return nil
}

// seeEpoch raises the channel's epoch fence to epoch and reports whether epoch is not older
// than the fence.
func (c *channel) seeEpoch(epoch uint64) bool {
	for {
		cur := c.epoch.Load()
		if epoch < cur {
			return false
		}
		if epoch == cur || c.epoch.CompareAndSwap(cur, epoch) {
			return true
		}
	}
}

func (c *channel) currentVoters() []uint64 {
	c.votMu.Lock()
	defer c.votMu.Unlock()
	return c.voters
}

// setVoters records the configuration raft applies; the slice is never modified afterwards,
// so readers may keep it.
func (c *channel) setVoters(voters []uint64) {
	v := slices.Clone(voters)
	slices.Sort(v)
	c.votMu.Lock()
	c.voters = v
	c.votMu.Unlock()
}

// ChangeReplicas replaces change.RemoveNodeId by change.AddNodeId in the channel's group, on
// its leader (this replica). The new replica must have loaded the group with GroupSpec.join.
// It is added as a learner, promoted once its log reaches the leader's last index as of the
// promotion check, and only then does the old replica leave, with, when change.Voters is set,
// every other voter or learner outside it (left by a repair that an earlier owner of the
// channel began and never finished). Every step is skipped when already done, so an order
// repeated after a timeout or a channelctl takeover resumes where the last one stopped; an
// order under an older epoch than one seen here is refused, when it arrives and before each step.
//
// Both conf changes that add the replica carry change.AddStoreId, which admits the joining
// store to the group (see GroupSpec.join). When AddNodeId equals RemoveNodeId the change is a
// rejoin of a node whose store was replaced: it is first removed while it is a voter (which
// drops the leader's record of what the old store had acknowledged: kept, it would make
// raft send the new store commit indexes beyond its log), then added back like a new replica.
// A repeated rejoin that finds the node a voter again removes and re-adds it once more, which
// costs a catch-up from where its log is and is otherwise harmless.
func (e *Engine) ChangeReplicas(ctx context.Context, change *replicav1.ReplicaChange) (*replicav1.GroupStatus, error) {
	add, remove := change.GetAddNodeId(), change.GetRemoveNodeId()
	rejoin := add == remove
	switch {
	case add == 0:
		return nil, fmt.Errorf("%w: change of %s names no replica to add", ErrInvalid, change.GetChannelId())
	case rejoin && change.GetAddStoreId() == 0:
		return nil, fmt.Errorf("%w: change of %s adds and removes node %d without naming its new store", ErrInvalid, change.GetChannelId(), add)
	case remove == e.cfg.NodeID:
		// Removing the leader would stop the channel until an ordered election; the channelctl
		// moves leadership first.
		return nil, fmt.Errorf("%w: the leader of %s cannot remove itself", ErrInvalid, change.GetChannelId())
	case len(change.GetVoters()) > 0 && (!slices.Contains(change.GetVoters(), add) || !slices.Contains(change.GetVoters(), e.cfg.NodeID) ||
		!rejoin && slices.Contains(change.GetVoters(), remove)):
		return nil, fmt.Errorf("%w: change of %s wants voters %v: they must hold the leader %d and node %d and not node %d",
			ErrInvalid, change.GetChannelId(), change.GetVoters(), e.cfg.NodeID, add, remove)
	}
	ch, err := e.channel(change.GetChannelId())
	if err != nil {
		return nil, err
	}
	if !ch.seeEpoch(change.GetEpoch()) {
		return nil, fmt.Errorf("%w: change of %s under epoch %d, epoch %d seen", ErrStaleOrder, ch.id, change.GetEpoch(), ch.epoch.Load())
	}
	if err := e.leads(ctx, ch); err != nil {
		return nil, err
	}
	if addr := change.GetAddAddress(); addr != "" {
		e.mu.Lock()
		e.addresses[add] = addr
		e.mu.Unlock()
		if e.peers != nil {
			e.peers.SetPeer(add, addr)
		}
	}

	var token []byte
	if id := change.GetAddStoreId(); id != 0 {
		token = multiraft.StoreToken(id)
	}
	st, err := e.host.Status(ctx, ch.group)
	if err != nil {
		return nil, err
	}
	if rejoin && slices.Contains(st.ConfState.Voters, add) {
		if err := e.confChange(ctx, ch, change.GetEpoch(), raftpb.ConfChangeRemoveNode, add, nil); err != nil {
			return nil, err
		}
		if st, err = e.host.Status(ctx, ch.group); err != nil {
			return nil, err
		}
	}
	cs := st.ConfState
	if !slices.Contains(cs.Voters, add) && !slices.Contains(cs.Learners, add) {
		if err := e.confChange(ctx, ch, change.GetEpoch(), raftpb.ConfChangeAddLearnerNode, add, token); err != nil {
			return nil, err
		}
	}
	if st, err = e.host.Status(ctx, ch.group); err != nil {
		return nil, err
	}
	if !slices.Contains(st.ConfState.Voters, add) {
		if err := e.host.WaitCaughtUp(ctx, ch.group, add); err != nil {
			return nil, e.notLeader(ch, err)
		}
		if err := e.confChange(ctx, ch, change.GetEpoch(), raftpb.ConfChangeAddNode, add, token); err != nil {
			return nil, err
		}
	}
	if rejoin {
		remove = 0 // it is back
	}
	for {
		if st, err = e.host.Status(ctx, ch.group); err != nil {
			return nil, err
		}
		leaving := leavers(st.ConfState.Voters, st.ConfState.Learners, remove, change.GetVoters())
		if len(leaving) == 0 {
			return e.GroupStatus(ctx, ch.id)
		}
		// One at a time: raft takes a single voter change per entry outside joint consensus.
		if err := e.confChange(ctx, ch, change.GetEpoch(), raftpb.ConfChangeRemoveNode, leaving[0], nil); err != nil {
			return nil, err
		}
	}
}

// leavers are the members to remove: remove when it is one, and, when the wanted voters are
// given, every voter or learner outside them.
func leavers(voters, learners []uint64, remove uint64, wanted []uint64) []uint64 {
	var out []uint64
	for _, n := range slices.Concat(voters, learners) {
		if (n == remove || len(wanted) > 0 && !slices.Contains(wanted, n)) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// confChange proposes one step of an order made under epoch and waits until it applies. The
// fence is checked again before each step, not only when the order arrived: a step waits for
// its new replica to catch up, which can take long enough for the channel's record to move on
// (the channelctl reconciling a joint record raises this fence with a load before it reads the
// configuration, and counts on no older order changing it after that).
func (e *Engine) confChange(ctx context.Context, ch *channel, epoch uint64, typ raftpb.ConfChangeType, node uint64, context []byte) error {
	if seen := ch.epoch.Load(); epoch < seen {
		return fmt.Errorf("%w: %s of node %d in %s under epoch %d, epoch %d seen since the order began",
			ErrStaleOrder, typ, node, ch.id, epoch, seen)
	}
	cc := &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: typ.Enum(), NodeId: new(node)}}, Context: context}
	if _, err := e.host.ProposeConfChange(ctx, ch.group, cc); err != nil {
		if errors.Is(err, multiraft.ErrConfChangeRefused) {
			return fmt.Errorf("%w: %s of node %d in %s: %w", ErrInvalid, typ, node, ch.id, err)
		}
		return fmt.Errorf("replica: %s of node %d in %s: %w", typ, node, ch.id, e.notLeader(ch, err))
	}
	st, err := e.host.Status(ctx, ch.group)
	if err != nil {
		return err
	}
	ch.setVoters(st.ConfState.Voters)
	return nil
}

// confStateIDs returns the voters and learners of a status's configuration.
func confStateIDs(st multiraft.Status) (voters, learners []uint64) {
	if st.ConfState == nil {
		return nil, nil
	}
	return slices.Sorted(slices.Values(st.ConfState.Voters)), slices.Sorted(slices.Values(st.ConfState.Learners))
}
