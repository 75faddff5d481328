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
	state  memState
	closed bool
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{groups: make(map[uint64]*memLog)}
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
		if err := g.ApplySnapshot(u.Snapshot); err != nil {
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
