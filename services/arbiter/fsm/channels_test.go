package fsm

import (
	"fmt"
	"hash/fnv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

func TestValidChannelID(t *testing.T) {
	for id, want := range map[string]bool{
		"general":                    true,
		"a":                          true,
		"team-1_chat.room:42@eu":     true,
		"ABCxyz0189":                 true,
		strings.Repeat("x", 128):     true,
		"":                           false,
		strings.Repeat("x", 129):     false,
		"has space":                  false,
		"slash/inside":               false,
		"question?":                  false,
		"percent%20":                 false,
		"unicodé":                    false,
		"new\nline":                  false,
		"nul\x00":                    false,
		"tab\tin":                    false,
		"hash#":                      false,
		strings.Repeat("é", 64):      false,
		"emoji-\U0001F600":           false,
		"quote\"":                    false,
		"backslash\\":                false,
		"del\x7f":                    false,
		"high\xff":                   false,
		"ok.with.many.dots.and-dash": true,
	} {
		require.Equal(t, want, ValidChannelID(id), "%q", id)
	}
}

func TestSlotOfIsFNV1a32(t *testing.T) {
	for _, id := range []string{"", "a", "general", "team-1_chat.room:42@eu", strings.Repeat("z", 128)} {
		h := fnv.New32a()
		h.Write([]byte(id))
		require.Equal(t, h.Sum32()%NumSlots, SlotOf(id), "%q", id)
	}
	// Pinned values: the slot of a channel is part of the stored state and must never change.
	require.Equal(t, uint32(0x811c9dc5%256), SlotOf(""))
	require.Equal(t, uint32(0xe40c292c%256), SlotOf("a"))
}

// placementCluster registers replicas with the given zones (id = index+1) and gives each the
// given number of channels through single-replica channels pinned by load.
type placementNode struct {
	zone  string
	state arbiterv1.NodeState
	role  arbiterv1.NodeRole
	load  int
}

func placementFSM(t *testing.T, nodes []placementNode) *FSM {
	t.Helper()
	f := New()
	for i, n := range nodes {
		role := n.role
		if role == 0 {
			role = replica
		}
		register(t, f, uint64(i+1), role, n.zone)
	}
	// Load nodes one channel at a time: rf 1 always goes to the least loaded, so draining
	// the others aside lets us target one node.
	for i, n := range nodes {
		for j := range n.load {
			for k := range nodes {
				if k != i && nodes[k].role != channelctl {
					setState(t, f, uint64(k+1), suspect)
				}
			}
			create(t, f, fmt.Sprintf("load-%d-%d", i, j), 1)
			for k := range nodes {
				if k != i && nodes[k].role != channelctl {
					setState(t, f, uint64(k+1), alive)
				}
			}
		}
	}
	for i, n := range nodes {
		if n.state != 0 && n.state != alive {
			setState(t, f, uint64(i+1), n.state)
		}
	}
	return f
}

func TestCreateChannelPlacement(t *testing.T) {
	for name, tc := range map[string]struct {
		nodes []placementNode
		rf    uint32
		want  []uint64
	}{
		"least loaded, ties by id": {
			nodes: []placementNode{{load: 2}, {load: 0}, {load: 1}, {load: 0}},
			rf:    3, want: []uint64{2, 4, 3},
		},
		"all equal: lowest ids": {
			nodes: []placementNode{{}, {}, {}, {}, {}},
			rf:    3, want: []uint64{1, 2, 3},
		},
		"zones spread before load": {
			// Zone a holds the two least loaded nodes; the second replica must come from
			// zone b even though node 2 is lighter.
			nodes: []placementNode{{zone: "a"}, {zone: "a"}, {zone: "b", load: 3}, {zone: "c", load: 5}},
			rf:    3, want: []uint64{1, 3, 4},
		},
		"zones exhausted: fill least loaded": {
			nodes: []placementNode{{zone: "a", load: 1}, {zone: "a"}, {zone: "b", load: 2}, {zone: "b", load: 4}},
			rf:    3, want: []uint64{2, 3, 1},
		},
		"dead, suspect, draining and channelctl nodes get nothing": {
			nodes: []placementNode{{state: dead}, {state: suspect}, {state: draining}, {role: channelctl}, {load: 9}, {load: 3}},
			rf:    2, want: []uint64{6, 5},
		},
		"rf 1": {
			nodes: []placementNode{{load: 1}, {load: 1}, {}},
			rf:    1, want: []uint64{3},
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := placementFSM(t, tc.nodes)
			loads := map[uint64]uint64{}
			for _, n := range f.Nodes() {
				loads[n.ID] = n.Channels
			}
			res := create(t, f, "new", tc.rf)
			require.True(t, res.Created)
			require.Equal(t, tc.want, res.Channel.Replicas)
			for _, n := range f.Nodes() {
				want := loads[n.ID]
				for _, r := range tc.want {
					if r == n.ID {
						want++
					}
				}
				require.Equal(t, want, n.Channels, "load of node %d", n.ID)
			}
		})
	}
}

func TestCreateChannel(t *testing.T) {
	f := New()
	for id := uint64(1); id <= 3; id++ {
		register(t, f, id, replica, "")
	}
	res := create(t, f, "room", 3)
	require.True(t, res.Created)
	ch := res.Channel
	require.Equal(t, "room", ch.ID)
	require.Equal(t, uint64(1), ch.GroupID)
	require.Equal(t, SlotOf("room"), ch.Slot)
	require.Equal(t, []uint64{1, 2, 3}, ch.Replicas)
	require.Zero(t, ch.Leader)
	require.Equal(t, uint64(1), ch.Epoch)
	require.Equal(t, hibernated, ch.State)
	require.Equal(t, t0, ch.CreateTime)
	require.Equal(t, f.Revision(), ch.Revision)
	require.Equal(t, []uint64{2, 3}, f.Peers(1))

	// Creating it again returns it unchanged and writes nothing.
	requireUnchanged(t, f, func() {
		again := create(t, f, "room", 1)
		require.False(t, again.Created)
		require.Equal(t, ch, again.Channel)
	})

	// Group ids come from a counter and are never reused.
	require.Equal(t, uint64(2), create(t, f, "room2", 1).Channel.GroupID)
	require.Equal(t, uint64(3), create(t, f, "room3", 1).Channel.GroupID)
	c := f.Counts()
	require.Equal(t, uint64(3), c.Channels)
	require.Equal(t, map[arbiterv1.ChannelState]uint64{hibernated: 3}, c.ChannelsByState)
}

func TestCreateChannelRejected(t *testing.T) {
	for name, tc := range map[string]struct {
		cmd     *arbiterv1.Command
		wantErr error
	}{
		"rf above alive replicas": {CreateChannelCommand("room", 4, t0), ErrInsufficientReplicas},
		"rf 0":                    {CreateChannelCommand("room", 0, t0), ErrInvalidArgument},
		"empty id":                {CreateChannelCommand("", 1, t0), ErrInvalidChannelID},
		"id with space":           {CreateChannelCommand("a b", 1, t0), ErrInvalidChannelID},
		"id too long":             {CreateChannelCommand(strings.Repeat("x", 129), 1, t0), ErrInvalidChannelID},
		"missing time": {&arbiterv1.Command{Kind: &arbiterv1.Command_CreateChannel{CreateChannel: &arbiterv1.CreateChannelCommand{
			ChannelId: "room", ReplicationFactor: 1}}}, ErrInvalidCommand},
	} {
		t.Run(name, func(t *testing.T) {
			f := New()
			for id := uint64(1); id <= 4; id++ {
				register(t, f, id, replica, "")
			}
			setState(t, f, 4, dead) // 4 replica nodes, 3 alive
			register(t, f, 100, channelctl, "")
			requireUnchanged(t, f, func() {
				_, err := f.Apply(tc.cmd)
				require.ErrorIs(t, err, tc.wantErr)
			})
		})
	}
}

// casFixture: replicas 1-4 (4 dead), channelctls 100 and 101 splitting the slots, and channel
// "room" on 1,2,3 with leader 1 at term 2, epoch 2, last seq 10.
func casFixture(t *testing.T) (*FSM, uint64, uint64) {
	t.Helper()
	f := New()
	for id := uint64(1); id <= 5; id++ {
		register(t, f, id, replica, "")
	}
	register(t, f, 100, channelctl, "")
	register(t, f, 101, channelctl, "")
	ch := create(t, f, "room", 3).Channel
	require.Equal(t, []uint64{1, 2, 3}, ch.Replicas)
	setState(t, f, 4, dead)
	owner := ownerOf(t, f, "room")
	other := uint64(100)
	if owner == 100 {
		other = 101
	}
	l, term, seq := uint64(1), uint64(2), uint64(10)
	res := cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1, LeaderNodeId: &l, LeaderTerm: &term, LastSeq: &seq})
	require.True(t, res.Results[0].Succeeded, res.Results[0].Err)
	return f, owner, other
}

func ptr[T any](v T) *T { return &v }

func TestCompareAndSetRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		requester func(owner, other uint64) uint64
		change    *arbiterv1.ChannelChange
		wantErr   error
		wantText  string
	}{
		"unknown channel": {
			change: &arbiterv1.ChannelChange{ChannelId: "nope", ExpectedEpoch: 1}, wantErr: ErrUnknownChannel},
		"stale epoch": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1, LeaderNodeId: ptr[uint64](2)}, wantErr: ErrStaleEpoch, wantText: "epoch is 2, expected 1"},
		"future epoch": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 3}, wantErr: ErrStaleEpoch},
		"wrong slot owner": {
			requester: func(_, other uint64) uint64 { return other },
			change:    &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2}, wantErr: ErrNotSlotOwner},
		"requester 0": {
			requester: func(uint64, uint64) uint64 { return 0 },
			change:    &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2}, wantErr: ErrNotSlotOwner},
		"replica as requester": {
			requester: func(uint64, uint64) uint64 { return 1 },
			change:    &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2}, wantErr: ErrNotSlotOwner},
		"leader not in replica set": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, LeaderNodeId: ptr[uint64](5)}, wantErr: ErrInvalidChange, wantText: "not in the replica set"},
		"new replica set drops the leader": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, ReplicaNodeIds: []uint64{2, 3, 5}}, wantErr: ErrInvalidChange, wantText: "leader 1"},
		"leader term backwards": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, LeaderTerm: ptr[uint64](1)}, wantErr: ErrInvalidChange, wantText: "leader term 1"},
		"last seq backwards": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, LastSeq: ptr[uint64](9)}, wantErr: ErrInvalidChange, wantText: "last seq 9"},
		"unspecified state": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, State: ptr(arbiterv1.ChannelState_CHANNEL_STATE_UNSPECIFIED)}, wantErr: ErrInvalidChange},
		"bogus state": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, State: ptr(arbiterv1.ChannelState(99))}, wantErr: ErrInvalidChange},
		"unknown replica": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, ReplicaNodeIds: []uint64{1, 2, 77}}, wantErr: ErrUnknownNode},
		"channelctl as replica": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, ReplicaNodeIds: []uint64{1, 2, 100}}, wantErr: ErrInvalidChange, wantText: "not a replica"},
		"replica twice": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, ReplicaNodeIds: []uint64{1, 2, 2}}, wantErr: ErrInvalidChange, wantText: "twice"},
		"dead node added": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, ReplicaNodeIds: []uint64{1, 2, 4}}, wantErr: ErrInvalidChange, wantText: "cannot take channels"},
	} {
		t.Run(name, func(t *testing.T) {
			f, owner, other := casFixture(t)
			requester := owner
			if tc.requester != nil {
				requester = tc.requester(owner, other)
			}
			cur, _ := f.Channel(tc.change.GetChannelId())
			requireUnchanged(t, f, func() {
				res := cas(t, f, requester, tc.change)
				require.Len(t, res.Results, 1)
				r := res.Results[0]
				require.False(t, r.Succeeded)
				require.ErrorIs(t, r.Err, tc.wantErr)
				require.ErrorContains(t, r.Err, tc.wantText)
				require.Equal(t, tc.change.GetChannelId(), r.ChannelID)
				require.Equal(t, cur, r.Channel, "a refusal reports the current channel")
				p := r.Proto()
				require.False(t, p.GetSucceeded())
				require.NotEmpty(t, p.GetError())
			})
		})
	}
}

func TestCompareAndSetDeadLeaderRefused(t *testing.T) {
	f, owner, _ := casFixture(t)
	setState(t, f, 2, dead)
	requireUnchanged(t, f, func() {
		res := cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, LeaderNodeId: ptr[uint64](2)})
		require.ErrorIs(t, res.Results[0].Err, ErrInvalidChange)
		require.ErrorContains(t, res.Results[0].Err, "dead")
	})
}

func TestCompareAndSetApplied(t *testing.T) {
	type load struct{ channels, leaders uint64 }
	for name, tc := range map[string]struct {
		change    *arbiterv1.ChannelChange
		want      func(c *Channel)
		wantLoads map[uint64]load
		wantPeers map[uint64][]uint64
	}{
		"new leader and term": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, LeaderNodeId: ptr[uint64](2), LeaderTerm: ptr[uint64](3), State: ptr(active)},
			want: func(c *Channel) {
				c.Leader, c.LeaderTerm, c.State = 2, 3, active
			},
			wantLoads: map[uint64]load{1: {1, 0}, 2: {1, 1}, 3: {1, 0}, 5: {0, 0}},
		},
		"same term is allowed": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, LeaderTerm: ptr[uint64](2), LastSeq: ptr[uint64](10)},
			want:   func(*Channel) {},
		},
		"leader cleared for hibernation": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, LeaderNodeId: ptr[uint64](0), State: ptr(hibernated)},
			want: func(c *Channel) {
				c.Leader, c.State = 0, hibernated
			},
			wantLoads: map[uint64]load{1: {1, 0}, 2: {1, 0}, 3: {1, 0}},
		},
		"replica set repair moves load and peers": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, ReplicaNodeIds: []uint64{1, 2, 5}, LastSeq: ptr[uint64](20)},
			want: func(c *Channel) {
				c.Replicas, c.LastSeq = []uint64{1, 2, 5}, 20
			},
			wantLoads: map[uint64]load{1: {1, 1}, 2: {1, 0}, 3: {0, 0}, 5: {1, 0}},
			wantPeers: map[uint64][]uint64{1: {2, 5}, 3: {}, 5: {1, 2}},
		},
		"repair and new leader in one change": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, ReplicaNodeIds: []uint64{5, 2, 3}, LeaderNodeId: ptr[uint64](5), LeaderTerm: ptr[uint64](7)},
			want: func(c *Channel) {
				c.Replicas, c.Leader, c.LeaderTerm = []uint64{5, 2, 3}, 5, 7
			},
			wantLoads: map[uint64]load{1: {0, 0}, 5: {1, 1}},
		},
		"nothing set: the epoch still moves": {
			change: &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2},
			want:   func(*Channel) {},
		},
	} {
		t.Run(name, func(t *testing.T) {
			f, owner, _ := casFixture(t)
			want, _ := f.Channel("room")
			rev := f.Revision()
			res := cas(t, f, owner, tc.change)
			r := res.Results[0]
			require.True(t, r.Succeeded, r.Err)
			require.NoError(t, r.Err)
			tc.want(&want)
			want.Epoch, want.Revision = 3, rev+1
			require.Equal(t, want, r.Channel)
			got, _ := f.Channel("room")
			require.Equal(t, want, got)
			require.Equal(t, rev+1, res.Revision)
			for id, l := range tc.wantLoads {
				n, _ := f.Node(id)
				require.Equal(t, l, load{n.Channels, n.Leaders}, "load of node %d", id)
			}
			for id, peers := range tc.wantPeers {
				got := f.Peers(id)
				if len(peers) == 0 {
					require.Empty(t, got, "peers of %d", id)
				} else {
					require.Equal(t, peers, got, "peers of %d", id)
				}
			}
			batch, err := f.EventsSince(rev, Filter{Channels: true})
			require.NoError(t, err)
			require.Len(t, batch.Events, 1)
			require.Equal(t, want, batch.Events[0].Channel)
		})
	}
}

// A batch is a set of independent compare-and-sets: refusals do not stop the others, and two
// changes of one channel in one batch behave as if sent one after the other.
func TestCompareAndSetBatch(t *testing.T) {
	f, owner, other := casFixture(t)
	setState(t, f, other, dead) // the owner now owns every slot, so this is about batching
	create(t, f, "lobby", 3)
	require.Equal(t, owner, ownerOf(t, f, "lobby"))
	requester, lobbyEpoch := owner, uint64(1)
	rev := f.Revision()
	res := cas(t, f, requester,
		&arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, State: ptr(electing)},
		&arbiterv1.ChannelChange{ChannelId: "missing", ExpectedEpoch: 1},
		&arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 2, State: ptr(active)}, // stale: the first bumped it
		&arbiterv1.ChannelChange{ChannelId: "lobby", ExpectedEpoch: lobbyEpoch, State: ptr(activating)},
		&arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 3, State: ptr(active)},
	)
	var ok []bool
	for _, r := range res.Results {
		ok = append(ok, r.Succeeded)
	}
	require.Equal(t, []bool{true, false, false, true, true}, ok)
	require.ErrorIs(t, res.Results[1].Err, ErrUnknownChannel)
	require.ErrorIs(t, res.Results[2].Err, ErrStaleEpoch)
	require.Equal(t, rev+3, res.Revision, "one revision per accepted change")
	room, _ := f.Channel("room")
	require.Equal(t, uint64(4), room.Epoch)
	require.Equal(t, active, room.State)
	require.Equal(t, map[arbiterv1.ChannelState]uint64{active: 1, activating: 1}, f.Counts().ChannelsByState)
}

func TestListChannels(t *testing.T) {
	f := New()
	register(t, f, 1, replica, "")
	var all []string
	for i := range 300 {
		id := fmt.Sprintf("c%03d", i)
		all = append(all, id)
		create(t, f, id, 1)
	}
	// Pages over all slots, in id order, each id once.
	var got []string
	after := ""
	for {
		page, err := f.ListChannels(after, 7, nil)
		require.NoError(t, err)
		require.Equal(t, f.Revision(), page.Revision)
		for _, c := range page.Channels {
			got = append(got, c.ID)
		}
		if !page.More {
			break
		}
		require.Len(t, page.Channels, 7)
		after = page.Channels[len(page.Channels)-1].ID
	}
	require.Equal(t, all, got)

	// Restricted to some slots, with duplicates in the request.
	slots := []uint32{SlotOf("c007"), SlotOf("c123"), SlotOf("c007")}
	var want []string
	for _, id := range all {
		if s := SlotOf(id); s == slots[0] || s == slots[1] {
			want = append(want, id)
		}
	}
	page, err := f.ListChannels("", 1000, slots)
	require.NoError(t, err)
	require.False(t, page.More)
	got = got[:0]
	for _, c := range page.Channels {
		got = append(got, c.ID)
	}
	require.Equal(t, want, got)

	page, err = f.ListChannels("c299", 10, nil)
	require.NoError(t, err)
	require.Empty(t, page.Channels)
	require.False(t, page.More)

	_, err = f.ListChannels("", 0, nil)
	require.ErrorIs(t, err, ErrInvalidArgument)
	_, err = f.ListChannels("", 10, []uint32{256})
	require.ErrorIs(t, err, ErrInvalidArgument)
}

// Returned values are copies: changing them must not reach the state.
func TestReadsAreCopies(t *testing.T) {
	f := New()
	for id := uint64(1); id <= 3; id++ {
		register(t, f, id, replica, "")
	}
	create(t, f, "room", 3)
	before := dumpOf(f)
	c, _ := f.Channel("room")
	c.Replicas[0] = 99
	page, _ := f.ListChannels("", 10, nil)
	page.Channels[0].Replicas[1] = 99
	batch, _ := f.EventsSince(0, Filter{Channels: true})
	batch.Events[0].Channel.Replicas[2] = 99
	f.Slots()[0].Owner = 99
	require.Equal(t, before, dumpOf(f))
}

// Issue 12, item 3: a new channel records, for each replica, the store its group is created
// on: the store each chosen node registered last. Nodes that named no store get no entry.
func TestCreateChannelRecordsReplicaStores(t *testing.T) {
	for name, tc := range map[string]struct {
		stores []uint64 // store of replica node i+1
		rf     uint32
		want   map[uint64]uint64
	}{
		"every replica's store": {
			stores: []uint64{0x11, 0x22, 0x33}, rf: 3, want: map[uint64]uint64{1: 0x11, 2: 0x22, 3: 0x33}},
		"only the chosen replicas": {
			stores: []uint64{0x11, 0x22, 0x33, 0x44}, rf: 2, want: map[uint64]uint64{1: 0x11, 2: 0x22}},
		"replicas without a store are left out": {
			stores: []uint64{0x11, 0, 0x33}, rf: 3, want: map[uint64]uint64{1: 0x11, 3: 0x33}},
		"no store at all": {
			stores: []uint64{0, 0, 0}, rf: 3, want: nil},
	} {
		t.Run(name, func(t *testing.T) {
			f := New()
			for i, s := range tc.stores {
				registerStore(t, f, uint64(i+1), s)
			}
			res := create(t, f, "room", tc.rf)
			require.True(t, res.Created)
			require.Equal(t, tc.want, res.Channel.ReplicaStoreIDs)
			got, _ := f.Channel("room")
			require.Equal(t, tc.want, got.ReplicaStoreIDs)
			if tc.want == nil {
				require.Empty(t, got.Proto().GetReplicaStoreIds())
			} else {
				require.Equal(t, tc.want, got.Proto().GetReplicaStoreIds())
			}
			batch, err := f.EventsSince(f.Revision()-1, Filter{Channels: true})
			require.NoError(t, err)
			require.Equal(t, tc.want, batch.Events[0].Channel.ReplicaStoreIDs)
		})
	}

	// The record names where the group was created: a replica registering later with a new
	// store (a wiped disk) does not change it; only a compare-and-set does.
	t.Run("a later registration does not change it", func(t *testing.T) {
		f := New()
		registerStore(t, f, 1, 0x11)
		registerStore(t, f, 2, 0x22)
		create(t, f, "room", 2)
		registerStore(t, f, 2, 0x99)
		got, _ := f.Channel("room")
		require.Equal(t, map[uint64]uint64{1: 0x11, 2: 0x22}, got.ReplicaStoreIDs)
		again := create(t, f, "room", 2)
		require.False(t, again.Created)
		require.Equal(t, map[uint64]uint64{1: 0x11, 2: 0x22}, again.Channel.ReplicaStoreIDs)
	})
}

// storeFixture: replicas 1-5 with stores 0x101-0x105 (4 dead), channelctls 100 and 101, and
// channel "room" on 1,2,3 at epoch 1 without a leader, recording stores 0x101-0x103. It returns
// the owner of room's slot.
func storeFixture(t *testing.T) (*FSM, uint64) {
	t.Helper()
	f := New()
	for id := uint64(1); id <= 5; id++ {
		registerStore(t, f, id, 0x100+id)
	}
	register(t, f, 100, channelctl, "")
	register(t, f, 101, channelctl, "")
	ch := create(t, f, "room", 3).Channel
	require.Equal(t, []uint64{1, 2, 3}, ch.Replicas)
	require.Equal(t, map[uint64]uint64{1: 0x101, 2: 0x102, 3: 0x103}, ch.ReplicaStoreIDs)
	setState(t, f, 4, dead)
	return f, ownerOf(t, f, "room")
}

// Issue 12, item 3: a compare-and-set merges its store entries into the channel's, and a
// replica that leaves the set takes its entry with it.
func TestCompareAndSetReplicaStores(t *testing.T) {
	for name, tc := range map[string]struct {
		replicas []uint64
		stores   map[uint64]uint64
		want     map[uint64]uint64
	}{
		"repair names the added replica's store, the leaver's is dropped": {
			replicas: []uint64{1, 2, 5}, stores: map[uint64]uint64{5: 0x555},
			want: map[uint64]uint64{1: 0x101, 2: 0x102, 5: 0x555}},
		"repair without a store: the added replica has no entry": {
			replicas: []uint64{1, 2, 5},
			want:     map[uint64]uint64{1: 0x101, 2: 0x102}},
		"rejoin replaces a staying replica's store": {
			stores: map[uint64]uint64{2: 0x202},
			want:   map[uint64]uint64{1: 0x101, 2: 0x202, 3: 0x103}},
		"rejoin within a new replica set": {
			replicas: []uint64{5, 2, 3}, stores: map[uint64]uint64{2: 0x202, 5: 0x555},
			want: map[uint64]uint64{2: 0x202, 3: 0x103, 5: 0x555}},
		"shrinking drops the leavers": {
			replicas: []uint64{3},
			want:     map[uint64]uint64{3: 0x103}},
		"reordering keeps every entry": {
			replicas: []uint64{3, 1, 2},
			want:     map[uint64]uint64{1: 0x101, 2: 0x102, 3: 0x103}},
		"the same set again keeps every entry": {
			replicas: []uint64{1, 2, 3},
			want:     map[uint64]uint64{1: 0x101, 2: 0x102, 3: 0x103}},
		"nothing about replicas leaves the stores alone": {
			want: map[uint64]uint64{1: 0x101, 2: 0x102, 3: 0x103}},
		"the last entry leaving leaves none": {
			replicas: []uint64{5},
			want:     nil},
	} {
		t.Run(name, func(t *testing.T) {
			f, owner := storeFixture(t)
			rev := f.Revision()
			res := cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1,
				ReplicaNodeIds: tc.replicas, ReplicaStoreIds: tc.stores, State: ptr(electing)})
			r := res.Results[0]
			require.True(t, r.Succeeded, r.Err)
			require.Equal(t, tc.want, r.Channel.ReplicaStoreIDs)
			require.Equal(t, uint64(2), r.Channel.Epoch)
			got, _ := f.Channel("room")
			require.Equal(t, tc.want, got.ReplicaStoreIDs)
			if tc.want != nil {
				require.Equal(t, tc.want, got.Proto().GetReplicaStoreIds())
				require.Equal(t, tc.want, r.Proto().GetChannel().GetReplicaStoreIds())
			}
			batch, err := f.EventsSince(rev, Filter{Channels: true})
			require.NoError(t, err)
			require.Len(t, batch.Events, 1)
			require.Equal(t, tc.want, batch.Events[0].Channel.ReplicaStoreIDs)
		})
	}
}

// Issue 12, item 3: a store entry for a node outside the resulting replica set, or naming
// store 0, is an invalid change, refused without a trace like any other.
func TestCompareAndSetReplicaStoresRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		replicas []uint64
		stores   map[uint64]uint64
		wantText string
	}{
		"node outside the replica set": {
			stores: map[uint64]uint64{5: 0x555}, wantText: "store id for node 5, which is not in the replica set [1 2 3]"},
		"node leaving in the same change": {
			replicas: []uint64{1, 2, 5}, stores: map[uint64]uint64{3: 0x333, 5: 0x555}, wantText: "store id for node 3"},
		"unknown node": {
			stores: map[uint64]uint64{77: 0x777}, wantText: "store id for node 77"},
		"channelctl": {
			stores: map[uint64]uint64{100: 0x100}, wantText: "store id for node 100"},
		"store id 0": {
			stores: map[uint64]uint64{2: 0}, wantText: "store id 0 for replica 2"},
		"store id 0 for an added replica": {
			replicas: []uint64{1, 2, 5}, stores: map[uint64]uint64{5: 0}, wantText: "store id 0 for replica 5"},
		"one bad entry among good ones": {
			stores: map[uint64]uint64{1: 0x201, 2: 0x202, 3: 0}, wantText: "store id 0 for replica 3"},
	} {
		t.Run(name, func(t *testing.T) {
			f, owner := storeFixture(t)
			cur, _ := f.Channel("room")
			requireUnchanged(t, f, func() {
				res := cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1,
					ReplicaNodeIds: tc.replicas, ReplicaStoreIds: tc.stores})
				r := res.Results[0]
				require.False(t, r.Succeeded)
				require.ErrorIs(t, r.Err, ErrInvalidChange)
				require.ErrorContains(t, r.Err, tc.wantText)
				require.Equal(t, cur, r.Channel, "a refusal reports the current channel")
				require.Equal(t, arbiterv1.ChangeRefusal_CHANGE_REFUSAL_INVALID_CHANGE, r.Proto().GetRefusal())
			})
		})
	}
}

// Every member must refuse a change with several bad store entries with the same words, so
// the entries are checked in node order, not in map order: the lowest bad node is named.
func TestCompareAndSetStoreRefusalIsDeterministic(t *testing.T) {
	f, owner := storeFixture(t)
	for range 50 {
		stores := map[uint64]uint64{}
		for _, id := range []uint64{9, 3, 7, 5, 8, 6, 4} {
			stores[id] = 0
		}
		res := cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1, ReplicaStoreIds: stores})
		require.EqualError(t, res.Results[0].Err, `channel "room": invalid channel change: store id 0 for replica 3`)
	}
}

// Returned store maps are copies, and a change installs a new map rather than editing the
// one that earlier events and readers hold.
func TestReplicaStoresAreCopies(t *testing.T) {
	f, owner := storeFixture(t)
	created := map[uint64]uint64{1: 0x101, 2: 0x102, 3: 0x103}
	before := dumpOf(f)
	c, _ := f.Channel("room")
	c.ReplicaStoreIDs[1] = 99
	page, _ := f.ListChannels("", 10, nil)
	page.Channels[0].ReplicaStoreIDs[2] = 99
	batch, _ := f.EventsSince(0, Filter{Channels: true})
	batch.Events[0].Channel.ReplicaStoreIDs[3] = 99
	require.Equal(t, before, dumpOf(f))

	res := cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1, ReplicaStoreIds: map[uint64]uint64{1: 0x201}})
	require.True(t, res.Results[0].Succeeded, res.Results[0].Err)
	res.Results[0].Channel.ReplicaStoreIDs[2] = 99
	batch, _ = f.EventsSince(c.Revision-1, Filter{Channels: true})
	require.Len(t, batch.Events, 2)
	require.Equal(t, created, batch.Events[0].Channel.ReplicaStoreIDs, "the earlier event keeps the map it had")
	require.Equal(t, map[uint64]uint64{1: 0x201, 2: 0x102, 3: 0x103}, batch.Events[1].Channel.ReplicaStoreIDs)
}

// The channel cap (issue 17 item 3) rides in the entry: creating past it fails with
// ErrChannelLimit on every member alike, creating an existing channel still answers it, and a
// cap of 0 is none.
func TestCreateChannelCap(t *testing.T) {
	f := New()
	for id := uint64(1); id <= 3; id++ {
		register(t, f, id, replica, "")
	}
	for _, id := range []string{"a", "b"} {
		res := mustApply(t, f, CreateChannelCommandCapped(id, 3, t0, 2)).(CreateChannelResult)
		require.True(t, res.Created)
	}
	requireUnchanged(t, f, func() {
		_, err := f.Apply(CreateChannelCommandCapped("c", 3, t0, 2))
		require.ErrorIs(t, err, ErrChannelLimit)
	})
	res := mustApply(t, f, CreateChannelCommandCapped("a", 3, t0, 2)).(CreateChannelResult)
	require.False(t, res.Created, "an existing channel is no new one")
	require.True(t, mustApply(t, f, CreateChannelCommandCapped("c", 3, t0, 3)).(CreateChannelResult).Created)
	require.True(t, mustApply(t, f, CreateChannelCommand("d", 3, t0)).(CreateChannelResult).Created)
}
