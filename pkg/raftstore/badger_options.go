package raftstore

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// BadgerOption configures OpenBadger.
type BadgerOption func(*badgerConfig)

type badgerConfig struct {
	logger      *slog.Logger
	tailEntries int
	tailBytes   int
	gcInterval  time.Duration
	tune        func(*badger.Options)
	// maxTxnOps, when positive, caps the operations per Badger transaction below Badger's own
	// limit; tests use it to exercise updates that span transactions.
	maxTxnOps int
	// vlogSync records a value log sync failure Badger only logs (see badgerLogger).
	vlogSync *syncFailure
	// legacySync restores the unsafe durability of earlier versions (SyncWrites off, one
	// db.Sync() per Save) so that the power-loss test can show it loses acknowledged writes.
	// Tests only.
	legacySync bool
}

const (
	defaultTailEntries = 256
	defaultTailBytes   = 1 << 20
	defaultGCInterval  = 5 * time.Minute
	// maxRunBytes bounds one run value, so reading one old entry never decodes more than this.
	maxRunBytes = 256 << 10
)

// WithLogger sends the store's and Badger's messages to l. Badger's info and debug chatter
// (compactions, replays) is logged at debug level. Without this option nothing is logged.
func WithLogger(l *slog.Logger) BadgerOption {
	return func(c *badgerConfig) { c.logger = l }
}

// WithTailCache bounds the per-open-group cache of recently saved entries (defaults: 256
// entries, 1 MiB). Zero disables the cache: every read goes to Badger.
func WithTailCache(entries, bytes int) BadgerOption {
	return func(c *badgerConfig) { c.tailEntries, c.tailBytes = max(entries, 0), max(bytes, 0) }
}

// WithValueLogGC sets how often the value log is garbage collected (default 5 minutes); zero or
// less disables it.
func WithValueLogGC(every time.Duration) BadgerOption {
	return func(c *badgerConfig) { c.gcInterval = every }
}

// WithBadgerTuning lets the caller adjust Badger's options after the store's defaults are set.
// SyncWrites is forced on afterwards: the store's durability rests on it (see badgerOptions).
func WithBadgerTuning(f func(*badger.Options)) BadgerOption {
	return func(c *badgerConfig) { c.tune = f }
}

// badgerOptions are tuned for this workload: many small writes (one run of 128-byte messages per
// group per round), one fsync per round, 2 cores, and logs that are deleted soon after commit.
func badgerOptions(dir string, c *badgerConfig) badger.Options {
	o := badger.DefaultOptions(dir)
	// SyncWrites is the only way to meet Save's contract through Badger's API. Without it a
	// Save's commits could land in a memtable that fills and is rotated before the Save's
	// db.Sync(), which syncs only the current memtable's WAL: rotation does not sync the old
	// WAL (DB.ensureRoomForWrite, v4.9.6), nor does the value log's rotation (doneWriting), so
	// those writes were volatile until Badger flushed the table, yet Save returned. A
	// SaveState on the apply stage could rotate the memtable in that window too. With
	// SyncWrites Badger's write goroutine msyncs the memtable WAL after every commit (before a
	// rotation can happen) and the value log after every batch of commits, before any of them
	// returns. The cost is one sync per Badger transaction, SaveState's included, instead of
	// one per Save: Save still writes as few transactions as it can.
	o.SyncWrites = true
	// Only the newest version of a key is ever read; older ones are garbage for compaction.
	o.NumVersionsToKeep = 1
	// One writer (the append stage) writes blind: conflict detection only costs CPU.
	o.DetectConflicts = false
	// Runs under 4 KiB (up to ~30 messages of 128 bytes) stay in the LSM tree: one write to the
	// memtable WAL, and their deletion is reclaimed by ordinary compaction. Bigger runs (batched
	// entries, snapshots) go to the value log, so flushes and compactions move only their
	// pointers: measured on 2 cores with 12.8 KB entries, 2-3x the throughput of keeping them in
	// the tree (threshold 64 KiB), and no difference for 128-byte entries. The GC loop reclaims
	// the value log; files of 256 MiB instead of 1 GiB turn into pure garbage (raft logs are
	// compacted soon after commit) and are dropped sooner.
	o.ValueThreshold = 4 << 10
	o.ValueLogFileSize = 256 << 20
	// 32 MiB memtables instead of 64: five of them (Badger's default 5 x 64 MiB) is a lot of
	// memory for a node that also hosts thousands of groups, and the log is write-mostly, so a
	// larger memtable buys little. The largest transaction is 15% of it (4.8 MiB); Save splits
	// bigger batches itself.
	o.MemTableSize = 32 << 20
	o.NumMemtables = 3
	// Two compactors on two cores (Badger requires at least two).
	o.NumCompactors = 2
	// Reads are mostly served by the tail cache; the block cache only helps catch-up reads.
	o.BlockCacheSize = 32 << 20
	// Snappy is cheap and chat text compresses; keep Badger's default.
	o.Compression = options.Snappy
	// Badger's metrics are process-global expvars; the store reports its own.
	o.MetricsEnabled = false
	o.Logger = badgerLogger{l: c.logger, vlogSync: c.vlogSync}
	if c.tune != nil {
		c.tune(&o)
	}
	o.Dir, o.ValueDir = dir, dir
	o.SyncWrites = !c.legacySync
	return o
}

// badgerLogger adapts slog to Badger's logger. Badger logs routine work at info level, which
// would drown an application's logs, so info and debug go to debug.
type badgerLogger struct {
	l        *slog.Logger
	vlogSync *syncFailure
}

// vlogSyncFailed is how Badger v4.9.6 reports that msync of the value log failed after a
// batch of commits with SyncWrites on (valueLog.write): it logs this and lets the commits
// succeed. Entries of 4 KiB and more live in the value log, so the store must notice.
const vlogSyncFailed = "Error while curlf sync"

func (b badgerLogger) log(level slog.Level, format string, args ...any) {
	if b.l == nil || !b.l.Enabled(context.Background(), level) {
		return
	}
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	b.l.Log(context.Background(), level, msg, "component", "badger")
}

func (b badgerLogger) Errorf(f string, a ...any) {
	if b.vlogSync != nil && strings.HasPrefix(f, vlogSyncFailed) {
		b.vlogSync.set(fmt.Errorf("badger: value log sync: %s", strings.TrimSpace(fmt.Sprintf(f, a...))))
	}
	b.log(slog.LevelError, f, a...)
}
func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a...) }
func (b badgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a...) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug, f, a...) }

// syncFailure holds the first sync error Badger reported out of band.
type syncFailure struct {
	mu  sync.Mutex
	err error
}

func (s *syncFailure) set(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *syncFailure) get() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
