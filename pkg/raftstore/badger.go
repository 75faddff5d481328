package raftstore

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Badger is a Store keeping all groups of a node in one Badger database (key layout in keys.go).
//
// Memory: an open group costs its positions, its hard state and a bounded cache of its latest
// entries; a released (hibernated) group costs nothing until it is opened again.
//
// Locking: writeMu serializes everything that writes (Save, Compact, Delete, Release, Close and
// the loading of a group). Each open group has its own RWMutex: readers (raft, on any
// goroutine) hold it for reading, including while they read Badger; a write holds it only while
// its transactions commit and its in-memory state changes, so a reader sees one group either
// before or after a Save, never a mix. Badger syncs each commit before it returns
// (SyncWrites), so that includes the sync; a Badger read transaction that starts during a
// commit waits for it too (oracle.readTs), so the lock adds little.
type Badger struct {
	db  *badger.DB
	cfg badgerConfig
	log *slog.Logger

	// Transaction limits mirrored from Badger so Save can cut its batch between groups.
	maxTxnOps, maxTxnBytes, valueThreshold int64

	writeMu sync.Mutex
	failed  error // guarded by writeMu: a commit or sync failed, disk and memory may disagree

	// storeID is the store's identity (see StoreID), fixed once opened.
	storeID uint64

	mu     sync.RWMutex // guards groups and closed
	groups map[uint64]*group
	closed bool

	gcStop chan struct{}
	gcDone chan struct{}
}

var _ Store = (*Badger)(nil)

// OpenBadger opens (or creates) the store in dir.
func OpenBadger(dir string, opts ...BadgerOption) (*Badger, error) {
	cfg := badgerConfig{
		tailEntries: defaultTailEntries,
		tailBytes:   defaultTailBytes,
		gcInterval:  defaultGCInterval,
	}
	for _, o := range opts {
		o(&cfg)
	}
	cfg.vlogSync = new(syncFailure)
	bo := badgerOptions(dir, &cfg)
	if err := removeEmptyFiles(dir); err != nil {
		return nil, err
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("raftstore: open badger in %s: %w", dir, err)
	}
	b := &Badger{
		db:             db,
		cfg:            cfg,
		log:            cfg.logger,
		maxTxnOps:      db.MaxBatchCount(),
		maxTxnBytes:    db.MaxBatchSize(),
		valueThreshold: bo.ValueThreshold,
		groups:         make(map[uint64]*group),
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if cfg.maxTxnOps > 0 {
		// A group's head unit (hard state, snapshot, cut run, meta) must always fit.
		b.maxTxnOps = min(b.maxTxnOps, int64(max(cfg.maxTxnOps, 8)))
	}
	if err := b.checkVersion(); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	if b.storeID, err = b.identity(); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	if cfg.gcInterval > 0 {
		b.gcStop, b.gcDone = make(chan struct{}), make(chan struct{})
		go b.gcLoop(cfg.gcInterval)
	}
	return b, nil
}

// removeEmptyFiles deletes memtable WAL (.mem) and value log (.vlog) files of size zero.
// Badger (v4.9.6) creates both kinds at open, then sizes them with ftruncate, and syncs
// neither until the first write to them; a power failure in between can leave the name
// without the size, and Badger then refuses to open the directory ("Create a new file"). Such
// a file holds no write, and no value pointer can point into it, so removing it loses
// nothing. The power-loss tests reach both states (make verify FAULTS=powerloss found the
// value log one).
func removeEmptyFiles(dir string) error {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	for _, de := range des {
		if ext := filepath.Ext(de.Name()); !de.Type().IsRegular() || ext != ".mem" && ext != ".vlog" {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			return fmt.Errorf("raftstore: %w", err)
		}
		if fi.Size() == 0 {
			if err := os.Remove(filepath.Join(dir, de.Name())); err != nil {
				return fmt.Errorf("raftstore: remove empty %s: %w", de.Name(), err)
			}
		}
	}
	return nil
}

func (b *Badger) checkVersion() error {
	var v []byte
	err := b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(versionKey)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		if err := b.db.Update(func(txn *badger.Txn) error {
			return txn.Set(versionKey, []byte{formatVersion})
		}); err != nil {
			return fmt.Errorf("raftstore: write format version: %w", err)
		}
		return b.sync()
	case err != nil:
		return fmt.Errorf("raftstore: read format version: %w", err)
	case len(v) != 1 || v[0] != formatVersion:
		return fmt.Errorf("raftstore: database format %x, want %d", v, formatVersion)
	}
	return nil
}

// StoreID identifies this store: a random non-zero number created with it (or, for a store
// made before ids existed, at its first open since) and kept for its life. A node whose
// directory was wiped or whose disk was replaced comes back with another id, which is how the
// rest of the cluster learns that the raft state this node had promised (votes, acknowledged
// entries) is gone.
func (b *Badger) StoreID() uint64 { return b.storeID }

// identity reads the store id, creating it on first use.
func (b *Badger) identity() (uint64, error) {
	var v []byte
	err := b.db.View(func(txn *badger.Txn) error {
		var err error
		v, err = getValue(txn, storeIDKey)
		return err
	})
	switch {
	case err != nil:
		return 0, fmt.Errorf("raftstore: read store id: %w", err)
	case v != nil && len(v) != 8:
		return 0, fmt.Errorf("raftstore: store id of %d bytes, want 8", len(v))
	case v != nil:
		return binary.BigEndian.Uint64(v), nil
	}
	id, err := newStoreID()
	if err != nil {
		return 0, err
	}
	if err := b.db.Update(func(txn *badger.Txn) error {
		return txn.Set(storeIDKey, binary.BigEndian.AppendUint64(nil, id))
	}); err != nil {
		return 0, fmt.Errorf("raftstore: write store id: %w", err)
	}
	return id, b.sync()
}

// newStoreID draws a random non-zero id: 64 random bits make two stores of one cluster
// sharing an id practically impossible.
func newStoreID() (uint64, error) {
	var buf [8]byte
	for {
		if _, err := rand.Read(buf[:]); err != nil {
			return 0, fmt.Errorf("raftstore: store id: %w", err)
		}
		if id := binary.BigEndian.Uint64(buf[:]); id != 0 {
			return id, nil
		}
	}
}

// gcLoop reclaims value-log space of deleted runs and snapshots. RunValueLogGC rewrites at most
// one file per call, so it is repeated while it finds work.
func (b *Badger) gcLoop(every time.Duration) {
	defer close(b.gcDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.gcStop:
			return
		case <-t.C:
		}
		for {
			err := b.db.RunValueLogGC(0.5)
			if err != nil {
				if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
					b.log.Warn("raftstore: value log gc", "err", err)
				}
				break
			}
			select {
			case <-b.gcStop:
				return
			default:
			}
		}
	}
}

// sync is called after commits that must be durable. With SyncWrites (the default) Badger has
// synced them before their commit returned: what is left is to check the one sync failure
// Badger does not return. Only the legacy mode of the power-loss test syncs here, as the store
// once did, which leaves the WAL of a rotated memtable unsynced.
func (b *Badger) sync() error {
	if err := b.cfg.vlogSync.get(); err != nil {
		return err
	}
	if b.cfg.legacySync {
		return b.db.Sync()
	}
	return nil
}

// writable is called with writeMu held.
func (b *Badger) writable() error {
	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if b.failed != nil {
		return fmt.Errorf("raftstore: store failed earlier: %w", b.failed)
	}
	return nil
}

// Open implements Store.
func (b *Badger) Open(groupID uint64) (Log, error) {
	b.mu.Lock()
	g, closed := b.groups[groupID], b.closed
	if g != nil && !closed {
		g.refs++
	}
	b.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if g != nil {
		return g, nil
	}
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	g, err := b.openLocked(groupID)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	g.refs++
	b.mu.Unlock()
	return g, nil
}

// openLocked returns the open group, loading it if needed. writeMu must be held.
func (b *Badger) openLocked(id uint64) (*group, error) {
	if err := b.writable(); err != nil {
		return nil, err
	}
	b.mu.RLock()
	g := b.groups[id]
	b.mu.RUnlock()
	if g != nil {
		return g, nil
	}
	g, err := b.load(id)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.groups[id] = g
	b.mu.Unlock()
	return g, nil
}

// peek returns the open group or, for Compact and Delete of a released group, a loaded copy
// that is not kept (so those calls do not bring a hibernated group back into memory).
func (b *Badger) peek(id uint64) (g *group, open bool, err error) {
	b.mu.RLock()
	g = b.groups[id]
	b.mu.RUnlock()
	if g != nil {
		return g, true, nil
	}
	g, err = b.load(id)
	return g, false, err
}

// load reads a group's positions from disk. writeMu must be held.
func (b *Badger) load(id uint64) (*group, error) {
	g := &group{store: b, id: id}
	st := groupState{first: 1}
	var m meta
	var lastStart uint64
	var lastRun []byte
	err := b.db.View(func(txn *badger.Txn) error {
		v, err := getValue(txn, groupKey(kindMeta, id))
		if err != nil {
			return err
		}
		if v != nil {
			if m, err = decodeMeta(v); err != nil {
				return err
			}
			st.hasMeta, st.first, st.prevTerm = true, m.first, m.prevTerm
		}
		if v, err = getValue(txn, groupKey(kindHard, id)); err != nil {
			return err
		}
		if v != nil {
			if st.disk, err = decodeHardState(v); err != nil {
				return err
			}
			st.hs = st.disk
		}
		if v, err = getValue(txn, groupKey(kindSnapMeta, id)); err != nil {
			return err
		}
		if v != nil {
			sm := new(raftpb.SnapshotMetadata)
			if err := proto.Unmarshal(v, sm); err != nil {
				return fmt.Errorf("snapshot metadata: %w", err)
			}
			st.snap = raftpb.EnsureSnapshotMetadata(sm)
		}
		lastStart, lastRun, err = findRun(txn, id, ^uint64(0))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raftstore: group %d: load: %w", id, err)
	}
	if m.limit != 0 {
		if err := b.recover(id, m); err != nil {
			return nil, err
		}
		return b.load(id)
	}
	st.last = st.first - 1
	if lastRun != nil {
		ents, err := decodeRun(lastRun, lastStart)
		if err != nil {
			return nil, fmt.Errorf("raftstore: group %d: run %d: %w", id, lastStart, err)
		}
		if end := lastStart + uint64(len(ents)) - 1; end > st.last {
			st.last = end
			// Seed the cache with the newest run: raft reads the last term on start.
			if lastStart < st.first {
				ents = ents[st.first-lastStart:]
			}
			g.appendTail(ents)
		}
	}
	g.st = st
	return g, nil
}

// recover finishes an update that did not fit one transaction and was interrupted (see
// plan.write): the log ends at m.limit-1, runs from m.limit on are leftovers.
func (b *Badger) recover(id uint64, m meta) error {
	b.log.Warn("raftstore: finishing an interrupted update", "group", id, "limit", m.limit)
	starts, err := b.runStarts(id, m.limit, ^uint64(0))
	if err != nil {
		return err
	}
	w := b.newTxnWriter()
	for _, s := range starts {
		w.add(delOp(runKey(id, s)))
	}
	cut, err := b.cutRun(id, m.limit)
	if err != nil {
		return err
	}
	if cut != nil {
		w.add(*cut)
	}
	m.limit = 0
	w.add(setOp(groupKey(kindMeta, id), m.encode()))
	if err := w.finish(); err != nil {
		return fmt.Errorf("raftstore: group %d: recover: %w", id, err)
	}
	if err := b.sync(); err != nil {
		return fmt.Errorf("raftstore: group %d: recover: sync: %w", id, err)
	}
	return nil
}

// Release implements Store. It persists a commit index that moved without a term or vote change
// (see Save), without an fsync: the commit index only needs to be a lower bound.
func (b *Badger) Release(groupID uint64) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	b.mu.Lock()
	g := b.groups[groupID]
	if g != nil {
		if g.refs--; g.refs > 0 {
			b.mu.Unlock()
			return // another holder still uses the log
		}
	}
	delete(b.groups, groupID)
	closed := b.closed
	b.mu.Unlock()
	if g == nil {
		return
	}
	st := g.release()
	if closed || b.failed != nil {
		return
	}
	if o, ok := st.lazyCommitOp(groupID); ok {
		w := b.newTxnWriter()
		w.add(o)
		if err := w.finish(); err != nil {
			b.log.Warn("raftstore: persist commit index on release", "group", groupID, "err", err)
		}
	}
}

// Groups implements Store. It scans only the small per-group 'm' keys.
func (b *Badger) Groups() ([]uint64, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, ErrClosed
	}
	var ids []uint64
	err := b.db.View(func(txn *badger.Txn) error {
		prefix := []byte{kindMeta}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			id, err := parseGroupKey(it.Item().Key())
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("raftstore: list groups: %w", err)
	}
	return ids, nil
}

// Close implements Store. Commit indexes kept only in memory are written first (Badger's Close
// flushes them to disk).
func (b *Badger) Close() error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	groups := b.groups
	b.groups = nil
	b.mu.Unlock()

	var errs []error
	w := b.newTxnWriter()
	for id, g := range groups {
		st := g.release()
		if o, ok := st.lazyCommitOp(id); ok && b.failed == nil {
			w.add(o)
		}
	}
	if err := w.finish(); err != nil {
		errs = append(errs, fmt.Errorf("raftstore: close: persist commit indexes: %w", err))
	}
	if b.gcStop != nil {
		close(b.gcStop)
		<-b.gcDone
	}
	if err := b.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("raftstore: close badger: %w", err))
	}
	return errors.Join(errs...)
}

// getValue returns a copy of key's value, or nil if it does not exist.
func getValue(txn *badger.Txn, key []byte) ([]byte, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v, err := item.ValueCopy(nil)
	if err == nil && v == nil {
		v = []byte{}
	}
	return v, err
}

// memStats reports what open groups cost: how many there are, and the entries and bytes held
// in their caches. A released group is in none of these.
func (b *Badger) memStats() (groups, entries, bytes int) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, g := range b.groups {
		g.mu.RLock()
		entries += len(g.tail)
		bytes += g.tailBytes
		g.mu.RUnlock()
	}
	return len(b.groups), entries, bytes
}
