package fsm

import (
	"cmp"
	"slices"
)

// rebalanceSlots gives every slot to a channelctl that may own slots (registered, not dead,
// not draining), spread evenly (counts differ by at most one) while moving as few slots as
// possible: a slot stays with its owner unless the owner is gone or holds more than its quota.
// Every moved slot gets a new epoch and an event. With no channelctl left, slots fall to 0.
//
// Moves are minimal because quotas are q or q+1 (q = 256/n) and the q+1 quotas go to the
// owners holding the most slots already: every slot above an owner's quota and every slot of
// a departed owner must move, and nothing else does.
func (f *FSM) rebalanceSlots() {
	st := f.st
	var owners []uint64 // in id order
	for _, id := range st.nodeIDs {
		if st.nodes[id].ownsSlots() {
			owners = append(owners, id)
		}
	}

	newOwner := make([]uint64, NumSlots)
	if len(owners) > 0 {
		count := make(map[uint64]int, len(owners))
		for _, s := range st.slots {
			if n, ok := st.nodes[s.Owner]; ok && n.ownsSlots() {
				count[s.Owner]++
			}
		}
		byHeld := slices.Clone(owners)
		slices.SortStableFunc(byHeld, func(a, b uint64) int { return cmp.Compare(count[b], count[a]) })
		quota := make(map[uint64]int, len(owners))
		q, extra := NumSlots/len(owners), NumSlots%len(owners)
		for i, id := range byHeld {
			quota[id] = q
			if i < extra {
				quota[id]++
			}
		}
		// Keep what fits the quota; give up the highest-numbered slots beyond it.
		kept := make(map[uint64]int, len(owners))
		var free []uint32
		for s := range st.slots {
			o := st.slots[s].Owner
			if _, ok := quota[o]; ok && kept[o] < quota[o] {
				kept[o]++
				newOwner[s] = o
				continue
			}
			free = append(free, uint32(s))
		}
		// Hand out the freed slots in slot order to the owners below quota, in id order.
		next := 0
		for _, s := range free {
			for kept[owners[next]] >= quota[owners[next]] {
				next++
			}
			newOwner[s] = owners[next]
			kept[owners[next]]++
		}
	}
	for s := range st.slots {
		if st.slots[s].Owner == newOwner[s] {
			continue
		}
		st.slots[s].Owner = newOwner[s]
		st.slots[s].Epoch++
		f.emit(Event{Kind: EventSlot, Slot: st.slots[s]})
	}
}
