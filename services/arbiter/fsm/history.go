package fsm

// history is a ring of the most recent events. Because every revision is exactly one event,
// the events it holds are revisions base+1 .. base+n with no gaps, and finding where to resume
// is arithmetic, not a search.
type history struct {
	buf   []Event
	start int // index in buf of revision base+1
	n     int
	base  uint64
}

func newHistory(size int, base uint64) history {
	return history{buf: make([]Event, size), base: base}
}

func (h *history) append(ev Event) {
	if len(h.buf) == 0 {
		h.base = ev.Revision
		return
	}
	if h.n == len(h.buf) {
		h.buf[h.start] = Event{} // let the evicted channel's slices go
		h.start = (h.start + 1) % len(h.buf)
		h.base++
		h.n--
	}
	h.buf[(h.start+h.n)%len(h.buf)] = ev
	h.n++
}

// Filter selects events for EventsSince. The zero Filter matches nothing.
type Filter struct {
	Channels bool
	Nodes    bool
	Slots    bool
	// ChannelSlots, when non-empty, restricts channel events to channels of these slots.
	ChannelSlots []uint32
	// Limit caps the number of events returned; 0 means no cap.
	Limit int
}

// EventBatch is the answer of EventsSince.
type EventBatch struct {
	// Events matching the filter, in revision order.
	Events []Event
	// Revision is the highest revision this batch covers, matching or not; resume after it.
	Revision uint64
}

// EventsSince returns the events after revision rev that match the filter. A watcher that is
// up to date (rev ≥ Revision(), for example one that reads from a lagging member) gets an empty
// batch with Revision = rev, so its cursor never goes back. A watcher older than the history
// gets a *CompactedError (errors.Is ErrCompacted) and must list again.
func (f *FSM) EventsSince(rev uint64, filter Filter) (EventBatch, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	h := &f.hist
	if rev < h.base {
		return EventBatch{}, &CompactedError{Requested: rev, Oldest: h.base}
	}
	batch := EventBatch{Revision: rev}
	if rev >= h.base+uint64(h.n) {
		return batch, nil
	}
	var slotSet [NumSlots]bool
	for _, s := range filter.ChannelSlots {
		if s < NumSlots {
			slotSet[s] = true
		}
	}
	for i := int(rev - h.base); i < h.n; i++ {
		if filter.Limit > 0 && len(batch.Events) >= filter.Limit {
			break
		}
		ev := h.buf[(h.start+i)%len(h.buf)]
		batch.Revision = ev.Revision
		switch ev.Kind {
		case EventChannel:
			if !filter.Channels || (len(filter.ChannelSlots) > 0 && !slotSet[ev.Channel.Slot]) {
				continue
			}
			ev.Channel = ev.Channel.clone()
		case EventNode:
			if !filter.Nodes {
				continue
			}
		case EventSlot:
			if !filter.Slots {
				continue
			}
		}
		batch.Events = append(batch.Events, ev)
	}
	return batch, nil
}
