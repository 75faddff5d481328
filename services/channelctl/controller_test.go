package channelctl

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

func replicaNode(id uint64, state arbiterv1.NodeState) *arbiterv1.WatchEvent {
	return &arbiterv1.WatchEvent{Kind: &arbiterv1.WatchEvent_Node{Node: &arbiterv1.Node{NodeId: id,
		Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA, State: state, Address: "replica-addr", Incarnation: 1}}}
}

// A channel resolved before this channelctl has seen its replicas register (the arbiter placed
// it on them, the watch has not delivered their nodes yet) stalls: unknown replicas count as
// dead. When the watch then shows them alive, the machine must hear so and elect. Before the
// fix the controller told machines only of a change from dead to alive, never of a first
// sighting, so such a channel stayed stalled for good (TestIdleChannelsHibernateAndWake hung on
// a loaded machine, where the first sends can overtake the replicas' registration).
func TestReplicasSeenAfterTheFirstResolveAreAlive(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewController(ControllerConfig{NodeID: 101, HibernateAfter: time.Minute, Now: func() time.Time { return now }})
	c.slots[3] = &arbiterv1.SlotAssignment{Slot: 3, OwnerNodeId: 101}
	ctx := context.Background()
	c.applyWatch(ctx, &arbiterv1.WatchResponse{Events: []*arbiterv1.WatchEvent{
		replicaNode(1, arbiterv1.NodeState_NODE_STATE_ALIVE)}})

	ch := &arbiterv1.Channel{ChannelId: "c", GroupId: 7, Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3}, Epoch: 1,
		State: arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED}
	req := &resolveReq{ch: ch, reply: make(chan answer, 1), id: make(chan uint64, 1)}
	acts := c.startResolve(req)
	select {
	case a := <-req.reply:
		t.Fatalf("answered at once: %v", a.err)
	default:
	}
	require.Len(t, acts, 1)
	claim, ok := acts[0].(machine.CommitCAS)
	require.True(t, ok, "%v", acts)
	res := machine.CASResult{Accepted: true, At: now, Channel: &arbiterv1.Channel{ChannelId: "c", GroupId: 7, Slot: 3,
		ReplicaNodeIds: []uint64{1, 2, 3}, Epoch: claim.Change.GetExpectedEpoch() + 1,
		State: arbiterv1.ChannelState_CHANNEL_STATE_ACTIVATING}}
	acts = c.step("c", res)
	require.True(t, c.machines["c"].Stalled(), "one replica of three known: no majority to elect from")
	require.IsType(t, machine.FailWaiters{}, acts[0])

	acts = c.applyWatch(ctx, &arbiterv1.WatchResponse{Events: []*arbiterv1.WatchEvent{
		replicaNode(2, arbiterv1.NodeState_NODE_STATE_ALIVE), replicaNode(3, arbiterv1.NodeState_NODE_STATE_ALIVE)}})
	var load *machine.LoadGroups
	for _, a := range acts {
		if l, ok := a.(machine.LoadGroups); ok {
			load = &l
		}
	}
	require.NotNil(t, load, "the stalled election resumes once the replicas are seen alive: %v", acts)
	// Node 2's return already makes a majority: the gather starts with it, before node 3's.
	require.Equal(t, []uint64{1, 2}, load.Nodes)
}
