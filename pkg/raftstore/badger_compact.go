package raftstore

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3"
)

// Compact implements Store. It writes the new first index and term of index-1 first, then
// deletes every run that ends before index: one tombstone per run, not per entry. The run that
// contains index stays whole; its compacted head is never read (reads start at first) and goes
// when a later Compact passes the run's end. Compact does not fsync: if it is lost in a crash,
// the log merely keeps more entries than needed.
func (b *Badger) Compact(groupID, index uint64) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if err := b.writable(); err != nil {
		return err
	}
	g, _, err := b.peek(groupID)
	if err != nil {
		return err
	}
	st := g.st // only writers change st, and writeMu is held
	if index <= st.first {
		return raft.ErrCompacted
	}
	if index > st.last+1 {
		return fmt.Errorf("raftstore: group %d: compact %d beyond last index %d", groupID, index, st.last)
	}
	prevTerm, err := g.termLocked(index - 1)
	if err != nil {
		return fmt.Errorf("raftstore: group %d: compact: term of %d: %w", groupID, index-1, err)
	}
	starts, err := b.runStarts(groupID, 0, index)
	if err != nil {
		return err
	}
	// Runs before the last one found end before index; the last one holds index unless the
	// whole log is compacted.
	if n := len(starts); n > 0 && index <= st.last {
		starts = starts[:n-1]
	}
	m := meta{first: index, prevTerm: prevTerm}
	w := b.newTxnWriter()
	ops := []op{setOp(groupKey(kindMeta, groupID), m.encode())}
	for _, s := range starts {
		ops = append(ops, delOp(runKey(groupID, s)))
	}
	// Meta first: if the deletes are cut into several transactions and interrupted, the
	// leftover runs lie below the first index, where nothing reads them.
	w.addUnitOrSplit(ops)

	g.mu.Lock()
	defer g.mu.Unlock()
	if err := w.finish(); err != nil {
		b.failed = err
		return fmt.Errorf("raftstore: group %d: compact: %w", groupID, err)
	}
	g.st.first, g.st.prevTerm, g.st.hasMeta = index, prevTerm, true
	g.compactTail(index)
	return nil
}

// Delete implements Store. A whole group is one tombstone per run plus five keys. Badger's
// DropPrefix would avoid the tombstones but it blocks all writes and rewrites the tables that
// hold the prefix, which stalls every other group of the node; deleting runs in batched
// transactions costs little because runs already hold many entries each.
func (b *Badger) Delete(groupID uint64) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if err := b.writable(); err != nil {
		return err
	}
	g, open, err := b.peek(groupID)
	if err != nil {
		return err
	}
	if open {
		// Readers of the open group get ErrClosed from here on, not a log vanishing under them.
		b.mu.Lock()
		delete(b.groups, groupID)
		b.mu.Unlock()
		g.release()
	}
	// State records go first: without them a reloaded group re-applies its log, while
	// records without a log would be orphans.
	if err := b.deleteState(groupID); err != nil {
		return fmt.Errorf("raftstore: group %d: delete state: %w", groupID, err)
	}
	starts, err := b.runStarts(groupID, 0, ^uint64(0))
	if err != nil {
		return err
	}
	var conf confRecord
	if err := b.db.View(func(txn *badger.Txn) error {
		conf, err = readConfRecord(txn, groupID)
		return err
	}); err != nil {
		return fmt.Errorf("raftstore: group %d: delete: %w", groupID, err)
	}
	if g.st.hasMeta || len(starts) > 0 || conf.index > 0 {
		var ops []op
		for _, s := range starts {
			ops = append(ops, delOp(runKey(groupID, s)))
		}
		for _, k := range []byte{kindHard, kindSnapMeta, kindSnapData, kindConf, kindMeta} {
			ops = append(ops, delOp(groupKey(k, groupID)))
		}
		w := b.newTxnWriter()
		if !b.unitFits(ops) {
			// Too many runs for one transaction: first mark the log fully compacted, so that
			// if the deletion is interrupted the group is an empty log, not one with a hole
			// at the front. Runs are then deleted in increasing order (the last run, which
			// fixes the last index, goes last) and the meta key with the final batch.
			lastTerm, err := g.termLocked(g.st.last)
			if err != nil {
				return fmt.Errorf("raftstore: group %d: delete: %w", groupID, err)
			}
			m := meta{first: g.st.last + 1, prevTerm: lastTerm}
			w.addUnit([]op{setOp(groupKey(kindMeta, groupID), m.encode())})
		}
		w.addUnitOrSplit(ops)
		if err := w.finish(); err != nil {
			b.failed = err
			return fmt.Errorf("raftstore: group %d: delete: %w", groupID, err)
		}
		if err := b.sync(); err != nil {
			b.failed = err
			return fmt.Errorf("raftstore: group %d: delete: sync: %w", groupID, err)
		}
	}
	return nil
}
