package fsm

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// runWorkload applies n workload steps (after the bootstrap) and returns every result's
// revision in order.
func runWorkload(t *testing.T, f *FSM, seed uint64, n int) []uint64 {
	t.Helper()
	w := newWorkload(seed)
	var revs []uint64
	for _, c := range w.bootstrap() {
		mustApply(t, f, c)
		revs = append(revs, f.Revision())
	}
	for range n {
		_, _ = f.Apply(w.step(f))
		revs = append(revs, f.Revision())
	}
	return revs
}

func TestRevisionsOnlyGrow(t *testing.T) {
	f := New()
	revs := runWorkload(t, f, 1, 2000)
	for i := 1; i < len(revs); i++ {
		require.GreaterOrEqual(t, revs[i], revs[i-1])
	}
	require.Greater(t, f.Revision(), uint64(2000), "the workload must mostly succeed to be a test")
}

// Every revision is exactly one event, so a watcher resuming after any revision gets every
// later revision exactly once, in order, whatever the page size.
func TestEventsSinceResumesExactly(t *testing.T) {
	f := New()
	runWorkload(t, f, 2, 1500)
	last := f.Revision()
	all := Filter{Channels: true, Nodes: true, Slots: true}

	for _, from := range []uint64{0, 1, 17, last / 2, last - 1, last} {
		for _, limit := range []int{0, 1, 7, 1000} {
			var seen []uint64
			cursor := from
			for {
				batch, err := f.EventsSince(cursor, Filter{Channels: true, Nodes: true, Slots: true, Limit: limit})
				require.NoError(t, err)
				for _, ev := range batch.Events {
					seen = append(seen, ev.Revision)
				}
				if batch.Revision == cursor {
					break
				}
				require.Greater(t, batch.Revision, cursor)
				cursor = batch.Revision
			}
			require.Len(t, seen, int(last-from), "from %d limit %d", from, limit)
			for i, r := range seen {
				require.Equal(t, from+uint64(i)+1, r, "from %d limit %d", from, limit)
			}
		}
	}

	// Up to date (or ahead, as against a lagging member): empty, cursor kept.
	for _, rev := range []uint64{last, last + 5, ^uint64(0)} {
		batch, err := f.EventsSince(rev, all)
		require.NoError(t, err)
		require.Empty(t, batch.Events)
		require.Equal(t, rev, batch.Revision)
	}
}

func TestEventsSinceFilters(t *testing.T) {
	f := New()
	runWorkload(t, f, 3, 500)
	slots := []uint32{SlotOf("ch-1"), SlotOf("ch-2")}
	for name, filter := range map[string]Filter{
		"nothing":        {},
		"channels":       {Channels: true},
		"nodes":          {Nodes: true},
		"slots":          {Slots: true},
		"channels of 2":  {Channels: true, ChannelSlots: slots},
		"nodes and more": {Nodes: true, Slots: true, ChannelSlots: slots},
	} {
		t.Run(name, func(t *testing.T) {
			everything, err := f.EventsSince(0, Filter{Channels: true, Nodes: true, Slots: true})
			require.NoError(t, err)
			var want []Event
			for _, ev := range everything.Events {
				switch ev.Kind {
				case EventChannel:
					if filter.Channels && (len(filter.ChannelSlots) == 0 || ev.Channel.Slot == slots[0] || ev.Channel.Slot == slots[1]) {
						want = append(want, ev)
					}
				case EventNode:
					if filter.Nodes {
						want = append(want, ev)
					}
				case EventSlot:
					if filter.Slots {
						want = append(want, ev)
					}
				}
			}
			got, err := f.EventsSince(0, filter)
			require.NoError(t, err)
			require.Equal(t, want, got.Events)
			require.Equal(t, f.Revision(), got.Revision, "a filtered batch still covers every revision")
		})
	}
}

func TestEventsSinceCompacted(t *testing.T) {
	f := New(WithHistory(50))
	runWorkload(t, f, 4, 300)
	last := f.Revision()
	require.Greater(t, last, uint64(100))
	oldest := last - 50

	_, err := f.EventsSince(oldest-1, Filter{Nodes: true})
	require.ErrorIs(t, err, ErrCompacted)
	var ce *CompactedError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, oldest, ce.Oldest)
	require.Equal(t, oldest-1, ce.Requested)
	require.ErrorContains(t, err, "list again")

	batch, err := f.EventsSince(oldest, Filter{Channels: true, Nodes: true, Slots: true})
	require.NoError(t, err)
	require.Len(t, batch.Events, 50)
	require.Equal(t, oldest+1, batch.Events[0].Revision)

	// After a restore the history starts at the snapshot's revision.
	snap, err := f.Snapshot()
	require.NoError(t, err)
	g := New()
	require.NoError(t, g.Restore(snap))
	_, err = g.EventsSince(last-1, Filter{Nodes: true})
	require.ErrorIs(t, err, ErrCompacted)
	batch, err = g.EventsSince(last, Filter{Nodes: true})
	require.NoError(t, err)
	require.Empty(t, batch.Events)
	register(t, g, 1, replica, "a")
	batch, err = g.EventsSince(last, Filter{Nodes: true})
	require.NoError(t, err)
	require.Len(t, batch.Events, 1)
	require.Equal(t, last+1, batch.Events[0].Revision)
}

func TestNoHistory(t *testing.T) {
	f := New(WithHistory(0))
	register(t, f, 1, replica, "")
	register(t, f, 2, replica, "")
	_, err := f.EventsSince(1, Filter{Nodes: true})
	require.ErrorIs(t, err, ErrCompacted)
	batch, err := f.EventsSince(2, Filter{Nodes: true})
	require.NoError(t, err)
	require.Empty(t, batch.Events)
}

func TestEventProto(t *testing.T) {
	f := New()
	for id := uint64(1); id <= 3; id++ {
		register(t, f, id, replica, "")
	}
	register(t, f, 9, channelctl, "")
	create(t, f, "room", 3)
	batch, err := f.EventsSince(0, Filter{Channels: true, Nodes: true, Slots: true})
	require.NoError(t, err)
	kinds := map[string]int{}
	for _, ev := range batch.Events {
		p := ev.Proto()
		require.Equal(t, ev.Revision, p.GetRevision())
		switch {
		case p.GetChannel() != nil:
			kinds["channel"]++
			require.Equal(t, "room", p.GetChannel().GetChannelId())
			require.Equal(t, []uint64{1, 2, 3}, p.GetChannel().GetReplicaNodeIds())
		case p.GetNode() != nil:
			kinds["node"]++
		case p.GetSlot() != nil:
			kinds["slot"]++
			require.Equal(t, uint64(9), p.GetSlot().GetOwnerNodeId())
		}
	}
	require.Equal(t, map[string]int{"channel": 1, "node": 4, "slot": 256}, kinds)
}
