package replica

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/triarch-io/triarch/pkg/raftstore"
)

// diskStall detects a store whose durable writes stopped returning: a Save (the append stage's
// fsync), SaveSnapshot or SaveState that has been in flight for longer than bound. A replica
// whose disk stalls cannot commit or apply anything, yet its raft heartbeats, which leave from
// the workers without touching the disk, still flow, so neither its peers nor the arbiter would
// otherwise notice. While the detector says stalled the node stops renewing its node lease
// (nodelease.Config.Healthy) and its transport drops everything it would send
// (raftnet.Config.Silenced), so that the arbiter sees what it sees of a crashed node and fails
// its channels over under the ordinary rules (see doc.go, "A stalled disk"). In the spirit of
// CockroachDB's disk-stall detection, where a node's liveness heartbeat waits for a synced
// write.
//
// The clock is injected and nothing here sleeps: check, called on a ticker by the service and
// directly by tests, is what turns a long write into a stall; the end of the last long write
// clears it at once.
type diskStall struct {
	bound time.Duration
	now   func() time.Time
	log   *slog.Logger

	mu       sync.Mutex
	next     uint64
	inflight map[uint64]time.Time // start of every write in flight, by token

	stalled atomic.Bool
}

func newDiskStall(bound time.Duration, now func() time.Time, log *slog.Logger) *diskStall {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &diskStall{bound: bound, now: now, log: log, inflight: make(map[uint64]time.Time)}
}

// Stalled reports what the last check (or the end of a write) found. It is cheap: the
// transport asks on every send.
func (d *diskStall) Stalled() bool { return d.stalled.Load() }

// Healthy is !Stalled, in the shape nodelease.Config.Healthy takes.
func (d *diskStall) Healthy() bool { return !d.Stalled() }

// begin records a write starting now and returns its token for end.
func (d *diskStall) begin() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.next++
	d.inflight[d.next] = d.now()
	return d.next
}

// end records that the write tok returned, and clears the stall unless another write is still
// stuck.
func (d *diskStall) end(tok uint64) {
	d.mu.Lock()
	delete(d.inflight, tok)
	d.mu.Unlock()
	if d.Stalled() {
		d.check()
	}
}

// check marks the store stalled when some write has been in flight for longer than bound, and
// healthy otherwise; it returns the verdict.
func (d *diskStall) check() bool {
	now := d.now()
	d.mu.Lock()
	var oldest time.Duration
	for _, at := range d.inflight {
		oldest = max(oldest, now.Sub(at))
	}
	stalled := d.bound > 0 && oldest > d.bound
	was := d.stalled.Swap(stalled)
	d.mu.Unlock()
	switch {
	case stalled && !was:
		d.log.Error("disk stall: a store write has not returned; not renewing the node lease and not sending to peers until it does",
			"in_flight", oldest, "bound", d.bound)
	case !stalled && was:
		d.log.Warn("disk stall over: store writes return again; renewing the node lease")
	}
	return stalled
}

// watchDiskStall checks d every quarter of its bound until ctx ends, so that a stall is seen at
// most bound/4 after it passes the bound.
func watchDiskStall(ctx context.Context, d *diskStall) error {
	t := time.NewTicker(max(d.bound/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			d.check()
		}
	}
}

// wrap returns s with its durable writes timed by d.
func (d *diskStall) wrap(s Store) Store { return &stallTimedStore{Store: s, d: d} }

// stallTimedStore times the writes that wait for the disk; everything else passes through.
type stallTimedStore struct {
	Store
	d *diskStall
}

func (s *stallTimedStore) Save(updates []raftstore.Update) error {
	defer s.d.end(s.d.begin())
	return s.Store.Save(updates)
}

func (s *stallTimedStore) SaveSnapshot(groupID uint64, snap *raftpb.Snapshot) error {
	defer s.d.end(s.d.begin())
	return s.Store.SaveSnapshot(groupID, snap)
}

func (s *stallTimedStore) SaveState(writes []raftstore.StateWrite) error {
	defer s.d.end(s.d.begin())
	return s.Store.SaveState(writes)
}
