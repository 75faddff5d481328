package raftstore

import (
	"fmt"
	"slices"
	"sync"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Memory is a Store that keeps everything in memory, for tests. Released groups keep their data
// (as a disk would), so hibernation and restarts can be simulated by opening the groups again.
type Memory struct {
	mu     sync.Mutex
	groups map[uint64]*memLog
	conf   map[uint64]confRecord // what SaveConfState recorded
	state  memState
	closed bool
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{groups: make(map[uint64]*memLog), conf: make(map[uint64]confRecord)}
}

var _ Store = (*Memory)(nil)

// memLog is a raft.MemoryStorage whose Entries returns ErrUnavailable for a range past the
// last index, as raft.Storage documents, where MemoryStorage panics.
type memLog struct {
	// mu is held for writing while Save changes the log, so that Entries' bounds check and
	// read see the same log.
	mu sync.RWMutex
	*raft.MemoryStorage
}

// Entries implements raft.Storage.
func (l *memLog) Entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	first, _ := l.MemoryStorage.FirstIndex()
	last, _ := l.MemoryStorage.LastIndex()
	if lo >= first && hi > last+1 {
		return nil, raft.ErrUnavailable
	}
	return l.MemoryStorage.Entries(lo, hi, maxSize)
}

// hasData reports whether anything was saved (Open alone creates an empty log).
func (l *memLog) hasData() bool {
	hs, _, _ := l.InitialState()
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	snap, _ := l.Snapshot()
	return !raft.IsEmptyHardState(hs) || first > 1 || last > 0 || !raft.IsEmptySnap(snap)
}

func (m *Memory) group(id uint64) *memLog {
	g, ok := m.groups[id]
	if !ok {
		g = &memLog{MemoryStorage: raft.NewMemoryStorage()}
		m.groups[id] = g
	}
	return g
}

// Open implements Store.
func (m *Memory) Open(groupID uint64) (Log, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	return m.group(groupID), nil
}

// Save implements Store.
func (m *Memory) Save(updates []Update) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for _, u := range updates {
		g := m.group(u.GroupID)
		g.mu.Lock()
		err := m.save(g, u)
		g.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *Memory) save(g *memLog, u Update) error {
	if u.Snapshot != nil {
		// A copy: MemoryStorage keeps the snapshot it is given and SaveSnapshot later
		// rewrites its fields in place, while raft may still hold the one in the update.
		if err := g.ApplySnapshot(proto.Clone(u.Snapshot).(*raftpb.Snapshot)); err != nil {
			return fmt.Errorf("group %d: apply snapshot: %w", u.GroupID, err)
		}
	}
	if len(u.Entries) > 0 {
		if err := g.Append(u.Entries); err != nil {
			return fmt.Errorf("group %d: append: %w", u.GroupID, err)
		}
	}
	if u.HardState != nil {
		if err := g.SetHardState(proto.Clone(u.HardState).(*raftpb.HardState)); err != nil {
			return fmt.Errorf("group %d: hard state: %w", u.GroupID, err)
		}
	}
	return nil
}

// Release implements Store. Memory keeps the data, as a disk would.
func (m *Memory) Release(uint64) {}

// Compact implements Store. MemoryStorage.Compact(i) keeps the term of i and discards i itself,
// so the Store's "discard before index" is MemoryStorage.Compact(index-1).
func (m *Memory) Compact(groupID, index uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	g := m.group(groupID)
	g.mu.Lock()
	defer g.mu.Unlock()
	if index == 0 {
		return raft.ErrCompacted
	}
	if last, _ := g.LastIndex(); index > last+1 {
		return fmt.Errorf("group %d: compact %d beyond last index %d", groupID, index, last)
	}
	return g.MemoryStorage.Compact(index - 1)
}

// SaveSnapshot implements Store.
func (m *Memory) SaveSnapshot(groupID uint64, snap *raftpb.Snapshot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	g := m.group(groupID)
	g.mu.Lock()
	defer g.mu.Unlock()
	md := snap.GetMetadata()
	idx := md.GetIndex()
	cur, _ := g.MemoryStorage.Snapshot()
	if idx <= cur.GetMetadata().GetIndex() {
		return fmt.Errorf("raftstore: group %d: snapshot %d not newer than %d: %w",
			groupID, idx, cur.GetMetadata().GetIndex(), raft.ErrSnapOutOfDate)
	}
	if err := checkSnapshotInLog(g.MemoryStorage, idx, md.GetTerm()); err != nil {
		return fmt.Errorf("raftstore: group %d: %w", groupID, err)
	}
	cs := raftpb.EnsureConfState(proto.Clone(md.GetConfState()).(*raftpb.ConfState))
	if _, err := g.CreateSnapshot(idx, cs, slices.Clone(snap.GetData())); err != nil {
		return fmt.Errorf("raftstore: group %d: save snapshot: %w", groupID, err)
	}
	return nil
}

// checkSnapshotInLog checks that index is in the log (or is its compaction point) with term.
func checkSnapshotInLog(l raft.Storage, index, term uint64) error {
	first, err := l.FirstIndex()
	if err != nil {
		return err
	}
	last, err := l.LastIndex()
	if err != nil {
		return err
	}
	if index+1 < first || index > last {
		return fmt.Errorf("snapshot at %d outside the log [%d, %d]", index, first, last)
	}
	t, err := l.Term(index)
	if err != nil {
		return fmt.Errorf("snapshot at %d: term: %w", index, err)
	}
	if t != term {
		return fmt.Errorf("snapshot at %d has term %d, the log has %d", index, term, t)
	}
	return nil
}

// SaveConfState implements Store.
func (m *Memory) SaveConfState(groupID, index uint64, cs *raftpb.ConfState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if index > m.conf[groupID].index {
		m.conf[groupID] = confRecord{index, raftpb.EnsureConfState(proto.Clone(cs).(*raftpb.ConfState))}
	}
	return nil
}

// ConfState implements Store.
func (m *Memory) ConfState(groupID uint64) (uint64, *raftpb.ConfState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, nil, ErrClosed
	}
	index, cs := uint64(0), (*raftpb.ConfState)(nil)
	if g := m.groups[groupID]; g != nil {
		g.mu.RLock()
		snap, _ := g.MemoryStorage.Snapshot()
		g.mu.RUnlock()
		index, cs = snap.GetMetadata().GetIndex(), snap.GetMetadata().GetConfState()
	}
	if r, ok := m.conf[groupID]; ok && r.index > index {
		index, cs = r.index, r.cs
	}
	return index, raftpb.EnsureConfState(proto.Clone(cs).(*raftpb.ConfState)), nil
}

// Groups implements Store.
func (m *Memory) Groups() ([]uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]uint64, 0, len(m.groups))
	for id, g := range m.groups {
		if g.hasData() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Delete implements Store.
func (m *Memory) Delete(groupID uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.groups, groupID)
	delete(m.conf, groupID)
	m.deleteState(groupID)
	return nil
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
