package raftstore

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// SaveSnapshot implements Store: the snapshot's metadata and data keys in one transaction,
// then an fsync. The log is not touched; a released group is updated on disk without being
// brought back into memory.
func (b *Badger) SaveSnapshot(groupID uint64, snap *raftpb.Snapshot) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if err := b.writable(); err != nil {
		return err
	}
	g, _, err := b.peek(groupID)
	if err != nil {
		return err
	}
	md := raftpb.EnsureSnapshotMetadata(proto.Clone(snap.GetMetadata()).(*raftpb.SnapshotMetadata))
	md.ConfState = raftpb.EnsureConfState(md.ConfState)
	idx := md.GetIndex()
	if cur := g.st.snap; cur != nil && cur.GetIndex() >= idx {
		return fmt.Errorf("raftstore: group %d: snapshot %d not newer than %d: %w", groupID, idx, cur.GetIndex(), raft.ErrSnapOutOfDate)
	}
	if idx+1 < g.st.first || idx > g.st.last {
		return fmt.Errorf("raftstore: group %d: snapshot at %d outside the log [%d, %d]", groupID, idx, g.st.first, g.st.last)
	}
	term, err := g.termLocked(idx)
	if err != nil {
		return fmt.Errorf("raftstore: group %d: snapshot at %d: %w", groupID, idx, err)
	}
	if term != md.GetTerm() {
		return fmt.Errorf("raftstore: group %d: snapshot at %d has term %d, the log has %d", groupID, idx, md.GetTerm(), term)
	}
	mdBytes, err := proto.Marshal(md)
	if err != nil {
		return fmt.Errorf("raftstore: group %d: marshal snapshot metadata: %w", groupID, err)
	}
	w := b.newTxnWriter()
	w.addUnit([]op{
		setOp(groupKey(kindSnapMeta, groupID), mdBytes),
		setOp(groupKey(kindSnapData, groupID), snap.GetData()),
	})
	g.mu.Lock()
	err = w.finish()
	if err == nil {
		g.st.snap = md
	}
	g.mu.Unlock()
	if err != nil {
		b.failed = err
		return fmt.Errorf("raftstore: group %d: save snapshot: %w", groupID, err)
	}
	if err := b.sync(); err != nil {
		b.failed = err
		return fmt.Errorf("raftstore: group %d: save snapshot: sync: %w", groupID, err)
	}
	return nil
}

// SaveConfState implements Store with one small transaction, which Badger syncs like every
// commit (SyncWrites): stronger than the contract asks, and it keeps the records (and the Saves
// and Compacts that rely on them) in the order written.
func (b *Badger) SaveConfState(groupID, index uint64, cs *raftpb.ConfState) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if err := b.writable(); err != nil {
		return err
	}
	var cur confRecord
	err := b.db.View(func(txn *badger.Txn) error {
		var err error
		cur, err = readConfRecord(txn, groupID)
		return err
	})
	if err != nil {
		return fmt.Errorf("raftstore: group %d: read configuration record: %w", groupID, err)
	}
	if index <= cur.index {
		return nil
	}
	v, err := confRecord{index: index, cs: raftpb.EnsureConfState(proto.Clone(cs).(*raftpb.ConfState))}.encode()
	if err != nil {
		return fmt.Errorf("raftstore: group %d: %w", groupID, err)
	}
	w := b.newTxnWriter()
	w.add(setOp(groupKey(kindConf, groupID), v))
	if err := w.finish(); err != nil {
		b.failed = err
		return fmt.Errorf("raftstore: group %d: save configuration record: %w", groupID, err)
	}
	return nil
}

// ConfState implements Store. It reads both records from disk, so it costs the same whether
// the group is open or released.
func (b *Badger) ConfState(groupID uint64) (uint64, *raftpb.ConfState, error) {
	if err := b.open(); err != nil {
		return 0, nil, err
	}
	var rec confRecord
	var snap *raftpb.SnapshotMetadata
	err := b.db.View(func(txn *badger.Txn) error {
		var err error
		if rec, err = readConfRecord(txn, groupID); err != nil {
			return err
		}
		v, err := getValue(txn, groupKey(kindSnapMeta, groupID))
		if err != nil || v == nil {
			return err
		}
		snap = new(raftpb.SnapshotMetadata)
		if err := proto.Unmarshal(v, snap); err != nil {
			return fmt.Errorf("snapshot metadata: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("raftstore: group %d: configuration: %w", groupID, err)
	}
	if snap != nil && snap.GetIndex() >= rec.index {
		return snap.GetIndex(), raftpb.EnsureConfState(snap.ConfState), nil
	}
	return rec.index, raftpb.EnsureConfState(rec.cs), nil
}

// readConfRecord returns the group's configuration record, or a zero one.
func readConfRecord(txn *badger.Txn, groupID uint64) (confRecord, error) {
	v, err := getValue(txn, groupKey(kindConf, groupID))
	if err != nil || v == nil {
		return confRecord{}, err
	}
	return decodeConfRecord(v)
}
