package raftstore

import (
	"bytes"
	"io"
	"log"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func openBadger(t *testing.T, dir string, opts ...BadgerOption) *Badger {
	t.Helper()
	b, err := OpenBadger(dir, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// crash closes the database without what Close does first (writing lazily kept commit
// indexes): everything saved is on disk, anything kept only in memory is lost.
func crash(t *testing.T, b *Badger) {
	t.Helper()
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	b.mu.Lock()
	b.closed = true
	groups := b.groups
	b.groups = nil
	b.mu.Unlock()
	for _, g := range groups {
		g.release()
	}
	if b.gcStop != nil {
		close(b.gcStop)
		<-b.gcDone
		b.gcStop = nil
	}
	require.NoError(t, b.db.Close())
}

// countKeys counts the keys under prefix, every stored version if allVersions.
func countKeys(t *testing.T, b *Badger, prefix []byte, allVersions bool) int {
	t.Helper()
	n := 0
	require.NoError(t, b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, AllVersions: allVersions})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			if !it.Item().IsDeletedOrExpired() {
				n++
			}
		}
		return nil
	}))
	return n
}

func TestBadgerCrashKeepsTermAndVote(t *testing.T) {
	dir := t.TempDir()
	b := openBadger(t, dir)
	save(t, b, Update{GroupID: 1, HardState: hs(2, 1, 0), Entries: ents(1, 1, 10, 2)})
	for c := uint64(1); c <= 10; c++ {
		save(t, b, Update{GroupID: 1, HardState: hs(2, 1, c)})
	}
	expectHardState(t, b, 1, 2, 1, 10) // the open group knows the latest commit
	crash(t, b)

	b = openBadger(t, dir)
	hard, _, err := open(t, b, 1).InitialState()
	require.NoError(t, err)
	require.Equal(t, uint64(2), hard.GetTerm())
	require.Equal(t, uint64(1), hard.GetVote())
	require.LessOrEqual(t, hard.GetCommit(), uint64(10), "commit never above the durable log")
	expectLog(t, b, 1, 1, 0, span{1, 10, 2})

	// A term change writes the hard state, commit included.
	save(t, b, Update{GroupID: 1, HardState: hs(3, 0, 10)})
	crash(t, b)
	b = openBadger(t, dir)
	expectHardState(t, b, 1, 3, 0, 10)

	// So does a vote in the same term.
	save(t, b, Update{GroupID: 1, HardState: hs(3, 2, 10)})
	crash(t, b)
	b = openBadger(t, dir)
	expectHardState(t, b, 1, 3, 2, 10)
}

func TestBadgerCommitIsClampedToTheCompactedPrefix(t *testing.T) {
	dir := t.TempDir()
	b := openBadger(t, dir)
	save(t, b, Update{GroupID: 1, HardState: hs(1, 0, 1), Snapshot: snapshot(1, 1, []uint64{1}, "")})
	save(t, b, Update{GroupID: 1, Entries: ents(1, 2, 20, 1)})
	save(t, b, Update{GroupID: 1, HardState: hs(1, 0, 20)}) // commit only: kept in memory
	require.NoError(t, b.Compact(1, 15))
	crash(t, b)

	b = openBadger(t, dir)
	l := open(t, b, 1)
	hard, _, err := l.InitialState()
	require.NoError(t, err)
	require.Equal(t, uint64(14), hard.GetCommit(), "stored commit 1 is below first index - 1")
	// raft panics on a commit index below its compaction point; this must load.
	rn, err := raft.NewRawNode(&raft.Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: l,
		MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 16, Logger: &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)}})
	require.NoError(t, err)
	require.Equal(t, uint64(14), rn.BasicStatus().GetCommit())
}

func TestBadgerReleasedGroupCostsNothing(t *testing.T) {
	b := openBadger(t, t.TempDir())
	var us []Update
	for g := uint64(1); g <= 100; g++ {
		us = append(us, Update{GroupID: g, HardState: hs(1, 1, 3), Entries: ents(g, 1, 5, 1)})
	}
	save(t, b, us...)
	logs := make([]Log, 0, 100)
	for g := uint64(1); g <= 100; g++ {
		logs = append(logs, open(t, b, g))
	}
	groups, entries, bytes := b.memStats()
	require.Equal(t, 100, groups)
	require.Equal(t, 500, entries)
	require.Positive(t, bytes)

	for g := uint64(1); g <= 100; g++ {
		b.Release(g)
	}
	groups, entries, bytes = b.memStats()
	require.Zero(t, groups)
	require.Zero(t, entries)
	require.Zero(t, bytes)
	// Logs held by someone else dropped their cache too, and refuse to be used.
	g := logs[0].(*group)
	require.Nil(t, g.tail)
	_, err := logs[0].LastIndex()
	require.ErrorIs(t, err, ErrClosed)

	// Open brings a group back with everything.
	expectLog(t, b, 42, 1, 0, span{1, 5, 1})
	expectHardState(t, b, 42, 1, 1, 3)
	groups, _, _ = b.memStats()
	require.Equal(t, 1, groups)

	// Compact and Delete of a released group do not load it for good.
	require.NoError(t, b.Compact(7, 3))
	require.NoError(t, b.Delete(8))
	groups, _, _ = b.memStats()
	require.Equal(t, 1, groups)
	expectLog(t, b, 7, 3, 1, span{3, 5, 1})
}

func TestBadgerTailCacheIsBounded(t *testing.T) {
	b := openBadger(t, t.TempDir(), WithTailCache(256, 64<<10))
	for i := uint64(1); i <= 1000; i += 2 {
		save(t, b, Update{GroupID: 1, Entries: ents(1, i, i+1, 1)})
	}
	open(t, b, 1)
	_, entries, bytes := b.memStats()
	require.LessOrEqual(t, bytes, 64<<10)
	require.Positive(t, entries)
	require.LessOrEqual(t, entries, 256)
	g := open(t, b, 1).(*group)
	require.Equal(t, uint64(1000), g.tail[len(g.tail)-1].GetIndex(), "the cache holds the newest entries")

	b2 := openBadger(t, t.TempDir(), WithTailCache(10, 1<<20))
	save(t, b2, Update{GroupID: 1, Entries: ents(1, 1, 100, 1)})
	_, entries, _ = b2.memStats()
	require.Equal(t, 10, entries)
	expectLog(t, b2, 1, 1, 0, span{1, 100, 1}) // older entries come from disk
}

func TestBadgerWritesOneKeyPerGroupPerSave(t *testing.T) {
	b := openBadger(t, t.TempDir())
	var us []Update
	for g := uint64(1); g <= 3; g++ {
		us = append(us, Update{GroupID: g, HardState: hs(1, 1, 0), Entries: ents(g, 1, 10, 1)})
	}
	save(t, b, us...)
	require.Equal(t, 3, countKeys(t, b, []byte{kindRun}, false))
	for i := uint64(11); i <= 100; i++ {
		save(t, b, Update{GroupID: 1, HardState: hs(1, 1, i-1), Entries: ents(1, i, i, 1)})
	}
	require.Equal(t, 3+90, countKeys(t, b, []byte{kindRun}, false))
	// The commit index moved 90 times; the hard state key was written once.
	require.Equal(t, 1, countKeys(t, b, groupKey(kindHard, 1), true))
	require.Equal(t, 1, countKeys(t, b, groupKey(kindMeta, 1), true))

	// Compaction deletes whole runs: [1, 10] and 11..60 one by one, 51 keys.
	require.NoError(t, b.Compact(1, 61))
	require.Equal(t, 3+90-51, countKeys(t, b, []byte{kindRun}, false))
	expectLog(t, b, 1, 61, 1, span{61, 100, 1})
}

func TestBadgerSplitsLargeAppendsIntoRuns(t *testing.T) {
	b := openBadger(t, t.TempDir(), WithTailCache(0, 0))
	var big []*raftpb.Entry
	for i := uint64(1); i <= 40; i++ {
		e := ent(1, i, 1)
		e.Data = append(e.Data, bytes.Repeat([]byte{'x'}, 20<<10)...)
		big = append(big, e)
	}
	save(t, b, Update{GroupID: 1, Entries: big})
	n := countKeys(t, b, []byte{kindRun}, false)
	require.Greater(t, n, 1)
	require.Less(t, n, 40)
	got, err := open(t, b, 1).Entries(1, 41, noLimit)
	require.NoError(t, err)
	requireEntries(t, big, got)
}

func TestBadgerFinishesInterruptedUpdates(t *testing.T) {
	t.Run("truncation", func(t *testing.T) {
		dir := t.TempDir()
		b := openBadger(t, dir)
		save(t, b, Update{GroupID: 1, HardState: hs(1, 0, 0), Entries: ents(1, 1, 3, 1)})
		for i := uint64(4); i <= 13; i++ {
			save(t, b, Update{GroupID: 1, Entries: ents(1, i, i, 1)})
		}
		// What the head of a truncation at 2 writes, and part of the deletes after it.
		require.NoError(t, b.db.Update(func(txn *badger.Txn) error {
			for _, o := range []op{
				setOp(groupKey(kindHard, 1), hardState{term: 2}.encode()),
				setOp(runKey(1, 1), encodeRun(ents(1, 1, 1, 1))),
				setOp(groupKey(kindMeta, 1), meta{first: 1, limit: 2}.encode()),
				delOp(runKey(1, 4)), delOp(runKey(1, 5)),
			} {
				if err := set(txn, o); err != nil {
					return err
				}
			}
			return nil
		}))
		crash(t, b)
		b = openBadger(t, dir)
		expectLog(t, b, 1, 1, 0, span{1, 1, 1})
		expectHardState(t, b, 1, 2, 0, 0)
		require.Equal(t, 1, countKeys(t, b, runPrefix(1), false), "leftover runs deleted")
		save(t, b, Update{GroupID: 1, Entries: ents(1, 2, 3, 2)})
		b.Release(1)
		expectLog(t, b, 1, 1, 0, span{1, 1, 1}, span{2, 3, 2})
	})
	t.Run("snapshot", func(t *testing.T) {
		dir := t.TempDir()
		b := openBadger(t, dir)
		save(t, b, Update{GroupID: 1, Entries: ents(1, 1, 10, 1)})
		save(t, b, Update{GroupID: 1, Entries: ents(1, 11, 12, 1)})
		md := snapshot(7, 1, []uint64{1}, "").GetMetadata()
		mdBytes, err := proto.Marshal(md)
		require.NoError(t, err)
		require.NoError(t, b.db.Update(func(txn *badger.Txn) error {
			for _, o := range []op{
				setOp(groupKey(kindSnapMeta, 1), mdBytes),
				setOp(groupKey(kindSnapData, 1), []byte("seven")),
				setOp(groupKey(kindMeta, 1), meta{first: 8, prevTerm: 1, limit: 8}.encode()),
			} {
				if err := set(txn, o); err != nil {
					return err
				}
			}
			return nil
		}))
		crash(t, b)
		b = openBadger(t, dir)
		expectLog(t, b, 1, 8, 1)
		snap, err := open(t, b, 1).Snapshot()
		require.NoError(t, err)
		require.Equal(t, uint64(7), snap.GetMetadata().GetIndex())
		require.Equal(t, "seven", string(snap.GetData()))
		b.Release(1)
		expectLog(t, b, 1, 8, 1)
	})
}

// TestBadgerInterruptedSplitSave writes only part of a Save too big for one transaction, as a
// crash would leave it, and checks what loading the group makes of it.
func TestBadgerInterruptedSplitSave(t *testing.T) {
	for _, c := range []struct {
		name string
		u    Update
		// the log after the interruption: the update's hard state, the log cut at its start
		first, prevTerm uint64
		spans           []span
	}{
		{"truncation", Update{GroupID: 1, HardState: hs(2, 0, 0), Entries: ents(1, 2, 3, 2)}, 1, 0, []span{{1, 1, 1}}},
		{"snapshot", Update{GroupID: 1, HardState: hs(2, 0, 0), Snapshot: snapshot(8, 1, []uint64{1}, "8"), Entries: ents(1, 9, 9, 2)}, 9, 1, nil},
		{"append", Update{GroupID: 1, HardState: hs(2, 0, 0), Entries: bigAppend(14, 2)}, 1, 0, []span{{1, 13, 1}}},
	} {
		for _, cutAfter := range []int{0, 3, -1} { // ops of the rest written after the head; -1: all
			t.Run(c.name, func(t *testing.T) {
				dir := t.TempDir()
				b := openBadger(t, dir, withMaxTxnOps(8))
				save(t, b, Update{GroupID: 1, HardState: hs(1, 0, 0), Entries: ents(1, 1, 3, 1)})
				for i := uint64(4); i <= 13; i++ {
					save(t, b, Update{GroupID: 1, Entries: ents(1, i, i, 1)})
				}
				b.writeMu.Lock()
				g, err := b.openLocked(1)
				require.NoError(t, err)
				p, err := b.plan(g, c.u)
				require.NoError(t, err)
				require.NotNil(t, p.head, "the update must be split")
				w := b.newTxnWriter()
				w.addUnit(p.head)
				rest := p.rest
				if cutAfter >= 0 {
					rest = rest[:min(cutAfter, len(rest))]
				}
				for _, o := range rest {
					w.add(o)
				}
				require.NoError(t, w.finish())
				b.writeMu.Unlock()
				crash(t, b)

				b = openBadger(t, dir)
				expectLog(t, b, 1, c.first, c.prevTerm, c.spans...)
				// The commit index is raised to what the snapshot covers.
				expectHardState(t, b, 1, 2, 0, c.first-1)
				b.Release(1)
				expectLog(t, b, 1, c.first, c.prevTerm, c.spans...)
				// And the update can be saved again (the snapshot is already durable).
				again := c.u
				again.Snapshot = nil
				save(t, b, again)
				_, err = open(t, b, 1).Entries(c.u.Entries[0].GetIndex(), c.u.Entries[0].GetIndex()+1, noLimit)
				require.NoError(t, err)
			})
		}
	}
}

// bigAppend is an append of n entries of term from index first, in several runs.
func bigAppend(first, term uint64) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := first; i < first+12; i++ {
		e := ent(1, i, term)
		e.Data = bytes.Repeat([]byte{'b'}, maxRunBytes/2)
		out = append(out, e)
	}
	return out
}

func set(txn *badger.Txn, o op) error {
	if o.del {
		return txn.Delete(o.key)
	}
	return txn.Set(o.key, o.val)
}

func TestBadgerRejectsBadUpdates(t *testing.T) {
	b := openBadger(t, t.TempDir())
	save(t, b, Update{GroupID: 1, HardState: hs(1, 0, 0), Entries: ents(1, 1, 5, 1)})
	require.Error(t, b.Save([]Update{{GroupID: 1, Entries: ents(1, 7, 8, 1)}}), "gap")
	bad := ents(1, 6, 8, 1)
	bad[1] = ent(1, 9, 1)
	require.Error(t, b.Save([]Update{{GroupID: 1, Entries: bad}}), "not consecutive")
	// A failing update stops the whole batch: group 2 is not written either.
	err := b.Save([]Update{
		{GroupID: 2, Entries: ents(2, 1, 1, 1)},
		{GroupID: 1, Entries: ents(1, 9, 9, 1)},
	})
	require.Error(t, err)
	expectLog(t, b, 1, 1, 0, span{1, 5, 1})
	expectLog(t, b, 2, 1, 0)
	groups, err := b.Groups()
	require.NoError(t, err)
	require.Equal(t, []uint64{1}, groups)

	l := open(t, b, 1)
	require.NoError(t, b.Close())
	require.ErrorIs(t, b.Save([]Update{{GroupID: 1, Entries: ents(1, 6, 6, 1)}}), ErrClosed)
	_, err = b.Open(1)
	require.ErrorIs(t, err, ErrClosed)
	_, err = b.Groups()
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, b.Compact(1, 2), ErrClosed)
	_, err = l.Entries(1, 2, noLimit)
	require.ErrorIs(t, err, ErrClosed)
	require.NoError(t, b.Close(), "closing twice")
}

func TestBadgerRefusesAnotherFormat(t *testing.T) {
	dir := t.TempDir()
	b := openBadger(t, dir)
	require.NoError(t, b.db.Update(func(txn *badger.Txn) error { return txn.Set(versionKey, []byte{99}) }))
	require.NoError(t, b.Close())
	_, err := OpenBadger(dir)
	require.ErrorContains(t, err, "format")
}

// TestBadgerStoreIDLastsWithTheStore: the id survives reopening and a crash, and a wiped
// directory gets another one (what tells the cluster a replica's disk was replaced).
func TestBadgerStoreIDLastsWithTheStore(t *testing.T) {
	dir := t.TempDir()
	b := openBadger(t, dir)
	id := b.StoreID()
	require.NotZero(t, id)
	require.NoError(t, b.Close())

	b = openBadger(t, dir)
	require.Equal(t, id, b.StoreID(), "reopened")
	crash(t, b)
	b = openBadger(t, dir)
	require.Equal(t, id, b.StoreID(), "after a crash")
	require.NoError(t, b.Close())

	require.NoError(t, os.RemoveAll(dir))
	b = openBadger(t, dir)
	require.NotZero(t, b.StoreID())
	require.NotEqual(t, id, b.StoreID(), "a wiped directory is a new store")
}

// syncBuffer is an io.Writer safe for Badger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestBadgerLogsThroughSlogQuietly(t *testing.T) {
	var info, debug syncBuffer
	dir := t.TempDir()
	b := openBadger(t, dir, WithLogger(slog.New(slog.NewTextHandler(&info, nil))))
	save(t, b, Update{GroupID: 1, Entries: ents(1, 1, 1, 1)})
	require.NoError(t, b.Close())
	require.Empty(t, info.String(), "Badger's routine messages stay below info")

	b = openBadger(t, dir, WithLogger(slog.New(slog.NewTextHandler(&debug, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	require.NoError(t, b.Close())
	require.Contains(t, debug.String(), "component=badger")
}

func TestBadgerValueLogGCRunsAndStops(t *testing.T) {
	b := openBadger(t, t.TempDir(), WithValueLogGC(time.Millisecond))
	for i := uint64(1); i <= 50; i++ {
		e := ent(1, i, 1)
		e.Data = bytes.Repeat([]byte{'v'}, 64<<10) // in the value log
		save(t, b, Update{GroupID: 1, Entries: []*raftpb.Entry{e}})
	}
	require.NoError(t, b.Compact(1, 50))
	time.Sleep(20 * time.Millisecond)
	got, err := open(t, b, 1).Entries(50, 51, noLimit)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Len(t, got[0].GetData(), 64<<10)
	require.NoError(t, b.Close())
}
