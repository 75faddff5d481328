package fsm

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// minimalMoves is the fewest slot moves that can turn before into an even spread over
// owners: a slot can stay only with a remaining owner, at most up to that owner's quota, and
// the best quotas (q+1) go to the owners already holding most.
func minimalMoves(before []Slot, owners []uint64) int {
	if len(owners) == 0 {
		n := 0
		for _, s := range before {
			if s.Owner != 0 {
				n++
			}
		}
		return n
	}
	held := make([]int, 0, len(owners))
	for _, o := range owners {
		c := 0
		for _, s := range before {
			if s.Owner == o {
				c++
			}
		}
		held = append(held, c)
	}
	slices.Sort(held)
	slices.Reverse(held)
	q, extra := NumSlots/len(owners), NumSlots%len(owners)
	keep := 0
	for i, h := range held {
		quota := q
		if i < extra {
			quota++
		}
		keep += min(h, quota)
	}
	return NumSlots - keep
}

func TestSlotRebalancing(t *testing.T) {
	type step struct {
		name  string
		apply func(t *testing.T, f *FSM)
		// owners that must hold slots afterwards
		owners []uint64
		// moves, when not -1, is the exact number of slots that must change owner; the count
		// is always checked against minimalMoves.
		moves int
	}
	reg := func(id uint64) func(*testing.T, *FSM) {
		return func(t *testing.T, f *FSM) { register(t, f, id, channelctl, "") }
	}
	set := func(id uint64, s arbiterv1.NodeState) func(*testing.T, *FSM) {
		return func(t *testing.T, f *FSM) { setState(t, f, id, s) }
	}
	steps := []step{
		{"first channelctl takes all", reg(10), []uint64{10}, 256},
		{"replica joining moves nothing", func(t *testing.T, f *FSM) { register(t, f, 1, replica, "") }, []uint64{10}, 0},
		{"second takes half", reg(11), []uint64{10, 11}, 128},
		{"third: 86/85/85", reg(12), []uint64{10, 11, 12}, 85},
		{"fourth: 64 each", reg(13), []uint64{10, 11, 12, 13}, 64},
		{"suspect keeps its slots", set(11, suspect), []uint64{10, 11, 12, 13}, 0},
		{"suspect back alive: nothing moves", set(11, alive), []uint64{10, 11, 12, 13}, 0},
		{"dead: only its slots move", set(12, dead), []uint64{10, 11, 13}, 64},
		{"draining: only its slots move", set(13, draining), []uint64{10, 11}, -1},
		{"re-registration of the dead one", reg(12), []uint64{10, 11, 12}, 85},
		{"restart of a drained one ends the drain", reg(13), []uint64{10, 11, 12, 13}, 64},
		{"a restart of an owner moves nothing", reg(10), []uint64{10, 11, 12, 13}, 0},
		// 256 = 5×51 + 1: the extra slot must stay with one of the holders, not go to the
		// newcomer, even though the newcomer has the lowest id.
		{"fifth with the lowest id", reg(9), []uint64{9, 10, 11, 12, 13}, 51},
		{"and it dies again", set(9, dead), []uint64{10, 11, 12, 13}, 51},
		{"owners die one by one", set(10, dead), []uint64{11, 12, 13}, -1},
		{"...", set(12, dead), []uint64{11, 13}, -1},
		{"...", set(13, dead), []uint64{11}, -1},
		{"last one dead: slots fall to 0", set(11, dead), nil, 256},
		{"one back alive takes all", set(11, alive), []uint64{11}, 256},
	}
	f := New()
	for _, s := range steps {
		before := f.Slots()
		rev := f.Revision()
		s.apply(t, f)
		after := f.Slots()

		owned := map[uint64]int{}
		moved := 0
		for i, a := range after {
			require.Equal(t, uint32(i), a.Slot)
			owned[a.Owner]++
			if a.Owner != before[i].Owner {
				moved++
				require.Equal(t, before[i].Epoch+1, a.Epoch, "%s: slot %d moved, epoch must grow", s.name, i)
			} else {
				require.Equal(t, before[i].Epoch, a.Epoch, "%s: slot %d kept, epoch must not change", s.name, i)
			}
		}
		if len(s.owners) == 0 {
			require.Equal(t, map[uint64]int{0: NumSlots}, owned, s.name)
		} else {
			lo, hi := NumSlots, 0
			for _, o := range s.owners {
				lo, hi = min(lo, owned[o]), max(hi, owned[o])
			}
			require.Len(t, owned, len(s.owners), "%s: owners %v", s.name, owned)
			require.LessOrEqual(t, hi-lo, 1, "%s: uneven spread %v", s.name, owned)
		}
		require.Equal(t, minimalMoves(before, s.owners), moved, "%s: moves", s.name)
		if s.moves >= 0 {
			require.Equal(t, s.moves, moved, s.name)
		}

		// One slot event per moved slot, each with the slot after the move.
		batch, err := f.EventsSince(rev, Filter{Slots: true})
		require.NoError(t, err)
		require.Len(t, batch.Events, moved, s.name)
		for _, ev := range batch.Events {
			require.Equal(t, after[ev.Slot.Slot], ev.Slot)
		}
	}
}

// A CAS from the previous owner of a slot is refused once the slot moved: that is the fence
// that keeps two channelctls from deciding for one channel.
func TestSlotMoveFencesOldOwner(t *testing.T) {
	f := New()
	for id := uint64(1); id <= 3; id++ {
		register(t, f, id, replica, "")
	}
	register(t, f, 10, channelctl, "")
	create(t, f, "room", 3)
	require.Equal(t, uint64(10), ownerOf(t, f, "room"))
	register(t, f, 11, channelctl, "")
	owner := ownerOf(t, f, "room")
	old := uint64(10)
	if owner == 10 {
		setState(t, f, 10, dead)
		owner = ownerOf(t, f, "room")
	}
	require.Equal(t, uint64(11), owner)

	res := cas(t, f, old, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1, State: ptr(activating)})
	require.ErrorIs(t, res.Results[0].Err, ErrNotSlotOwner)
	res = cas(t, f, owner, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 1, State: ptr(activating)})
	require.True(t, res.Results[0].Succeeded)
}
