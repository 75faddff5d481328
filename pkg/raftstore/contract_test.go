package raftstore

import (
	"errors"
	"io"
	"log"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The contract suite: every case runs against every implementation, the Badger one in several
// configurations that force its less common paths (reads from disk instead of the tail cache,
// updates split across transactions).

type impl struct {
	name string
	// open returns an empty store and a restart function that closes it cleanly and opens
	// it again on the same data (for Memory, which has no disk: the same store).
	open func(t *testing.T) (Store, func() Store)
}

// withMaxTxnOps makes Badger cut transactions after a few operations.
func withMaxTxnOps(n int) BadgerOption { return func(c *badgerConfig) { c.maxTxnOps = n } }

func badgerImpl(name string, opts ...BadgerOption) impl {
	return impl{name: name, open: func(t *testing.T) (Store, func() Store) {
		dir := t.TempDir()
		b, err := OpenBadger(dir, opts...)
		require.NoError(t, err)
		cur := b
		t.Cleanup(func() { _ = cur.Close() })
		return b, func() Store {
			require.NoError(t, cur.Close())
			nb, err := OpenBadger(dir, opts...)
			require.NoError(t, err)
			cur = nb
			return nb
		}
	}}
}

func impls() []impl {
	return []impl{
		{name: "memory", open: func(*testing.T) (Store, func() Store) {
			m := NewMemory()
			return m, func() Store { return m }
		}},
		badgerImpl("badger"),
		badgerImpl("badger-nocache", WithTailCache(0, 0)),
		badgerImpl("badger-smalltxn", WithTailCache(0, 0), withMaxTxnOps(8)),
	}
}

// harness is what a contract case gets: the store, and restart, which replaces it.
type harness struct {
	s       Store
	restart func()
}

type contractCase struct {
	name string
	run  func(t *testing.T, h *harness)
}

func TestContract(t *testing.T) {
	for _, im := range impls() {
		for _, c := range contractCases {
			t.Run(im.name+"/"+c.name, func(t *testing.T) {
				s, reopen := im.open(t)
				h := &harness{s: s}
				h.restart = func() { h.s = reopen() }
				c.run(t, h)
			})
		}
	}
}

var contractCases = []contractCase{
	{"empty store", func(t *testing.T, h *harness) {
		check := func() {
			l := open(t, h.s, 1)
			expectLog(t, h.s, 1, 1, 0)
			hs, cs, err := l.InitialState()
			require.NoError(t, err)
			require.True(t, raft.IsEmptyHardState(hs))
			require.NotNil(t, cs)
			require.Empty(t, cs.GetVoters())
			snap, err := l.Snapshot()
			require.NoError(t, err)
			require.NotNil(t, snap)
			require.True(t, raft.IsEmptySnap(snap))
			require.NotNil(t, snap.GetMetadata())
			_, err = l.Entries(1, 2, noLimit)
			require.ErrorIs(t, err, raft.ErrUnavailable)
			groups, err := h.s.Groups()
			require.NoError(t, err)
			require.Empty(t, groups, "opening a group stores nothing")
		}
		check()
		h.restart()
		check()
	}},

	{"append and read back", func(t *testing.T, h *harness) {
		save(t, h.s, Update{GroupID: 1, HardState: hs(1, 1, 0), Entries: ents(1, 1, 10, 1)})
		expectLog(t, h.s, 1, 1, 0, span{1, 10, 1})
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 11, 12, 1)})
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 13, 13, 2)})
		expectLog(t, h.s, 1, 1, 0, span{1, 12, 1}, span{13, 13, 2})
		h.restart()
		expectLog(t, h.s, 1, 1, 0, span{1, 12, 1}, span{13, 13, 2})
		groups, err := h.s.Groups()
		require.NoError(t, err)
		require.Equal(t, []uint64{1}, groups)
	}},

	{"entries max size", func(t *testing.T, h *harness) {
		mk := func(i uint64, n int) *raftpb.Entry {
			return &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1), Data: make([]byte, n)}
		}
		var all []*raftpb.Entry
		for i := uint64(1); i <= 5; i++ {
			all = append(all, mk(i, 100))
		}
		all = append(all, mk(6, 10_000))
		save(t, h.s, Update{GroupID: 1, Entries: all[:3]})
		save(t, h.s, Update{GroupID: 1, Entries: all[3:]})
		sz := uint64(proto.Size(all[0]))
		check := func() {
			l := open(t, h.s, 1)
			for _, c := range []struct{ max, want uint64 }{
				{0, 1}, {sz, 1}, {2*sz - 1, 1}, {2 * sz, 2}, {3*sz - 1, 2}, {3 * sz, 3}, {4 * sz, 4}, {noLimit, 5},
			} {
				got, err := l.Entries(1, 6, c.max)
				require.NoError(t, err)
				requireEntries(t, all[:c.want], got)
			}
			// One entry bigger than the limit still comes back alone.
			got, err := l.Entries(6, 7, 10)
			require.NoError(t, err)
			requireEntries(t, all[5:6], got)
			got, err = l.Entries(5, 7, sz+1)
			require.NoError(t, err)
			requireEntries(t, all[4:5], got)
		}
		check()
		h.restart()
		check()
	}},

	{"compact keeps the term before the first index", func(t *testing.T, h *harness) {
		save(t, h.s, Update{GroupID: 1, HardState: hs(3, 1, 10), Entries: ents(1, 1, 3, 1)})
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 4, 6, 2)})
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 7, 10, 3)})
		require.NoError(t, h.s.Compact(1, 5))
		expectLog(t, h.s, 1, 5, 2, span{5, 6, 2}, span{7, 10, 3})
		require.ErrorIs(t, h.s.Compact(1, 5), raft.ErrCompacted)
		require.ErrorIs(t, h.s.Compact(1, 3), raft.ErrCompacted)
		require.Error(t, h.s.Compact(1, 12), "beyond last index + 1")
		require.NoError(t, h.s.Compact(1, 7))
		expectLog(t, h.s, 1, 7, 2, span{7, 10, 3})
		expectHardState(t, h.s, 1, 3, 1, 10)
		h.restart()
		expectLog(t, h.s, 1, 7, 2, span{7, 10, 3})
		// Up to the last entry, which stays.
		require.NoError(t, h.s.Compact(1, 10))
		expectLog(t, h.s, 1, 10, 3, span{10, 10, 3})
		// Everything: the log is empty but still knows the last term.
		require.NoError(t, h.s.Compact(1, 11))
		expectLog(t, h.s, 1, 11, 3)
		h.restart()
		expectLog(t, h.s, 1, 11, 3)
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 11, 12, 3)})
		expectLog(t, h.s, 1, 11, 3, span{11, 12, 3})
		expectHardState(t, h.s, 1, 3, 1, 10)
	}},

	{"out of range errors", func(t *testing.T, h *harness) {
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 1, 5, 1)})
		l := open(t, h.s, 1)
		_, err := l.Term(6)
		require.ErrorIs(t, err, raft.ErrUnavailable)
		_, err = l.Entries(1, 7, noLimit)
		require.ErrorIs(t, err, raft.ErrUnavailable)
		_, err = l.Entries(6, 7, noLimit)
		require.ErrorIs(t, err, raft.ErrUnavailable)
		require.NoError(t, h.s.Compact(1, 3))
		_, err = l.Entries(2, 4, noLimit)
		require.ErrorIs(t, err, raft.ErrCompacted)
		_, err = l.Term(1)
		require.ErrorIs(t, err, raft.ErrCompacted)
		term, err := l.Term(2)
		require.NoError(t, err)
		require.Equal(t, uint64(1), term)
	}},

	{"divergent tail is truncated", func(t *testing.T, h *harness) {
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 1, 10, 1)})
		save(t, h.s, Update{GroupID: 1, HardState: hs(2, 0, 0), Entries: ents(1, 6, 8, 2)})
		expectLog(t, h.s, 1, 1, 0, span{1, 5, 1}, span{6, 8, 2})
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 9, 9, 2)})
		expectLog(t, h.s, 1, 1, 0, span{1, 5, 1}, span{6, 9, 2})
		h.restart()
		expectLog(t, h.s, 1, 1, 0, span{1, 5, 1}, span{6, 9, 2})
	}},

	{"truncation across run boundaries", func(t *testing.T, h *harness) {
		for i := uint64(1); i <= 12; i += 3 {
			save(t, h.s, Update{GroupID: 1, Entries: ents(1, i, i+2, 1)})
		}
		// Inside the second run; the third and fourth go.
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 5, 7, 2)})
		expectLog(t, h.s, 1, 1, 0, span{1, 4, 1}, span{5, 7, 2})
		// Inside the run just written.
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 7, 8, 3)})
		expectLog(t, h.s, 1, 1, 0, span{1, 4, 1}, span{5, 6, 2}, span{7, 8, 3})
		h.restart()
		expectLog(t, h.s, 1, 1, 0, span{1, 4, 1}, span{5, 6, 2}, span{7, 8, 3})
		// Inside the first run.
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 2, 2, 4)})
		expectLog(t, h.s, 1, 1, 0, span{1, 1, 1}, span{2, 2, 4})
		// The whole log.
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 1, 3, 5)})
		expectLog(t, h.s, 1, 1, 0, span{1, 3, 5})
		// Exactly at a run boundary.
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 4, 6, 5)})
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 7, 9, 5)})
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 4, 5, 6)})
		expectLog(t, h.s, 1, 1, 0, span{1, 3, 5}, span{4, 5, 6})
		h.restart()
		expectLog(t, h.s, 1, 1, 0, span{1, 3, 5}, span{4, 5, 6})
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 6, 7, 6)})
		expectLog(t, h.s, 1, 1, 0, span{1, 3, 5}, span{4, 7, 6})
		// Many small runs after the cut point (more than one small transaction holds).
		for i := uint64(8); i <= 20; i++ {
			save(t, h.s, Update{GroupID: 1, Entries: ents(1, i, i, 6)})
		}
		save(t, h.s, Update{GroupID: 1, HardState: hs(7, 0, 0), Entries: ents(1, 5, 6, 7)})
		expectLog(t, h.s, 1, 1, 0, span{1, 3, 5}, span{4, 4, 6}, span{5, 6, 7})
		expectHardState(t, h.s, 1, 7, 0, 0)
		h.restart()
		expectLog(t, h.s, 1, 1, 0, span{1, 3, 5}, span{4, 4, 6}, span{5, 6, 7})
		expectHardState(t, h.s, 1, 7, 0, 0)
	}},

	{"truncation after compaction", func(t *testing.T, h *harness) {
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 1, 10, 1)})
		require.NoError(t, h.s.Compact(1, 6))
		// Entries below the first index are already covered and are dropped.
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 4, 12, 2)})
		expectLog(t, h.s, 1, 6, 1, span{6, 12, 2})
		h.restart()
		expectLog(t, h.s, 1, 6, 1, span{6, 12, 2})
		require.NoError(t, h.s.Compact(1, 8))
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 8, 9, 3)})
		expectLog(t, h.s, 1, 8, 2, span{8, 9, 3})
		h.restart()
		expectLog(t, h.s, 1, 8, 2, span{8, 9, 3})
	}},

	{"hard state round trip", func(t *testing.T, h *harness) {
		save(t, h.s, Update{GroupID: 1, HardState: hs(3, 2, 5), Entries: ents(1, 1, 5, 3)})
		expectHardState(t, h.s, 1, 3, 2, 5)
		// Commit alone moves.
		save(t, h.s, Update{GroupID: 1, HardState: hs(3, 2, 7), Entries: ents(1, 6, 7, 3)})
		expectHardState(t, h.s, 1, 3, 2, 7)
		h.restart()
		expectHardState(t, h.s, 1, 3, 2, 7)
		save(t, h.s, Update{GroupID: 1, HardState: hs(4, 0, 7)})
		expectHardState(t, h.s, 1, 4, 0, 7)
		save(t, h.s, Update{GroupID: 1, HardState: hs(4, 3, 7)})
		h.restart()
		expectHardState(t, h.s, 1, 4, 3, 7)
		expectLog(t, h.s, 1, 1, 0, span{1, 7, 3})
	}},

	{"snapshot replaces the log", func(t *testing.T, h *harness) {
		save(t, h.s, Update{GroupID: 1, HardState: hs(1, 0, 3), Entries: ents(1, 1, 10, 1)})
		snap := snapshot(20, 4, []uint64{1, 2, 3}, "state at 20")
		snap.Metadata.ConfState.Learners = []uint64{4}
		save(t, h.s, Update{GroupID: 1, HardState: hs(4, 0, 20), Snapshot: snap})
		check := func(last uint64) {
			l := open(t, h.s, 1)
			got, err := l.Snapshot()
			require.NoError(t, err)
			require.Equal(t, uint64(20), got.GetMetadata().GetIndex())
			require.Equal(t, uint64(4), got.GetMetadata().GetTerm())
			require.Equal(t, []uint64{1, 2, 3}, got.GetMetadata().GetConfState().GetVoters())
			require.Equal(t, []uint64{4}, got.GetMetadata().GetConfState().GetLearners())
			require.Equal(t, "state at 20", string(got.GetData()))
			_, cs, err := l.InitialState()
			require.NoError(t, err)
			require.Equal(t, []uint64{1, 2, 3}, cs.GetVoters())
			require.Equal(t, []uint64{4}, cs.GetLearners())
			if last == 20 {
				expectLog(t, h.s, 1, 21, 4)
			} else {
				expectLog(t, h.s, 1, 21, 4, span{21, last, 4})
			}
			expectHardState(t, h.s, 1, 4, 0, 20)
		}
		check(20)
		h.restart()
		check(20)
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 21, 22, 4)})
		check(22)
		// An older snapshot is refused and changes nothing.
		err := h.s.Save([]Update{{GroupID: 1, Snapshot: snapshot(15, 4, []uint64{1}, "old")}})
		require.ErrorIs(t, err, raft.ErrSnapOutOfDate)
		check(22)
		h.restart()
		check(22)
		// Snapshot and entries in one update.
		save(t, h.s, Update{GroupID: 1, HardState: hs(5, 0, 30), Snapshot: snapshot(30, 5, []uint64{1, 2}, "30"), Entries: ents(1, 31, 33, 5)})
		expectLog(t, h.s, 1, 31, 5, span{31, 33, 5})
		h.restart()
		expectLog(t, h.s, 1, 31, 5, span{31, 33, 5})
	}},

	{"snapshot inside the log drops the rest", func(t *testing.T, h *harness) {
		for i := uint64(1); i <= 30; i += 5 {
			save(t, h.s, Update{GroupID: 1, Entries: ents(1, i, i+4, 1)})
		}
		save(t, h.s, Update{GroupID: 1, Snapshot: snapshot(17, 1, []uint64{1}, "")})
		expectLog(t, h.s, 1, 18, 1)
		h.restart()
		expectLog(t, h.s, 1, 18, 1)
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 18, 19, 2)})
		expectLog(t, h.s, 1, 18, 1, span{18, 19, 2})
	}},

	{"save snapshot keeps the log", func(t *testing.T, h *harness) {
		save(t, h.s, Update{GroupID: 1, HardState: hs(2, 1, 8), Entries: ents(1, 1, 5, 1)})
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 6, 10, 2)})
		snap := snapshot(7, 2, []uint64{1, 2}, "state at 7")
		snap.Metadata.ConfState.Learners = []uint64{3}
		require.NoError(t, h.s.SaveSnapshot(1, snap))
		snap.Data[0] = 'X' // the store keeps its own copy
		check := func(first, prevTerm uint64, spans ...span) {
			t.Helper()
			expectLog(t, h.s, 1, first, prevTerm, spans...)
			expectHardState(t, h.s, 1, 2, 1, 8)
			l := open(t, h.s, 1)
			got, err := l.Snapshot()
			require.NoError(t, err)
			require.Equal(t, uint64(7), got.GetMetadata().GetIndex())
			require.Equal(t, uint64(2), got.GetMetadata().GetTerm())
			require.Equal(t, "state at 7", string(got.GetData()))
			_, cs, err := l.InitialState()
			require.NoError(t, err)
			require.Equal(t, []uint64{1, 2}, cs.GetVoters())
			require.Equal(t, []uint64{3}, cs.GetLearners())
		}
		check(1, 0, span{1, 5, 1}, span{6, 10, 2})
		h.restart()
		check(1, 0, span{1, 5, 1}, span{6, 10, 2})

		// Compacting up to the snapshot keeps it; raft reads the snapshot's term there.
		require.NoError(t, h.s.Compact(1, 6))
		check(6, 1, span{6, 10, 2})
		h.restart()
		check(6, 1, span{6, 10, 2})

		for _, bad := range []*raftpb.Snapshot{
			snapshot(7, 2, []uint64{1}, "not newer"),
			snapshot(6, 2, []uint64{1}, "older"),
		} {
			require.ErrorIs(t, h.s.SaveSnapshot(1, bad), raft.ErrSnapOutOfDate)
		}
		require.Error(t, h.s.SaveSnapshot(1, snapshot(11, 2, []uint64{1}, "beyond the last index")))
		require.Error(t, h.s.SaveSnapshot(1, snapshot(9, 3, []uint64{1}, "wrong term")))
		check(6, 1, span{6, 10, 2})

		// The whole log, then a snapshot at the compaction point.
		require.NoError(t, h.s.SaveSnapshot(1, snapshot(10, 2, []uint64{1, 2}, "state at 10")))
		require.NoError(t, h.s.Compact(1, 11))
		expectLog(t, h.s, 1, 11, 2)
		// An installed snapshot must be newer than the saved one.
		err := h.s.Save([]Update{{GroupID: 1, Snapshot: snapshot(10, 2, []uint64{1}, "stale install")}})
		require.ErrorIs(t, err, raft.ErrSnapOutOfDate)
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 11, 12, 3)})
		require.Error(t, h.s.SaveSnapshot(1, snapshot(10, 2, []uint64{1}, "")), "at the old compaction point")
		save(t, h.s, Update{GroupID: 1, HardState: hs(4, 0, 20), Snapshot: snapshot(20, 4, []uint64{1, 2, 3}, "installed")})
		h.restart()
		expectLog(t, h.s, 1, 21, 4)
		got, err := open(t, h.s, 1).Snapshot()
		require.NoError(t, err)
		require.Equal(t, "installed", string(got.GetData()))
	}},

	{"configuration records", func(t *testing.T, h *harness) {
		expectConf := func(index uint64, voters, learners []uint64) {
			t.Helper()
			i, cs, err := h.s.ConfState(1)
			require.NoError(t, err)
			require.Equal(t, index, i, "configuration index")
			require.Equal(t, voters, cs.GetVoters())
			require.Equal(t, learners, cs.GetLearners())
			require.NotNil(t, cs.AutoLeave, "raft needs every field set")
		}
		expectConf(0, nil, nil)
		boot := snapshot(1, 1, []uint64{1, 2, 3}, "")
		boot.Data = nil
		save(t, h.s, Update{GroupID: 1, HardState: hs(1, 0, 1), Snapshot: boot})
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 2, 9, 1)})
		expectConf(1, []uint64{1, 2, 3}, nil)

		cs := &raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}
		require.NoError(t, h.s.SaveConfState(1, 5, cs))
		cs.Voters[0] = 99 // the store keeps its own copy
		expectConf(5, []uint64{1, 2, 3}, []uint64{4})
		// Records only move forward.
		require.NoError(t, h.s.SaveConfState(1, 4, &raftpb.ConfState{Voters: []uint64{1}}))
		require.NoError(t, h.s.SaveConfState(1, 5, &raftpb.ConfState{Voters: []uint64{1}}))
		expectConf(5, []uint64{1, 2, 3}, []uint64{4})
		// InitialState stays the snapshot's: raft replays from the snapshot.
		_, ics, err := open(t, h.s, 1).InitialState()
		require.NoError(t, err)
		require.Equal(t, []uint64{1, 2, 3}, ics.GetVoters())
		require.Empty(t, ics.GetLearners())
		h.s.Release(1)
		h.restart()
		expectConf(5, []uint64{1, 2, 3}, []uint64{4})

		// A snapshot at the record's index or later is newer.
		require.NoError(t, h.s.SaveSnapshot(1, snapshot(5, 1, []uint64{1, 2, 4}, "")))
		expectConf(5, []uint64{1, 2, 4}, nil)
		require.NoError(t, h.s.SaveConfState(1, 8, &raftpb.ConfState{Voters: []uint64{1, 2, 4}, Learners: []uint64{5}}))
		expectConf(8, []uint64{1, 2, 4}, []uint64{5})
		h.restart()
		expectConf(8, []uint64{1, 2, 4}, []uint64{5})

		require.NoError(t, h.s.Delete(1))
		expectConf(0, nil, nil)
		h.restart()
		expectConf(0, nil, nil)
		groups, err := h.s.Groups()
		require.NoError(t, err)
		require.Empty(t, groups)
	}},

	{"many groups in one save are independent", func(t *testing.T, h *harness) {
		var us []Update
		for g := uint64(1); g <= 50; g++ {
			us = append(us, Update{GroupID: g, HardState: hs(g, g, 1), Entries: ents(g, 1, g%7+1, g)})
		}
		save(t, h.s, us...)
		save(t, h.s,
			Update{GroupID: 3, HardState: hs(100, 3, 1), Entries: ents(3, 2, 3, 100)},
			Update{GroupID: 4, Entries: ents(4, 6, 6, 4)},
		)
		check := func() {
			for g := uint64(1); g <= 50; g++ {
				switch g {
				case 3:
					expectLog(t, h.s, g, 1, 0, span{1, 1, 3}, span{2, 3, 100})
					expectHardState(t, h.s, g, 100, 3, 1)
				case 4:
					expectLog(t, h.s, g, 1, 0, span{1, 6, 4})
					expectHardState(t, h.s, g, 4, 4, 1)
				default:
					expectLog(t, h.s, g, 1, 0, span{1, g%7 + 1, g})
					expectHardState(t, h.s, g, g, g, 1)
				}
			}
			groups, err := h.s.Groups()
			require.NoError(t, err)
			require.Len(t, groups, 50)
			require.True(t, slices.IsSorted(groups))
			require.Equal(t, uint64(1), groups[0])
			require.Equal(t, uint64(50), groups[49])
		}
		check()
		h.restart()
		check()
	}},

	{"one group twice in a save", func(t *testing.T, h *harness) {
		save(t, h.s,
			Update{GroupID: 1, HardState: hs(1, 0, 0), Entries: ents(1, 1, 5, 1)},
			Update{GroupID: 2, Entries: ents(2, 1, 1, 1)},
			Update{GroupID: 1, HardState: hs(2, 0, 3), Entries: ents(1, 4, 6, 2)},
		)
		expectLog(t, h.s, 1, 1, 0, span{1, 3, 1}, span{4, 6, 2})
		expectHardState(t, h.s, 1, 2, 0, 3)
		expectLog(t, h.s, 2, 1, 0, span{1, 1, 1})
		h.restart()
		expectLog(t, h.s, 1, 1, 0, span{1, 3, 1}, span{4, 6, 2})
	}},

	{"returned and saved slices do not alias the store", func(t *testing.T, h *harness) {
		in := ents(1, 1, 10, 1)
		save(t, h.s, Update{GroupID: 1, Entries: in})
		// The caller reuses its slice after Save.
		for i := range in {
			in[i] = ent(1, 99, 99)
		}
		l := open(t, h.s, 1)
		got, err := l.Entries(1, 5, noLimit)
		require.NoError(t, err)
		require.Len(t, got, 4)
		got = append(got, ent(1, 99, 99))
		got[0] = ent(1, 98, 98)
		_ = got
		expectLog(t, h.s, 1, 1, 0, span{1, 10, 1})
		again, err := l.Entries(5, 6, noLimit)
		require.NoError(t, err)
		requireEntries(t, ents(1, 5, 5, 1), again)
	}},

	{"release then open reloads everything", func(t *testing.T, h *harness) {
		save(t, h.s,
			Update{GroupID: 1, HardState: hs(2, 1, 6), Entries: ents(1, 1, 8, 2)},
			Update{GroupID: 2, HardState: hs(3, 2, 12), Snapshot: snapshot(10, 3, []uint64{1, 2, 3}, "s")},
		)
		save(t, h.s, Update{GroupID: 2, HardState: hs(3, 2, 12), Entries: ents(2, 11, 12, 3)})
		require.NoError(t, h.s.Compact(1, 4))
		check := func() {
			expectLog(t, h.s, 1, 4, 2, span{4, 8, 2})
			expectHardState(t, h.s, 1, 2, 1, 6)
			expectLog(t, h.s, 2, 11, 3, span{11, 12, 3})
			expectHardState(t, h.s, 2, 3, 2, 12)
			_, cs, err := open(t, h.s, 2).InitialState()
			require.NoError(t, err)
			require.Equal(t, []uint64{1, 2, 3}, cs.GetVoters())
		}
		check()
		h.s.Release(1)
		h.s.Release(2)
		check()
		h.s.Release(1)
		h.s.Release(2)
		h.restart()
		check()
	}},

	{"delete removes a group", func(t *testing.T, h *harness) {
		for g := uint64(1); g <= 3; g++ {
			save(t, h.s, Update{GroupID: g, HardState: hs(g, 0, 1), Entries: ents(g, 1, 4, g)})
			save(t, h.s, Update{GroupID: g, Entries: ents(g, 5, 6, g)})
		}
		// Group 4 has many runs: more than one small transaction deletes.
		for i := uint64(1); i <= 20; i++ {
			save(t, h.s, Update{GroupID: 4, Entries: ents(4, i, i, 1)})
		}
		require.NoError(t, h.s.Delete(4))
		save(t, h.s, Update{GroupID: 2, Snapshot: snapshot(10, 2, []uint64{1}, "x")})
		open(t, h.s, 2)
		require.NoError(t, h.s.Delete(2))
		check := func() {
			groups, err := h.s.Groups()
			require.NoError(t, err)
			require.Equal(t, []uint64{1, 3}, groups)
			expectLog(t, h.s, 2, 1, 0)
			hs, cs, err := open(t, h.s, 2).InitialState()
			require.NoError(t, err)
			require.True(t, raft.IsEmptyHardState(hs))
			require.Empty(t, cs.GetVoters())
			snap, err := open(t, h.s, 2).Snapshot()
			require.NoError(t, err)
			require.True(t, raft.IsEmptySnap(snap))
			expectLog(t, h.s, 1, 1, 0, span{1, 6, 1})
			expectLog(t, h.s, 3, 1, 0, span{1, 6, 3})
		}
		check()
		h.restart()
		check()
		require.NoError(t, h.s.Delete(2), "deleting twice")
		save(t, h.s, Update{GroupID: 2, Entries: ents(2, 1, 1, 7)})
		expectLog(t, h.s, 2, 1, 0, span{1, 1, 7})
	}},

	{"a raft node restarts from the store", func(t *testing.T, h *harness) {
		const group = 7
		cfg := func(s Store) *raft.Config {
			return &raft.Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: open(t, s, group),
				MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256,
				Logger: &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)}}
		}
		// Bootstrap as the host does: a snapshot holding the voters.
		boot := snapshot(1, 1, []uint64{1}, "")
		boot.Data = nil
		save(t, h.s, Update{GroupID: group, HardState: hs(1, 0, 1), Snapshot: boot})
		rn, err := raft.NewRawNode(cfg(h.s))
		require.NoError(t, err)
		require.NoError(t, rn.Campaign())
		proposed := 0
		var applied []string
		for round := 0; round < 50; round++ {
			if rn.BasicStatus().RaftState == raft.StateLeader && proposed < 20 {
				require.NoError(t, rn.Propose([]byte{byte('a' + proposed)}))
				proposed++
			}
			for rn.HasReady() {
				rd := rn.Ready()
				u := Update{GroupID: group, Entries: rd.Entries}
				if !raft.IsEmptyHardState(rd.HardState) {
					u.HardState = rd.HardState
				}
				if !raft.IsEmptySnap(rd.Snapshot) {
					u.Snapshot = rd.Snapshot
				}
				save(t, h.s, u)
				for _, e := range rd.CommittedEntries {
					if e.GetType() == raftpb.EntryType_EntryNormal && len(e.GetData()) > 0 {
						applied = append(applied, string(e.GetData()))
					}
				}
				rn.Advance(rd)
			}
		}
		require.Len(t, applied, 20)
		st := rn.BasicStatus()
		h.restart()
		rn2, err := raft.NewRawNode(cfg(h.s))
		require.NoError(t, err)
		st2 := rn2.BasicStatus()
		require.Equal(t, st.GetTerm(), st2.GetTerm())
		require.Equal(t, st.GetVote(), st2.GetVote())
		require.LessOrEqual(t, st2.GetCommit(), st.GetCommit())
		l := open(t, h.s, group)
		last, err := l.LastIndex()
		require.NoError(t, err)
		require.GreaterOrEqual(t, last, st.GetCommit())
		got, err := l.Entries(2, last+1, noLimit)
		require.NoError(t, err)
		var data []string
		for _, e := range got {
			if len(e.GetData()) > 0 {
				data = append(data, string(e.GetData()))
			}
		}
		require.Equal(t, applied, data)
	}},

	{"readers run concurrently with saves", func(t *testing.T, h *harness) {
		save(t, h.s, Update{GroupID: 1, Entries: ents(1, 1, 1, 1)})
		l := open(t, h.s, 1)
		stop := make(chan struct{})
		errc := make(chan error, 4)
		var wg sync.WaitGroup
		for r := 0; r < 2; r++ {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := checkSnapshotOfLog(l); err != nil {
						errc <- err
						return
					}
				}
			})
		}
		term := uint64(1)
		next := uint64(2)
		for i := 0; i < 300; i++ {
			if i%25 == 24 {
				// Diverge: rewrite the last few entries with a new term.
				term++
				next -= 3
			}
			save(t, h.s, Update{GroupID: 1, Entries: ents(1, next, next+1, term)})
			next += 2
		}
		close(stop)
		wg.Wait()
		close(errc)
		for err := range errc {
			require.NoError(t, err)
		}
	}},
}

// checkSnapshotOfLog reads a whole log and checks it is self-consistent: contiguous, every
// entry where its data says it belongs, terms never decreasing. Errors caused by a concurrent
// Save moving the bounds between calls are not failures.
func checkSnapshotOfLog(l Log) error {
	first, err := l.FirstIndex()
	if err != nil {
		return err
	}
	last, err := l.LastIndex()
	if err != nil {
		return err
	}
	got, err := l.Entries(first, last+1, noLimit)
	if errors.Is(err, raft.ErrUnavailable) || errors.Is(err, raft.ErrCompacted) {
		return nil
	}
	if err != nil {
		return err
	}
	prev := uint64(0)
	for i, e := range got {
		if e.GetIndex() != first+uint64(i) {
			return errors.New("entries not contiguous: " + fmtEntries(got))
		}
		if want := ent(1, e.GetIndex(), e.GetTerm()); !proto.Equal(want, e) {
			return errors.New("entry data does not match its position: " + fmtEntries(got))
		}
		if e.GetTerm() < prev {
			return errors.New("terms decrease: " + fmtEntries(got))
		}
		prev = e.GetTerm()
		if term, err := l.Term(e.GetIndex()); err == nil && term < e.GetTerm() {
			return errors.New("Term() older than an entry read before")
		}
	}
	return nil
}
