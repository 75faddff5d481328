package replica

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// specOf is the spec of a channel whose replicas are the given nodes (1-based).
func (c *cluster) specOf(channel string, group uint64, join bool, nodes ...int) *replicav1.GroupSpec {
	sp := &replicav1.GroupSpec{ChannelId: channel, GroupId: group, Join: join}
	for _, n := range nodes {
		sp.Replicas = append(sp.Replicas, &replicav1.Peer{NodeId: uint64(n), Address: c.svcs[n-1].Advertise()})
	}
	return sp
}

func (c *cluster) loadOn(sp *replicav1.GroupSpec, nodes ...int) {
	c.t.Helper()
	for _, n := range nodes {
		resp, err := c.ctl[n-1].LoadGroups(ctx(c.t), &replicav1.LoadGroupsRequest{Groups: []*replicav1.GroupSpec{sp}})
		require.NoError(c.t, err)
		require.Nil(c.t, resp.GetResults()[0].GetError(), "node %d", n)
	}
}

func (c *cluster) stopNode(n int) {
	c.t.Helper()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(c.t, c.svcs[n-1].Stop(sctx))
	_ = c.conns[n-1].Close()
	c.svcs[n-1] = nil
}

func (c *cluster) appendN(node int, channel, prefix string, n int) {
	c.t.Helper()
	for i := range n {
		_, err := c.data[node-1].Append(ctx(c.t), &replicav1.AppendRequest{ChannelId: channel, Messages: msgs(fmt.Sprintf("%s-%d", prefix, i))})
		require.NoError(c.t, err)
	}
}

// The repair the channelctl orders when a replica stays dead: the new replica joins empty,
// catches up as a learner, becomes a voter, the dead one leaves; then a second failure (the
// leader) still leaves a majority that holds every acknowledged message.
func TestChangeReplicasReplacesADeadReplicaWithoutLosingData(t *testing.T) {
	c := newClusterOf(t, 4)
	const ch, group = "repaired", 40
	c.loadOn(c.specOf(ch, group, false, 1, 2, 3), 1, 2, 3)
	c.elect(1, ch)
	c.appendN(1, ch, "before", 20)

	c.stopNode(3)
	c.appendN(1, ch, "degraded", 5)

	// The new replica loads the group empty; the surviving follower learns its address.
	newSpec := c.specOf(ch, group, true, 1, 2, 4)
	c.loadOn(newSpec, 4, 2)
	st4, err := c.ctl[3].GetGroupStatus(ctx(t), &replicav1.GetGroupStatusRequest{ChannelIds: []string{ch}})
	require.NoError(t, err)
	require.Zero(t, st4.GetResults()[0].GetStatus().GetLastIndex(), "a joining replica starts empty")

	change := &replicav1.ReplicaChange{ChannelId: ch, AddNodeId: 4, AddAddress: c.svcs[3].Advertise(), RemoveNodeId: 3,
		AddStoreId: c.svcs[3].store.StoreID()}
	resp, err := c.ctl[0].ChangeReplicas(ctx(t), &replicav1.ChangeReplicasRequest{Changes: []*replicav1.ReplicaChange{change}})
	require.NoError(t, err)
	res := resp.GetResults()[0]
	require.Nil(t, res.GetError())
	require.Equal(t, []uint64{1, 2, 4}, res.GetStatus().GetVoters())
	require.Empty(t, res.GetStatus().GetLearners())

	// Repeating the order (a channelctl that timed out and retries) changes nothing.
	resp, err = c.ctl[0].ChangeReplicas(ctx(t), &replicav1.ChangeReplicasRequest{Changes: []*replicav1.ReplicaChange{change}})
	require.NoError(t, err)
	require.Nil(t, resp.GetResults()[0].GetError())
	require.Equal(t, []uint64{1, 2, 4}, resp.GetResults()[0].GetStatus().GetVoters())

	c.appendN(1, ch, "repaired", 5)
	// The old leader dies too: nodes 2 and 4 are a majority of {1, 2, 4} and node 4, elected,
	// serves every acknowledged message.
	c.stopNode(1)
	c.elect(4, ch)
	c.appendN(4, ch, "after", 3)
	requireContiguous(t, readAll(t, c.data[3], ch), 33)
}

func TestChangeReplicasRefusesBadOrders(t *testing.T) {
	c := newClusterOf(t, 3)
	const ch = "refused"
	c.loadOn(c.specOf(ch, 41, false, 1, 2, 3), 1, 2, 3)
	c.elect(1, ch)
	for name, tc := range map[string]struct {
		node   int
		change *replicav1.ReplicaChange
		code   codes.Code
	}{
		"no node to add":   {1, &replicav1.ReplicaChange{ChannelId: ch, RemoveNodeId: 3}, codes.InvalidArgument},
		"add and remove":   {1, &replicav1.ReplicaChange{ChannelId: ch, AddNodeId: 3, RemoveNodeId: 3}, codes.InvalidArgument},
		"leader removes":   {1, &replicav1.ReplicaChange{ChannelId: ch, AddNodeId: 9, RemoveNodeId: 1}, codes.InvalidArgument},
		"unknown channel":  {1, &replicav1.ReplicaChange{ChannelId: "nope", AddNodeId: 9, RemoveNodeId: 3}, codes.NotFound},
		"sent to follower": {2, &replicav1.ReplicaChange{ChannelId: ch, AddNodeId: 9, RemoveNodeId: 3}, codes.FailedPrecondition},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := c.ctl[tc.node-1].ChangeReplicas(ctx(t), &replicav1.ChangeReplicasRequest{Changes: []*replicav1.ReplicaChange{tc.change}})
			require.NoError(t, err)
			ge := resp.GetResults()[0].GetError()
			require.NotNil(t, ge)
			require.Equal(t, tc.code, codes.Code(ge.GetCode()), ge.GetMessage())
		})
	}
	st, err := c.ctl[0].GetGroupStatus(ctx(t), &replicav1.GetGroupStatusRequest{ChannelIds: []string{ch}})
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2, 3}, st.GetResults()[0].GetStatus().GetVoters(), "refused orders left the group alone")
}

// A repair names the whole voter set it wants: a replica an earlier, unfinished repair added
// leaves along with the dead one. And an order under an older epoch than one seen is refused.
func TestChangeReplicasReachesTheWantedVotersAndFencesOldOrders(t *testing.T) {
	c := newClusterOf(t, 5)
	const ch, group = "target", 42
	c.loadOn(c.specOf(ch, group, false, 1, 2, 3), 1, 2, 3)
	c.elect(1, ch)
	c.appendN(1, ch, "m", 5)

	// An earlier owner's repair added node 4 and stopped there (voters 1, 2, 3, 4).
	c.loadOn(c.specOf(ch, group, true, 1, 2, 3, 4), 4)
	change := func(epoch uint64, add uint64, remove uint64, voters ...uint64) *replicav1.ChangeReplicasResult {
		resp, err := c.ctl[0].ChangeReplicas(ctx(t), &replicav1.ChangeReplicasRequest{Changes: []*replicav1.ReplicaChange{{
			ChannelId: ch, AddNodeId: add, AddAddress: c.svcs[add-1].Advertise(), RemoveNodeId: remove, Epoch: epoch, Voters: voters}}})
		require.NoError(t, err)
		return resp.GetResults()[0]
	}
	res := change(5, 4, 0)
	require.Nil(t, res.GetError())
	require.Equal(t, []uint64{1, 2, 3, 4}, res.GetStatus().GetVoters())

	// The next owner replaces 3 by 5 and wants exactly {1, 2, 5}: 4 leaves too.
	c.loadOn(c.specOf(ch, group, true, 1, 2, 5), 5)
	res = change(7, 5, 3, 1, 2, 5)
	require.Nil(t, res.GetError())
	require.Equal(t, []uint64{1, 2, 5}, res.GetStatus().GetVoters())
	require.Empty(t, res.GetStatus().GetLearners())

	// The earlier owner's late order (epoch 5) is refused and changes nothing.
	res = change(5, 4, 0)
	require.NotNil(t, res.GetError())
	require.Equal(t, codes.FailedPrecondition, codes.Code(res.GetError().GetCode()), res.GetError().GetMessage())
	st, err := c.ctl[0].GetGroupStatus(ctx(t), &replicav1.GetGroupStatusRequest{ChannelIds: []string{ch}})
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2, 5}, st.GetResults()[0].GetStatus().GetVoters())

	// Wanted voters that leave out the leader or the new node are bad orders.
	res = change(7, 4, 3, 2, 4, 5)
	require.Equal(t, codes.InvalidArgument, codes.Code(res.GetError().GetCode()), res.GetError().GetMessage())
	c.appendN(1, ch, "after", 2)
	requireContiguous(t, readAll(t, c.data[0], ch), 7)
}

// A replica whose disk was replaced: loads naming its old store are refused, it joins the
// group again on probation, and the leader's rejoin (remove, add as a learner with the new
// store, promote) brings it back as a voter holding every acknowledged message.
func TestReplacedStoreRejoinsAsANewReplica(t *testing.T) {
	c := newClusterOf(t, 3)
	const ch, group = "replaced", 43
	for n := 1; n <= 3; n++ {
		sp := c.specOf(ch, group, false, 1, 2, 3)
		sp.StoreId = c.svcs[n-1].store.StoreID()
		c.loadOn(sp, n)
	}
	c.elect(1, ch)
	c.appendN(1, ch, "before", 20)

	old := c.svcs[2].store.StoreID()
	c.stopNode(3)
	require.NoError(t, os.RemoveAll(c.dirs[2]))
	c.startNode(3)
	fresh := c.svcs[2].store.StoreID()
	require.NotEqual(t, old, fresh, "a wiped directory is a new store")

	stale := c.specOf(ch, group, false, 1, 2, 3)
	stale.StoreId = old
	resp, err := c.ctl[2].LoadGroups(ctx(t), &replicav1.LoadGroupsRequest{Groups: []*replicav1.GroupSpec{stale}})
	require.NoError(t, err)
	ge := resp.GetResults()[0].GetError()
	require.NotNil(t, ge, "a load naming the old store was accepted")
	require.Equal(t, codes.FailedPrecondition, codes.Code(ge.GetCode()), ge.GetMessage())
	require.Contains(t, ge.GetMessage(), "store replaced")

	c.appendN(1, ch, "degraded", 5)
	c.loadOn(c.specOf(ch, group, true, 1, 2, 3), 3)
	c.loadOn(c.specOf(ch, group, false, 1, 2, 3), 2) // node 2 learns node 3's new address
	st, err := c.ctl[2].GetGroupStatus(ctx(t), &replicav1.GetGroupStatusRequest{ChannelIds: []string{ch}})
	require.NoError(t, err)
	require.Equal(t, fresh, st.GetResults()[0].GetStatus().GetStoreId())

	rejoin := &replicav1.ReplicaChange{ChannelId: ch, AddNodeId: 3, RemoveNodeId: 3, AddAddress: c.svcs[2].Advertise(),
		AddStoreId: fresh, Voters: []uint64{1, 2, 3}}
	for range 2 { // the second time is a channelctl repeating the order after a timeout
		cr, err := c.ctl[0].ChangeReplicas(ctx(t), &replicav1.ChangeReplicasRequest{Changes: []*replicav1.ReplicaChange{rejoin}})
		require.NoError(t, err)
		res := cr.GetResults()[0]
		require.Nil(t, res.GetError())
		require.Equal(t, []uint64{1, 2, 3}, res.GetStatus().GetVoters())
		require.Empty(t, res.GetStatus().GetLearners())
	}

	// The rejoined replica votes and holds everything: with node 1 gone it is elected with
	// node 2's vote and serves every acknowledged message.
	c.appendN(1, ch, "rejoined", 3)
	c.stopNode(1)
	c.elect(3, ch)
	c.appendN(3, ch, "after", 2)
	requireContiguous(t, readAll(t, c.data[2], ch), 30)
}

// The fence holds for every step of an order, not only its start: a repair whose new replica
// is slow to catch up, while the channel's record moved on (the channelctl reconciling a joint
// record loads the group on the leader under a newer epoch, then reads its configuration),
// must not promote the replica nor remove the old one afterwards. Before the check per step,
// this order went on to voters {1, 2, 4} behind the record's back.
func TestChangeReplicasStopsAtTheNextStepOnceANewerEpochIsSeen(t *testing.T) {
	c := newClusterOf(t, 4)
	const ch, group = "late", 43
	c.loadOn(c.specOf(ch, group, false, 1, 2, 3), 1, 2, 3)
	c.elect(1, ch)
	c.appendN(1, ch, "m", 5)

	done := make(chan *replicav1.ChangeReplicasResult, 1)
	go func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		resp, err := c.ctl[0].ChangeReplicas(cctx, &replicav1.ChangeReplicasRequest{Changes: []*replicav1.ReplicaChange{{
			ChannelId: ch, AddNodeId: 4, AddAddress: c.svcs[3].Advertise(), RemoveNodeId: 3, Epoch: 5}}})
		if err != nil {
			done <- &replicav1.ChangeReplicasResult{Error: &replicav1.GroupError{Message: err.Error()}}
			return
		}
		done <- resp.GetResults()[0]
	}()
	status := func() *replicav1.GroupStatus {
		st, err := c.ctl[0].GetGroupStatus(ctx(t), &replicav1.GetGroupStatusRequest{ChannelIds: []string{ch}})
		require.NoError(t, err)
		return st.GetResults()[0].GetStatus()
	}
	// Node 4 holds nothing yet, so the order waits for it as a learner.
	require.Eventually(t, func() bool { return slices.Contains(status().GetLearners(), 4) }, 20*time.Second, 5*time.Millisecond)

	sp := c.specOf(ch, group, false, 1, 2, 3)
	sp.Epoch = 6
	c.loadOn(sp, 1)
	c.loadOn(c.specOf(ch, group, true, 1, 2, 3, 4), 4) // now it can catch up

	res := <-done
	require.NotNil(t, res.GetError(), "the order must stop at its next step")
	require.Equal(t, codes.FailedPrecondition, codes.Code(res.GetError().GetCode()), res.GetError().GetMessage())
	st := status()
	require.Equal(t, []uint64{1, 2, 3}, st.GetVoters())
	require.Equal(t, []uint64{4}, st.GetLearners())
}
