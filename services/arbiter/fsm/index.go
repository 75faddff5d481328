package fsm

import (
	"container/heap"
	"slices"
)

// slotIndex keeps channel ids sorted per slot. Channelctls list the channels of their own
// slots, so per-slot order makes that listing touch only those slots; a listing over several
// (or all) slots merges the sorted runs, so a page costs O(slots·log + page·log slots), not a
// sort of every channel. Inserting moves at most one slot's ids (1/256 of all).
type slotIndex [NumSlots][]string

func (x *slotIndex) insert(slot uint32, id string) {
	ids := x[slot]
	i, found := slices.BinarySearch(ids, id)
	if !found {
		x[slot] = slices.Insert(ids, i, id)
	}
}

// list returns up to limit ids greater than after, in order, from the given slots (all when
// slots is empty).
func (x *slotIndex) list(after string, limit int, slots []uint32) []string {
	var runs runHeap
	add := func(s uint32) {
		ids := x[s]
		i, found := slices.BinarySearch(ids, after)
		if found {
			i++
		}
		if i < len(ids) {
			runs = append(runs, ids[i:])
		}
	}
	if len(slots) == 0 {
		for s := range x {
			add(uint32(s))
		}
	} else {
		var seen [NumSlots]bool
		for _, s := range slots {
			if !seen[s] {
				seen[s] = true
				add(s)
			}
		}
	}
	heap.Init(&runs)
	out := make([]string, 0, min(limit, 1024))
	for len(out) < limit && len(runs) > 0 {
		out = append(out, runs[0][0])
		if runs[0] = runs[0][1:]; len(runs[0]) == 0 {
			heap.Pop(&runs)
		} else {
			heap.Fix(&runs, 0)
		}
	}
	return out
}

// runHeap is a min-heap of non-empty sorted runs keyed by their first id. Ids are unique
// across slots, so the order is total.
type runHeap [][]string

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return h[i][0] < h[j][0] }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(v any)        { *h = append(*h, v.([]string)) }
func (h *runHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}
