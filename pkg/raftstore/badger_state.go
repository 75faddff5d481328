package raftstore

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

var _ StateStore = (*Badger)(nil)

func (b *Badger) open() error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	return nil
}

// SaveState implements StateStore with one WriteBatch. It does not take the write lock Save
// holds across its commits: the apply stage must not wait for the append stage's disk. Badger
// syncs the batch's commits (SyncWrites) before Flush returns, so a memtable that fills with
// them is synced before it is rotated, and no Save can be left unsynced by it.
func (b *Badger) SaveState(writes []StateWrite) error {
	if len(writes) == 0 {
		return nil
	}
	if err := b.open(); err != nil {
		return err
	}
	wb := b.db.NewWriteBatch()
	defer wb.Cancel()
	for _, w := range writes {
		k := stateKey(w.GroupID, w.Key)
		var err error
		if w.Value == nil {
			err = wb.Delete(k)
		} else {
			err = wb.Set(k, w.Value)
		}
		if err != nil {
			return fmt.Errorf("raftstore: group %d: save state: %w", w.GroupID, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("raftstore: save state: %w", err)
	}
	return nil
}

// GetState implements StateStore.
func (b *Badger) GetState(groupID uint64, key []byte) ([]byte, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	var v []byte
	err := b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(stateKey(groupID, key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raftstore: group %d: get state: %w", groupID, err)
	}
	return v, nil
}

// SeekStateLE implements StateStore with one reverse seek.
func (b *Badger) SeekStateLE(groupID uint64, key []byte) (k, v []byte, err error) {
	if len(key) == 0 {
		return nil, nil, nil
	}
	if err := b.open(); err != nil {
		return nil, nil, err
	}
	prefix := stateKey(groupID, key[:1])
	err = b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: prefix})
		defer it.Close()
		it.Seek(stateKey(groupID, key))
		if !it.ValidForPrefix(prefix) {
			return nil
		}
		item := it.Item()
		k = bytes.Clone(item.Key()[9:])
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("raftstore: group %d: seek state: %w", groupID, err)
	}
	return k, v, nil
}

// deleteState removes every state record of a group; the caller holds writeMu.
func (b *Badger) deleteState(groupID uint64) error {
	prefix := stateKey(groupID, nil)
	var keys [][]byte
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil || len(keys) == 0 {
		return err
	}
	wb := b.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	return wb.Flush()
}
