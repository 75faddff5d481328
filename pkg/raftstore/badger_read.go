package raftstore

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Runs of a group are contiguous and never overlap: the run starting at s holds [s, next run's
// start). Only the first run may start below the first index (Compact keeps it whole). The run
// holding index i is therefore the one with the largest start <= i: a reverse seek.

var errCorrupt = errors.New("raftstore: corrupt log")

// findRun returns the start and a copy of the value of the run with the largest start <= i, or
// a nil value if there is none.
func findRun(txn *badger.Txn, group, i uint64) (uint64, []byte, error) {
	prefix := runPrefix(group)
	it := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: prefix})
	defer it.Close()
	it.Seek(runKey(group, i))
	if !it.ValidForPrefix(prefix) {
		return 0, nil, nil
	}
	item := it.Item()
	start, err := parseRunKey(item.Key())
	if err != nil {
		return 0, nil, err
	}
	v, err := item.ValueCopy(nil)
	return start, v, err
}

// readEntries reads [lo, hi) of a group, at least one entry and no more than maxSize bytes
// after the first (raft's rule). The caller has checked the range against the group's bounds.
func (b *Badger) readEntries(group, lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	txn := b.db.NewTransaction(false)
	defer txn.Discard()
	start, first, err := findRun(txn, group, lo)
	if err != nil {
		return nil, err
	}
	if first == nil {
		return nil, fmt.Errorf("%w: no run holds index %d", errCorrupt, lo)
	}
	out := make([]*raftpb.Entry, 0, min(hi-lo, 64))
	eb := newEntryBuilder(int(min(hi-lo, 64)))
	var size uint64
	next := lo // next index wanted
	// take decodes one run; it returns true when the read is complete.
	take := func(start uint64, v []byte) (bool, error) {
		r, err := newRunReader(v)
		if err != nil {
			return false, fmt.Errorf("run %d: %w", start, err)
		}
		if start > next || start+r.count <= next {
			return false, fmt.Errorf("%w: run %d of %d entries does not hold index %d", errCorrupt, start, r.count, next)
		}
		for idx := start; idx < start+r.count; idx++ {
			re, err := r.next()
			if err != nil {
				return false, fmt.Errorf("run %d: %w", start, err)
			}
			if idx < next {
				continue
			}
			e := eb.build(re, idx)
			size += uint64(proto.Size(e))
			if len(out) > 0 && size > maxSize {
				return true, nil
			}
			out = append(out, e)
			next++
			if next == hi {
				return true, nil
			}
		}
		return false, nil
	}
	done, err := take(start, first)
	if err != nil || done {
		return out, err
	}
	prefix := runPrefix(group)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(runKey(group, start+1)); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		s, err := parseRunKey(item.Key())
		if err != nil {
			return nil, err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return nil, err
		}
		if done, err = take(s, v); err != nil || done {
			return out, err
		}
	}
	return nil, fmt.Errorf("%w: entries from %d missing", errCorrupt, next)
}

// readTerm returns the term of entry i from disk.
func (b *Badger) readTerm(group, i uint64) (uint64, error) {
	txn := b.db.NewTransaction(false)
	defer txn.Discard()
	start, v, err := findRun(txn, group, i)
	if err != nil {
		return 0, err
	}
	if v == nil {
		return 0, fmt.Errorf("%w: no run holds index %d", errCorrupt, i)
	}
	r, err := newRunReader(v)
	if err != nil {
		return 0, fmt.Errorf("run %d: %w", start, err)
	}
	if i-start >= r.count {
		return 0, fmt.Errorf("%w: run %d of %d entries does not hold index %d", errCorrupt, start, r.count, i)
	}
	for range i - start {
		if _, err := r.next(); err != nil {
			return 0, fmt.Errorf("run %d: %w", start, err)
		}
	}
	re, err := r.next()
	if err != nil {
		return 0, fmt.Errorf("run %d: %w", start, err)
	}
	return re.term, nil
}

// runStarts lists the starts of a group's runs in [from, to], reading keys only.
func (b *Badger) runStarts(group, from, to uint64) ([]uint64, error) {
	var starts []uint64
	err := b.db.View(func(txn *badger.Txn) error {
		prefix := runPrefix(group)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(runKey(group, from)); it.ValidForPrefix(prefix); it.Next() {
			s, err := parseRunKey(it.Item().Key())
			if err != nil {
				return err
			}
			if s > to {
				break
			}
			starts = append(starts, s)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("raftstore: group %d: list runs: %w", group, err)
	}
	return starts, nil
}

// cutRun returns the write that shortens the run holding index at-1 so that it ends there, or
// nil if no run crosses from below at to at or beyond.
func (b *Badger) cutRun(group, at uint64) (*op, error) {
	if at <= 1 {
		return nil, nil
	}
	var start uint64
	var v []byte
	err := b.db.View(func(txn *badger.Txn) error {
		var err error
		start, v, err = findRun(txn, group, at-1)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raftstore: group %d: find run of %d: %w", group, at-1, err)
	}
	if v == nil {
		return nil, nil
	}
	ents, err := decodeRun(v, start)
	if err != nil {
		return nil, fmt.Errorf("raftstore: group %d: run %d: %w", group, start, err)
	}
	if start+uint64(len(ents)) <= at {
		return nil, nil // ends before at
	}
	o := setOp(runKey(group, start), encodeRun(ents[:at-start]))
	return &o, nil
}
