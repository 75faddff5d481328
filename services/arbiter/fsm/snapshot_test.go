package fsm

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// outcome is one applied entry. Errors compare deeply: both members wrap the same sentinels
// with the same text.
type outcome struct {
	Result any
	Err    error
}

func applyBoth(t *testing.T, a, b *FSM, cmd *arbiterv1.Command) (outcome, outcome) {
	t.Helper()
	data, err := Encode(cmd)
	require.NoError(t, err)
	ra, ea := a.ApplyEntry(data)
	rb, eb := b.ApplyEntry(data)
	return outcome{ra, ea}, outcome{rb, eb}
}

func TestSnapshotRestore(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		a := New()
		runWorkload(t, a, seed, 1500)
		snap, err := a.Snapshot()
		require.NoError(t, err)

		b := New()
		register(t, b, 999, replica, "junk") // restore replaces whatever was there
		require.NoError(t, b.Restore(snap))
		require.Equal(t, dumpOf(a), dumpOf(b), "seed %d", seed)
		again, err := b.Snapshot()
		require.NoError(t, err)
		require.Equal(t, snap, again, "snapshot of a restored FSM is byte-identical")

		// The same next commands give the same results and states.
		w := newWorkload(seed + 100)
		for range 500 {
			cmd := w.step(a)
			oa, ob := applyBoth(t, a, b, cmd)
			require.Equal(t, oa, ob)
		}
		require.Equal(t, dumpOf(a), dumpOf(b), "seed %d", seed)
	}
}

func TestSnapshotEmpty(t *testing.T) {
	snap, err := New().Snapshot()
	require.NoError(t, err)
	f := New()
	require.NoError(t, f.Restore(snap))
	require.Equal(t, dumpOf(New()), dumpOf(f))
}

func TestRestoreRejectsInconsistent(t *testing.T) {
	base := New()
	for id := uint64(1); id <= 3; id++ {
		register(t, base, id, replica, "")
	}
	register(t, base, 10, channelctl, "")
	create(t, base, "room", 3)
	l := uint64(2)
	cas(t, base, ownerOf(t, base, "room"), &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1, LeaderNodeId: &l})
	create(t, base, "lobby", 2)
	good, err := base.Snapshot()
	require.NoError(t, err)

	for name, mut := range map[string]func(s *arbiterv1.Snapshot){
		"next group id 0":           func(s *arbiterv1.Snapshot) { s.NextGroupId = 0 },
		"group id not below next":   func(s *arbiterv1.Snapshot) { s.NextGroupId = 2 },
		"group id reused":           func(s *arbiterv1.Snapshot) { s.Channels[1].GroupId = s.Channels[0].GroupId },
		"wrong slot":                func(s *arbiterv1.Snapshot) { s.Channels[0].Slot = (s.Channels[0].Slot + 1) % NumSlots },
		"unknown replica":           func(s *arbiterv1.Snapshot) { s.Channels[0].ReplicaNodeIds[0] = 42 },
		"channelctl as replica":     func(s *arbiterv1.Snapshot) { s.Channels[0].ReplicaNodeIds[0] = 10 },
		"no replicas":               func(s *arbiterv1.Snapshot) { s.Channels[0].ReplicaNodeIds = nil },
		"leader outside":            func(s *arbiterv1.Snapshot) { s.Channels[1].LeaderNodeId = 10 },
		"epoch 0":                   func(s *arbiterv1.Snapshot) { s.Channels[0].Epoch = 0 },
		"bad channel state":         func(s *arbiterv1.Snapshot) { s.Channels[0].State = 0 },
		"bad channel id":            func(s *arbiterv1.Snapshot) { s.Channels[0].ChannelId = "a b" },
		"channels out of order":     func(s *arbiterv1.Snapshot) { s.Channels[0], s.Channels[1] = s.Channels[1], s.Channels[0] },
		"channel from the future":   func(s *arbiterv1.Snapshot) { s.Channels[0].Revision = s.Revision + 1 },
		"no create time":            func(s *arbiterv1.Snapshot) { s.Channels[0].CreateTime = nil },
		"load mismatch":             func(s *arbiterv1.Snapshot) { s.Nodes[0].Node.Load.Channels++ },
		"leader load mismatch":      func(s *arbiterv1.Snapshot) { s.Nodes[1].Node.Load.Leaders = 0 },
		"derived state mismatch":    func(s *arbiterv1.Snapshot) { s.Nodes[0].Draining = true },
		"bad liveness":              func(s *arbiterv1.Snapshot) { s.Nodes[0].Liveness = arbiterv1.NodeState_NODE_STATE_DRAINING },
		"bad role":                  func(s *arbiterv1.Snapshot) { s.Nodes[0].Node.Role = 0 },
		"incarnation 0":             func(s *arbiterv1.Snapshot) { s.Nodes[0].Node.Incarnation = 0 },
		"nodes out of order":        func(s *arbiterv1.Snapshot) { s.Nodes[0], s.Nodes[1] = s.Nodes[1], s.Nodes[0] },
		"node id 0":                 func(s *arbiterv1.Snapshot) { s.Nodes[0].Node.NodeId = 0 },
		"missing register time":     func(s *arbiterv1.Snapshot) { s.Nodes[0].RegisterTime = nil },
		"255 slots":                 func(s *arbiterv1.Snapshot) { s.Slots = s.Slots[1:] },
		"slot out of place":         func(s *arbiterv1.Snapshot) { s.Slots[3].Slot = 4 },
		"slot owned by a replica":   func(s *arbiterv1.Snapshot) { s.Slots[0].OwnerNodeId = 1 },
		"slot owned by nobody real": func(s *arbiterv1.Snapshot) { s.Slots[0].OwnerNodeId = 77 },
		"store of a non-replica": func(s *arbiterv1.Snapshot) {
			s.Channels[0].ReplicaStoreIds = map[uint64]uint64{s.Channels[0].ReplicaNodeIds[0]: 0x11, 10: 0x10}
		},
		"store id 0": func(s *arbiterv1.Snapshot) {
			s.Channels[0].ReplicaStoreIds = map[uint64]uint64{s.Channels[0].ReplicaNodeIds[0]: 0}
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := &arbiterv1.Snapshot{}
			require.NoError(t, proto.Unmarshal(good, s))
			mut(s)
			bad, err := proto.Marshal(s)
			require.NoError(t, err)
			f := New()
			register(t, f, 5, replica, "")
			requireUnchanged(t, f, func() {
				require.ErrorIs(t, f.Restore(bad), ErrInvalidSnapshot)
			})
		})
	}
	t.Run("garbage", func(t *testing.T) {
		f := New()
		require.ErrorIs(t, f.Restore([]byte{0xff, 0xff, 0xff}), ErrInvalidSnapshot)
	})
	t.Run("unmodified is fine", func(t *testing.T) {
		require.NoError(t, New().Restore(good))
	})
}

// Issue 12, item 3: node stores and channels' replica stores survive a snapshot, and the
// snapshot's bytes do not depend on map order.
func TestSnapshotKeepsStores(t *testing.T) {
	a := New()
	for id := uint64(1); id <= 4; id++ {
		registerStore(t, a, id, 0x1000*id)
	}
	registerStore(t, a, 5, 0) // a replica that names no store
	register(t, a, 100, channelctl, "")
	create(t, a, "room", 3)
	create(t, a, "lobby", 5)
	res := cas(t, a, 100, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1,
		ReplicaNodeIds: []uint64{1, 2, 4}, ReplicaStoreIds: map[uint64]uint64{4: 0x4444, 2: 0x2222}})
	require.True(t, res.Results[0].Succeeded, res.Results[0].Err)
	registerStore(t, a, 1, 0xf00d) // the disk of node 1 was replaced

	snap, err := a.Snapshot()
	require.NoError(t, err)
	for range 20 {
		again, err := a.Snapshot()
		require.NoError(t, err)
		require.Equal(t, snap, again, "equal states give equal bytes")
	}
	b := New()
	require.NoError(t, b.Restore(snap))
	require.Equal(t, dumpOf(a), dumpOf(b))

	stores := map[uint64]uint64{}
	for _, n := range b.Nodes() {
		stores[n.ID] = n.StoreID
	}
	require.Equal(t, map[uint64]uint64{1: 0xf00d, 2: 0x2000, 3: 0x3000, 4: 0x4000, 5: 0, 100: 0}, stores)
	room, _ := b.Channel("room")
	require.Equal(t, map[uint64]uint64{1: 0x1000, 2: 0x2222, 4: 0x4444}, room.ReplicaStoreIDs)
	lobby, _ := b.Channel("lobby")
	require.Equal(t, map[uint64]uint64{1: 0x1000, 2: 0x2000, 3: 0x3000, 4: 0x4000}, lobby.ReplicaStoreIDs)
}
