package fsm

import (
	"bytes"
	"testing"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// fuzzBase is a small populated state for the fuzzers to mutate.
func fuzzBase(t testing.TB) *FSM {
	f := New(WithHistory(64))
	for id := uint64(1); id <= 4; id++ {
		register(t, f, id, replica, []string{"a", "b"}[id%2])
	}
	register(t, f, 100, channelctl, "")
	create(t, f, "room", 3)
	create(t, f, "lobby", 2)
	return f
}

func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, c := range []*arbiterv1.Command{
		RegisterNodeCommand(5, replica, addr(5), "c", t0),
		RegisterNodeCommand(1, replica, "10.9.9.9:1", "c", t0),
		SetNodeStateCommand(2, dead, "lease", t0),
		SetNodeStateCommand(100, draining, "op", t0),
		CreateChannelCommand("new", 3, t0),
		CreateChannelCommand("bad id", 3, t0),
		CompareAndSetChannelsCommand(100,
			&arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1, LeaderNodeId: ptr[uint64](1), LeaderTerm: ptr[uint64](2), State: ptr(active)},
			&arbiterv1.ChannelChange{ChannelId: "lobby", ExpectedEpoch: 1, ReplicaNodeIds: []uint64{3, 4}, LastSeq: ptr[uint64](5)}),
		RegisterNodeWithStoreCommand(3, replica, addr(3), "b", 0x5eed, t0),
		CompareAndSetChannelsCommand(100,
			&arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1, ReplicaNodeIds: []uint64{1, 2, 4}, ReplicaStoreIds: map[uint64]uint64{4: 0x44}},
			&arbiterv1.ChannelChange{ChannelId: "lobby", ExpectedEpoch: 1, ReplicaStoreIds: map[uint64]uint64{1: 0, 9: 0x99}}),
		CompareAndSetChannelsCommand(100,
			&arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1, NextReplicaNodeIds: []uint64{1, 2, 4}, LeaderNodeId: ptr[uint64](4)},
			&arbiterv1.ChannelChange{ChannelId: "lobby", ExpectedEpoch: 1, NextReplicaNodeIds: []uint64{3, 3}, ClearNextReplicas: true}),
	} {
		data, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, data)
	}
	return append(seeds, nil, []byte{0x12, 0x00}, []byte{0xff, 0xff, 0xff, 0xff}, []byte{0x2a, 0x03, 0x0a, 0x01, 0x00})
}

// Arbitrary entries never panic, and a refused entry leaves no trace: members that apply a
// corrupt or hostile entry must all stay where they were.
func FuzzApplyEntry(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := fuzzBase(t)
		before, err := m.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		rev := m.Revision()
		res, err := m.ApplyEntry(data)
		if err != nil {
			if res != nil {
				t.Fatalf("error %v with a result %v", err, res)
			}
			after, _ := m.Snapshot()
			if !bytes.Equal(before, after) || m.Revision() != rev {
				t.Fatalf("refused entry changed the state: %v", err)
			}
			return
		}
		// Whatever was accepted must still snapshot and restore to the same state.
		snap, err := m.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		g := New()
		if err := g.Restore(snap); err != nil {
			t.Fatalf("state after accepted entry does not restore: %v", err)
		}
	})
}

// Arbitrary snapshots never panic and a refused one leaves the state untouched.
func FuzzRestore(f *testing.F) {
	good, err := fuzzBase(f).Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		m := fuzzBase(t)
		before, _ := m.Snapshot()
		if err := m.Restore(data); err != nil {
			after, _ := m.Snapshot()
			if !bytes.Equal(before, after) {
				t.Fatal("refused snapshot changed the state")
			}
		}
	})
}
