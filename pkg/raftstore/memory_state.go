package raftstore

import (
	"bytes"
	"slices"
)

// memState is Memory's state-machine key space: per group, keys kept sorted.
type memState struct {
	keys   map[uint64][][]byte
	values map[uint64]map[string][]byte
}

var _ StateStore = (*Memory)(nil)

func (m *Memory) stateOf(group uint64) {
	if m.state.keys == nil {
		m.state = memState{keys: make(map[uint64][][]byte), values: make(map[uint64]map[string][]byte)}
	}
	if m.state.values[group] == nil {
		m.state.values[group] = make(map[string][]byte)
	}
}

// SaveState implements StateStore.
func (m *Memory) SaveState(writes []StateWrite) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for _, w := range writes {
		m.stateOf(w.GroupID)
		keys := m.state.keys[w.GroupID]
		i, found := slices.BinarySearchFunc(keys, w.Key, bytes.Compare)
		switch {
		case w.Value == nil && found:
			m.state.keys[w.GroupID] = slices.Delete(keys, i, i+1)
			delete(m.state.values[w.GroupID], string(w.Key))
		case w.Value != nil:
			if !found {
				m.state.keys[w.GroupID] = slices.Insert(keys, i, slices.Clone(w.Key))
			}
			m.state.values[w.GroupID][string(w.Key)] = slices.Clone(w.Value)
		}
	}
	return nil
}

// GetState implements StateStore.
func (m *Memory) GetState(groupID uint64, key []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	return slices.Clone(m.state.values[groupID][string(key)]), nil
}

// SeekStateLE implements StateStore.
func (m *Memory) SeekStateLE(groupID uint64, key []byte) ([]byte, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, nil, ErrClosed
	}
	keys := m.state.keys[groupID]
	i, found := slices.BinarySearchFunc(keys, key, bytes.Compare)
	if !found {
		i--
	}
	if i < 0 || len(key) == 0 || len(keys[i]) == 0 || keys[i][0] != key[0] {
		return nil, nil, nil
	}
	k := keys[i]
	return slices.Clone(k), slices.Clone(m.state.values[groupID][string(k)]), nil
}

func (m *Memory) deleteState(groupID uint64) {
	if m.state.keys != nil {
		delete(m.state.keys, groupID)
		delete(m.state.values, groupID)
	}
}
