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
// (as a disk would), so hibernation and restarts can be simulated: Crash drops every open Log
// but keeps what was saved.
type Memory struct {
	mu     sync.Mutex
	groups map[uint64]*raft.MemoryStorage
	closed bool
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{groups: make(map[uint64]*raft.MemoryStorage)}
}

var _ Store = (*Memory)(nil)

func (m *Memory) group(id uint64) *raft.MemoryStorage {
	g, ok := m.groups[id]
	if !ok {
		g = raft.NewMemoryStorage()
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
	}
	return nil
}

// Release implements Store. Memory keeps the data, as a disk would.
func (m *Memory) Release(uint64) {}

// Compact implements Store.
func (m *Memory) Compact(groupID, index uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	return m.group(groupID).Compact(index)
}

// Groups implements Store.
func (m *Memory) Groups() ([]uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]uint64, 0, len(m.groups))
	for id := range m.groups {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// Delete implements Store.
func (m *Memory) Delete(groupID uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.groups, groupID)
	return nil
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
