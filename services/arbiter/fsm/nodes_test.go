package fsm

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

func TestRegisterNodeNew(t *testing.T) {
	f := New()
	res := register(t, f, 7, replica, "z1")
	require.True(t, res.Created)
	require.Equal(t, uint64(1), res.Revision)
	require.Equal(t, Node{
		ID: 7, Role: replica, Address: addr(7), Zone: "z1", State: alive, Liveness: alive,
		Incarnation: 1, RegisterTime: t0, StateTime: t0, StateReason: "registered",
	}, res.Node)
	got, ok := f.Node(7)
	require.True(t, ok)
	require.Equal(t, res.Node, got)

	batch, err := f.EventsSince(0, Filter{Nodes: true})
	require.NoError(t, err)
	require.Len(t, batch.Events, 1)
	require.Equal(t, EventNode, batch.Events[0].Kind)
	require.Equal(t, uint64(7), batch.Events[0].Node.ID)
}

func TestRegisterNodeAgain(t *testing.T) {
	later := t0.Add(time.Minute)
	for name, tc := range map[string]struct {
		before  arbiterv1.NodeState // committed before the re-registration
		address string
		wantErr error
	}{
		"same address while alive":      {before: alive, address: addr(1)},
		"same address after death":      {before: dead, address: addr(1)},
		"same address while suspect":    {before: suspect, address: addr(1)},
		"same address while draining":   {before: draining, address: addr(1)},
		"new address while alive":       {before: alive, address: "10.9.9.9:1", wantErr: ErrAddressConflict},
		"new address while suspect":     {before: suspect, address: "10.9.9.9:1", wantErr: ErrAddressConflict},
		"new address while draining":    {before: draining, address: "10.9.9.9:1", wantErr: ErrAddressConflict},
		"new address once dead (moved)": {before: dead, address: "10.9.9.9:1"},
	} {
		t.Run(name, func(t *testing.T) {
			f := New()
			register(t, f, 1, replica, "z")
			if tc.before != alive {
				setState(t, f, 1, tc.before)
			}
			cmd := RegisterNodeCommand(1, replica, tc.address, "z2", later)
			if tc.wantErr != nil {
				requireUnchanged(t, f, func() {
					_, err := f.Apply(cmd)
					require.ErrorIs(t, err, tc.wantErr)
					require.ErrorContains(t, err, addr(1))
				})
				return
			}
			res := mustApply(t, f, cmd).(RegisterNodeResult)
			require.False(t, res.Created)
			require.Equal(t, uint64(2), res.Node.Incarnation)
			require.Equal(t, alive, res.Node.State, "a restart makes the node alive and ends a drain")
			require.False(t, res.Node.Draining)
			require.Equal(t, tc.address, res.Node.Address)
			require.Equal(t, "z2", res.Node.Zone)
			require.Equal(t, later, res.Node.RegisterTime)
		})
	}
}

func TestRegisterNodeInvalid(t *testing.T) {
	for name, tc := range map[string]struct {
		cmd     *arbiterv1.Command
		wantErr error
	}{
		"node id 0":        {RegisterNodeCommand(0, replica, addr(1), "", t0), ErrInvalidArgument},
		"no role":          {RegisterNodeCommand(9, arbiterv1.NodeRole_NODE_ROLE_UNSPECIFIED, addr(9), "", t0), ErrInvalidArgument},
		"unknown role":     {RegisterNodeCommand(9, arbiterv1.NodeRole(42), addr(9), "", t0), ErrInvalidArgument},
		"empty address":    {RegisterNodeCommand(9, replica, "", "", t0), ErrInvalidArgument},
		"address no port":  {RegisterNodeCommand(9, replica, "10.0.0.9", "", t0), ErrInvalidArgument},
		"address too long": {RegisterNodeCommand(9, replica, strings.Repeat("a", 300)+":1", "", t0), ErrInvalidArgument},
		"zone too long":    {RegisterNodeCommand(9, replica, addr(9), strings.Repeat("z", 65), t0), ErrInvalidArgument},
		"role change":      {RegisterNodeCommand(1, channelctl, addr(1), "", t0), ErrRoleConflict},
		"missing time": {&arbiterv1.Command{Kind: &arbiterv1.Command_RegisterNode{RegisterNode: &arbiterv1.RegisterNodeCommand{
			NodeId: 9, Role: replica, Address: addr(9)}}}, ErrInvalidCommand},
	} {
		t.Run(name, func(t *testing.T) {
			f := New()
			register(t, f, 1, replica, "")
			requireUnchanged(t, f, func() {
				_, err := f.Apply(tc.cmd)
				require.ErrorIs(t, err, tc.wantErr)
			})
		})
	}
}

func TestSetNodeState(t *testing.T) {
	type step struct {
		state       arbiterv1.NodeState
		wantState   arbiterv1.NodeState
		wantChanged bool
	}
	for name, steps := range map[string][]step{
		"suspect then dead then alive": {
			{suspect, suspect, true}, {dead, dead, true}, {alive, alive, true}},
		"same state is a no-op": {
			{alive, alive, false}, {suspect, suspect, true}, {suspect, suspect, false}},
		"drain survives suspicion": {
			{draining, draining, true}, {draining, draining, false}, {suspect, suspect, true}, {alive, draining, true}},
		"dead draining node shows dead": {
			{draining, draining, true}, {dead, dead, true}},
	} {
		t.Run(name, func(t *testing.T) {
			f := New()
			register(t, f, 1, replica, "")
			for i, s := range steps {
				rev := f.Revision()
				res := setState(t, f, 1, s.state)
				require.Equal(t, s.wantState, res.Node.State, "step %d", i)
				require.Equal(t, s.wantChanged, res.Changed, "step %d", i)
				if s.wantChanged {
					require.Equal(t, rev+1, f.Revision(), "step %d: one event per change", i)
					require.Equal(t, "test", res.Node.StateReason)
				} else {
					require.Equal(t, rev, f.Revision(), "step %d: a no-op writes nothing", i)
				}
			}
		})
	}
}

func TestSetNodeStateInvalid(t *testing.T) {
	for name, tc := range map[string]struct {
		cmd     *arbiterv1.Command
		wantErr error
	}{
		"unknown node":      {SetNodeStateCommand(99, dead, "", t0), ErrUnknownNode},
		"unspecified state": {SetNodeStateCommand(1, arbiterv1.NodeState_NODE_STATE_UNSPECIFIED, "", t0), ErrInvalidArgument},
		"bogus state":       {SetNodeStateCommand(1, arbiterv1.NodeState(17), "", t0), ErrInvalidArgument},
		"reason too long":   {SetNodeStateCommand(1, dead, strings.Repeat("r", 300), t0), ErrInvalidArgument},
		"missing time": {&arbiterv1.Command{Kind: &arbiterv1.Command_SetNodeState{SetNodeState: &arbiterv1.SetNodeStateCommand{
			NodeId: 1, State: dead}}}, ErrInvalidCommand},
	} {
		t.Run(name, func(t *testing.T) {
			f := New()
			register(t, f, 1, replica, "")
			requireUnchanged(t, f, func() {
				_, err := f.Apply(tc.cmd)
				require.ErrorIs(t, err, tc.wantErr)
			})
		})
	}
}

// Declaring the leader dead must not rewrite its channels: the channelctl re-elects with a
// compare-and-set and needs the recorded leader and epoch to do so.
func TestDeadLeaderKeepsChannelFields(t *testing.T) {
	f := New()
	for id := uint64(1); id <= 3; id++ {
		register(t, f, id, replica, "")
	}
	register(t, f, 100, channelctl, "")
	ch := create(t, f, "room", 3).Channel
	leader, term := ch.Replicas[0], uint64(4)
	res := cas(t, f, 100, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1, LeaderNodeId: &leader, LeaderTerm: &term})
	require.True(t, res.Results[0].Succeeded)
	before, _ := f.Channel("room")

	setState(t, f, leader, dead)
	after, _ := f.Channel("room")
	require.Equal(t, before, after)
	n, _ := f.Node(leader)
	require.Equal(t, uint64(1), n.Leaders)
}

func TestNodesSortedByID(t *testing.T) {
	f := New()
	for _, id := range []uint64{5, 2, 9, 1} {
		register(t, f, id, replica, "")
	}
	var ids []uint64
	for _, n := range f.Nodes() {
		ids = append(ids, n.ID)
	}
	require.Equal(t, []uint64{1, 2, 5, 9}, ids)
	_, ok := f.Node(3)
	require.False(t, ok)
}

// Issue 12, item 3: a registration records the store the node has now, whatever it had
// before, so a node back with a wiped disk is seen to have a new store (or none).
func TestRegisterNodeStoreID(t *testing.T) {
	later := t0.Add(time.Minute)
	for name, tc := range map[string]struct {
		// first is the store of the first registration; again that of the restart, which
		// happens only when restart is set.
		first, again uint64
		restart      bool
		want         uint64
	}{
		"new node records its store":        {first: 0xabc, want: 0xabc},
		"new node naming no store has 0":    {first: 0, want: 0},
		"restart with the same store":       {first: 0xabc, again: 0xabc, restart: true, want: 0xabc},
		"restart with a new store replaces": {first: 0xabc, again: 0xdef, restart: true, want: 0xdef},
		"restart naming no store records 0": {first: 0xabc, again: 0, restart: true, want: 0},
		"restart naming a store after none": {first: 0, again: 0x123, restart: true, want: 0x123},
	} {
		t.Run(name, func(t *testing.T) {
			f := New()
			res := mustApply(t, f, RegisterNodeWithStoreCommand(1, replica, addr(1), "z", tc.first, t0)).(RegisterNodeResult)
			if tc.restart {
				res = mustApply(t, f, RegisterNodeWithStoreCommand(1, replica, addr(1), "z", tc.again, later)).(RegisterNodeResult)
				require.Equal(t, uint64(2), res.Node.Incarnation)
			}
			require.Equal(t, tc.want, res.Node.StoreID)
			got, _ := f.Node(1)
			require.Equal(t, tc.want, got.StoreID)
			require.Equal(t, tc.want, got.Proto().GetStoreId())

			// Watchers see the store of each registration.
			batch, err := f.EventsSince(f.Revision()-1, Filter{Nodes: true})
			require.NoError(t, err)
			require.Len(t, batch.Events, 1)
			require.Equal(t, tc.want, batch.Events[0].Node.StoreID)
			require.Equal(t, tc.want, batch.Events[0].Proto().GetNode().GetStoreId())
		})
	}
}
