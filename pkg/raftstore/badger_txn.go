package raftstore

import (
	"errors"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// op is one key write or delete.
type op struct {
	key, val []byte
	del      bool
}

func setOp(key, val []byte) op { return op{key: key, val: val} }
func delOp(key []byte) op      { return op{key: key, del: true} }

// opSize mirrors Badger's accounting of a transaction's size (Entry.estimateSizeAndSetThreshold
// plus the 10 bytes checkSize adds for the version): values at or above the value threshold
// only count their 12-byte pointer.
func (b *Badger) opSize(o op) int64 {
	v := int64(len(o.val))
	if v >= b.valueThreshold {
		v = 12
	}
	return int64(len(o.key)) + v + 2 + 10
}

func (b *Badger) unitSize(ops []op) (count, size int64) {
	for _, o := range ops {
		size += b.opSize(o)
	}
	return int64(len(ops)), size
}

// unitFits reports whether ops fit in one (empty) transaction.
func (b *Badger) unitFits(ops []op) bool {
	c, s := b.unitSize(ops)
	return c < b.maxTxnOps && s < b.maxTxnBytes
}

// txnWriter commits a sequence of ops in as few Badger transactions as Badger's size limits
// allow (the WriteBatch idea), but it cuts only between units, so each unit (one group's
// update) is atomic on disk, and it commits asynchronously so transactions pipeline through
// Badger's write loop. Transactions reach the write-ahead log in the order they are committed,
// so after a crash what survives is a prefix of them. Nothing here syncs.
type txnWriter struct {
	b           *Badger
	txn         *badger.Txn
	count, size int64
	commits     int
	broken      bool // an op failed: nothing more is committed

	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

func (b *Badger) newTxnWriter() *txnWriter { return &txnWriter{b: b} }

func (w *txnWriter) fits(count, size int64) bool {
	return w.count+count < w.b.maxTxnOps && w.size+size < w.b.maxTxnBytes
}

// addUnit adds ops to one transaction, starting a new one if they do not fit in the current.
// The caller makes sure they fit in an empty one (unitFits).
func (w *txnWriter) addUnit(ops []op) {
	if len(ops) == 0 {
		return
	}
	if c, s := w.b.unitSize(ops); w.txn != nil && !w.fits(c, s) {
		w.commit()
	}
	for _, o := range ops {
		w.add(o)
	}
}

// addUnitOrSplit adds ops atomically if they fit in a transaction, else in order across as
// many as needed.
func (w *txnWriter) addUnitOrSplit(ops []op) {
	if w.b.unitFits(ops) {
		w.addUnit(ops)
		return
	}
	for _, o := range ops {
		w.add(o)
	}
}

// add adds one op, committing the current transaction first if it is full.
func (w *txnWriter) add(o op) {
	if w.broken {
		return
	}
	s := w.b.opSize(o)
	if w.txn != nil && !w.fits(1, s) {
		w.commit()
	}
	if w.txn == nil {
		w.txn = w.b.db.NewTransaction(true)
		w.count, w.size = 0, 0
	}
	var err error
	if o.del {
		err = w.txn.Delete(o.key)
	} else {
		err = w.txn.Set(o.key, o.val)
	}
	if err != nil {
		// Never commit part of a unit.
		w.txn.Discard()
		w.txn, w.broken = nil, true
		w.fail(err)
		return
	}
	w.count++
	w.size += s
}

func (w *txnWriter) fail(err error) {
	w.mu.Lock()
	w.errs = append(w.errs, err)
	w.mu.Unlock()
}

func (w *txnWriter) commit() {
	if w.txn == nil || w.broken {
		return
	}
	w.wg.Add(1)
	w.txn.CommitWith(func(err error) {
		if err != nil {
			w.fail(err)
		}
		w.wg.Done()
	})
	w.txn = nil
	w.commits++
}

// finish commits what is pending and waits until every transaction is applied (visible to
// readers; not yet synced).
func (w *txnWriter) finish() error {
	w.commit()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return errors.Join(w.errs...)
}
