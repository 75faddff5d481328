package raftstore

import (
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// group is an open group of a Badger store and the Log handed out for it.
type group struct {
	store *Badger
	id    uint64

	mu       sync.RWMutex // see Badger
	released bool
	// refs counts the Opens not yet Released (guarded by Badger.mu): a replica's raft host
	// and a status read of the same group from disk may hold it at once.
	refs int
	st   groupState
	// tail caches the newest entries (contiguous, ending at st.last) so that raft's reads of
	// what it just persisted (apply, MsgApp to followers) do not go to Badger.
	tail      []*raftpb.Entry
	tailBytes int
}

type groupState struct {
	hasMeta  bool   // the 'm' key exists
	first    uint64 // first readable index
	prevTerm uint64 // term of first-1
	last     uint64 // last index; first-1 when the log is empty
	hs       hardState
	disk     hardState                // the hard state as stored; hs.commit may be ahead
	snap     *raftpb.SnapshotMetadata // nil when no snapshot was installed; never mutated
}

// lazyCommitOp writes the hard state if only its commit index is ahead of disk.
func (st groupState) lazyCommitOp(id uint64) (op, bool) {
	if !st.hasMeta || st.hs == st.disk {
		return op{}, false
	}
	return setOp(groupKey(kindHard, id), st.hs.encode()), true
}

var _ Log = (*group)(nil)

// release drops the group's memory; later calls on a Log handed out before fail.
func (g *group) release() groupState {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.released = true
	clear(g.tail)
	g.tail, g.tailBytes = nil, 0
	return g.st
}

func (g *group) usable() error {
	if g.released {
		return fmt.Errorf("raftstore: group %d: log used after Release or Close: %w", g.id, ErrClosed)
	}
	return nil
}

// InitialState implements raft.Storage.
//
// The commit index is persisted lazily (see Save), so the stored one may lag. It is returned
// clamped to [first-1, last]: raft panics if it is below the compaction point (which it can be
// when the commit index moved a lot without a term change and then the log was compacted) or
// above the last index. Both bounds are safe: every index up to first-1 was applied, so it was
// committed, and raft re-learns the real commit index from the leader.
func (g *group) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if err := g.usable(); err != nil {
		return nil, nil, err
	}
	cs := new(raftpb.ConfState)
	if g.st.snap != nil && g.st.snap.ConfState != nil {
		cs = proto.Clone(g.st.snap.ConfState).(*raftpb.ConfState)
	}
	cs = raftpb.EnsureConfState(cs)
	hs := g.st.hs
	if hs == (hardState{}) {
		return nil, cs, nil
	}
	commit := min(max(hs.commit, g.st.first-1), g.st.last)
	return &raftpb.HardState{Term: new(hs.term), Vote: new(hs.vote), Commit: new(commit)}, cs, nil
}

// Entries implements raft.Storage. The returned slice is always freshly allocated.
func (g *group) Entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if err := g.usable(); err != nil {
		return nil, err
	}
	st := &g.st
	switch {
	case lo < st.first:
		return nil, raft.ErrCompacted
	case hi > st.last+1:
		return nil, raft.ErrUnavailable
	case st.first > st.last:
		return nil, raft.ErrUnavailable
	case lo > hi:
		return nil, fmt.Errorf("raftstore: group %d: invalid range [%d, %d)", g.id, lo, hi)
	case lo == hi:
		return nil, nil
	}
	if n := len(g.tail); n > 0 && lo >= g.tail[0].GetIndex() {
		off := g.tail[0].GetIndex()
		src := g.tail[lo-off : hi-off]
		limit := sizeLimit(src, maxSize)
		return append([]*raftpb.Entry(nil), src[:limit]...), nil
	}
	ents, err := g.store.readEntries(g.id, lo, hi, maxSize)
	if err != nil {
		return nil, fmt.Errorf("raftstore: group %d: entries [%d, %d): %w", g.id, lo, hi, err)
	}
	return ents, nil
}

// sizeLimit returns how many of ents fit in maxSize, at least one (raft's limitSize).
func sizeLimit(ents []*raftpb.Entry, maxSize uint64) int {
	if len(ents) == 0 {
		return 0
	}
	size := uint64(proto.Size(ents[0]))
	for i := 1; i < len(ents); i++ {
		size += uint64(proto.Size(ents[i]))
		if size > maxSize {
			return i
		}
	}
	return len(ents)
}

// Term implements raft.Storage.
func (g *group) Term(i uint64) (uint64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if err := g.usable(); err != nil {
		return 0, err
	}
	return g.termLocked(i)
}

// termLocked needs g.mu held, or writeMu (writers are the only ones changing the state).
func (g *group) termLocked(i uint64) (uint64, error) {
	st := &g.st
	switch {
	case i+1 < st.first:
		return 0, raft.ErrCompacted
	case i > st.last:
		return 0, raft.ErrUnavailable
	case i+1 == st.first:
		return st.prevTerm, nil
	}
	if n := len(g.tail); n > 0 && i >= g.tail[0].GetIndex() {
		return g.tail[i-g.tail[0].GetIndex()].GetTerm(), nil
	}
	t, err := g.store.readTerm(g.id, i)
	if err != nil {
		return 0, fmt.Errorf("raftstore: group %d: term of %d: %w", g.id, i, err)
	}
	return t, nil
}

// LastIndex implements raft.Storage.
func (g *group) LastIndex() (uint64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if err := g.usable(); err != nil {
		return 0, err
	}
	return g.st.last, nil
}

// FirstIndex implements raft.Storage.
func (g *group) FirstIndex() (uint64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if err := g.usable(); err != nil {
		return 0, err
	}
	return g.st.first, nil
}

// Snapshot implements raft.Storage. Without a snapshot it returns an empty one.
func (g *group) Snapshot() (*raftpb.Snapshot, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if err := g.usable(); err != nil {
		return nil, err
	}
	if g.st.snap == nil {
		return raftpb.EnsureSnapshot(nil), nil
	}
	var data []byte
	err := g.store.db.View(func(txn *badger.Txn) error {
		var err error
		data, err = getValue(txn, groupKey(kindSnapData, g.id))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raftstore: group %d: snapshot data: %w", g.id, err)
	}
	if len(data) == 0 {
		data = nil
	}
	md := proto.Clone(g.st.snap).(*raftpb.SnapshotMetadata)
	return &raftpb.Snapshot{Metadata: md, Data: data}, nil
}

// entryMemSize approximates what a cached entry costs: its payload plus the message, the
// pointers and the slice slot.
func entryMemSize(e *raftpb.Entry) int { return len(e.Data) + 96 }

// appendTail adds ents (contiguous, starting at or before the tail's end + 1) to the cache,
// replacing any cached entries from ents[0] on, then trims the cache to its bounds. g.mu must
// be held for writing (or the group not yet published).
func (g *group) appendTail(ents []*raftpb.Entry) {
	c := &g.store.cfg
	if len(ents) == 0 {
		return
	}
	if c.tailEntries == 0 || c.tailBytes == 0 {
		g.dropTail()
		return
	}
	if n := len(g.tail); n > 0 {
		first, f := g.tail[0].GetIndex(), ents[0].GetIndex()
		switch {
		case f < first || f > first+uint64(n):
			g.dropTail()
		case f < first+uint64(n):
			k := int(f - first)
			for _, e := range g.tail[k:] {
				g.tailBytes -= entryMemSize(e)
			}
			clear(g.tail[k:])
			g.tail = g.tail[:k]
		}
	}
	if len(ents) > c.tailEntries {
		g.dropTail()
		ents = ents[len(ents)-c.tailEntries:]
	}
	for _, e := range ents {
		g.tailBytes += entryMemSize(e)
	}
	g.tail = append(g.tail, ents...)
	drop := 0
	for drop < len(g.tail) && (len(g.tail)-drop > c.tailEntries || g.tailBytes > c.tailBytes) {
		g.tailBytes -= entryMemSize(g.tail[drop])
		drop++
	}
	g.trimTail(drop)
}

// compactTail drops cached entries below first.
func (g *group) compactTail(first uint64) {
	drop := 0
	for drop < len(g.tail) && g.tail[drop].GetIndex() < first {
		g.tailBytes -= entryMemSize(g.tail[drop])
		drop++
	}
	g.trimTail(drop)
}

func (g *group) trimTail(drop int) {
	if drop == 0 {
		return
	}
	// Nil the dropped slots so the entries can be collected before append reallocates.
	clear(g.tail[:drop])
	g.tail = g.tail[drop:]
	if len(g.tail) == 0 {
		g.tail, g.tailBytes = nil, 0
	}
}

func (g *group) dropTail() {
	clear(g.tail)
	g.tail, g.tailBytes = nil, 0
}
