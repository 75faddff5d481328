package multiraft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Host runs many raft groups of one replica on a fixed set of goroutines. See the package
// documentation.
type Host struct {
	cfg     Config
	log     *slog.Logger
	shards  []*shard
	appends *appendStage
	applies *applyStage
	// snapshotter is the Applier as a Snapshotter, nil if it is not one.
	snapshotter Snapshotter

	// saveMu keeps Store.Save to one caller at a time, as the Store contract asks, when
	// LoadGroups writes bootstrap state while the append stage runs.
	saveMu sync.Mutex
	// lifeMu serialises LoadGroups and UnloadGroup: a group's Log must never be opened by a
	// load while an unload releases it.
	lifeMu sync.Mutex

	running  atomic.Bool
	stopped  chan struct{}
	stopOnce sync.Once

	mu        sync.Mutex // guards fatal and cancelRun
	fatal     error
	cancelRun context.CancelCauseFunc

	// failMu guards failed. The append stage holds it shared from its check of a group to the
	// sends of the group's responses, so that once failGroups returns no acknowledgement of
	// a failed group leaves this node.
	failMu sync.RWMutex
	// failed holds the groups that failed on this host (see Applier.Apply), for good.
	failed map[uint64]*GroupFailedError
	// anyFailed spares the hot paths the lock while no group has failed.
	anyFailed atomic.Bool
}

// New returns a host with no groups. Drive it with Run, or with ProcessRound if
// Config.Manual is set.
func New(cfg Config) (*Host, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &Host{cfg: c, log: c.Logger.With("node", c.NodeID), stopped: make(chan struct{})}
	h.snapshotter, _ = c.Applier.(Snapshotter)
	h.shards = make([]*shard, c.Workers)
	for i := range h.shards {
		h.shards[i] = newShard(h)
	}
	h.appends = newAppendStage(h)
	h.applies = newApplyStage(h)
	return h, nil
}

// NodeID returns this replica's raft id.
func (h *Host) NodeID() uint64 { return h.cfg.NodeID }

func (h *Host) shardFor(groupID uint64) *shard { return h.shards[h.shardIndex(groupID)] }

func (h *Host) shardIndex(groupID uint64) int {
	// Fibonacci hashing spreads sequential group ids evenly over the workers.
	return int((groupID * 0x9E3779B97F4A7C15 >> 32) % uint64(len(h.shards)))
}

// Run drives the host until ctx ends or a storage or apply error stops it: one goroutine per
// worker, one append stage and one apply stage. It returns that error, or nil. The host is
// stopped for good when Run returns: pending proposals fail with ErrStopped. Calls made
// before Run starts wait for it.
func (h *Host) Run(ctx context.Context) error {
	if h.cfg.Manual {
		return errors.New("multiraft: Run on a manual host")
	}
	if h.isStopped() {
		return h.stopErr()
	}
	if !h.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	h.mu.Lock()
	h.cancelRun = cancel
	h.mu.Unlock()

	var wg sync.WaitGroup
	for _, s := range h.shards {
		wg.Go(func() { s.loop(ctx) })
	}
	wg.Go(func() { h.appends.loop(ctx) })
	wg.Go(func() { h.applies.loop(ctx) })
	h.log.InfoContext(ctx, "multiraft host running", "workers", len(h.shards))
	<-ctx.Done()
	wg.Wait()
	h.stop()
	h.log.Info("multiraft host stopped", "err", h.Err())
	return h.Err()
}

// ProcessRound runs one round of every stage inline on a manual host (Config.Manual), for
// deterministic tests: every worker
// takes what it has queued and handles its groups' Readies (sending messages at once), then
// the append stage saves everything queued in as few Saves as its batch limit allows, then
// the apply stage applies everything queued. Storage responses reach the workers in the
// next round. It reports whether anything was done.
//
// On a manual host every method that touches groups runs on the calling goroutine: call
// them all from the goroutine that calls ProcessRound. Step, ReportUnreachable, Tick and
// ProposeAsync only queue, and are safe from any goroutine.
func (h *Host) ProcessRound() (bool, error) {
	if !h.cfg.Manual {
		return false, ErrRunning
	}
	if h.isStopped() {
		return false, h.stopErr()
	}
	worked := false
	for _, s := range h.shards {
		if s.round() {
			worked = true
		}
	}
	if h.Err() != nil {
		h.stop()
		return true, h.stopErr()
	}
	for _, drain := range []func() (bool, error){h.appends.drain, h.applies.drain} {
		for {
			w, err := drain()
			if err != nil {
				h.fail(err)
				h.stop()
				return true, h.stopErr()
			}
			if !w {
				break
			}
			worked = true
		}
	}
	return worked, nil
}

// Err returns the error that stopped the host, if any.
func (h *Host) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fatal
}

func (h *Host) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fatal != nil {
		return
	}
	h.fatal = err
	h.log.Error("multiraft host failed", "err", err)
	if h.cancelRun != nil {
		h.cancelRun(err)
	}
}

func (h *Host) isStopped() bool {
	select {
	case <-h.stopped:
		return true
	default:
		return false
	}
}

func (h *Host) stopErr() error {
	if err := h.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrStopped, err)
	}
	return ErrStopped
}

// stop fails everything pending. It runs once no worker runs any more.
func (h *Host) stop() {
	h.stopOnce.Do(func() {
		err := h.stopErr()
		for _, s := range h.shards {
			s.shutdown(err)
		}
		close(h.stopped)
	})
}

// exec runs fn on the worker that owns shard s: queued to it (and run once Run has started
// it), or inline on a manual host, whose caller is the only goroutine driving it. fn still
// runs if ctx ends first; only the wait is abandoned.
func (h *Host) exec(ctx context.Context, s *shard, fn func() error) error {
	if h.cfg.Manual {
		if h.isStopped() {
			return h.stopErr()
		}
		return fn()
	}
	done := make(chan error, 1)
	if !s.pushOp(func() { done <- fn() }) {
		return h.stopErr()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-h.stopped:
		return h.stopErr()
	}
}

// Tick advances the clock of every group this replica leads, for heartbeats and
// retransmission. Unless Config.SelfElecting, followers and candidates are never ticked, so
// no group ever elects itself; with it, every group is ticked and elects as plain raft does.
// The caller ticks on its own clock (a time.Ticker in the service, directly in tests).
func (h *Host) Tick() {
	for _, s := range h.shards {
		s.addTick()
	}
}

// Step hands messages received from peers to their groups' workers. It only queues and never
// waits for raft work. Messages that are malformed, not addressed to this node, for a group
// not loaded here, or beyond a worker's queue limit are dropped; raft recovers from loss.
func (h *Host) Step(envs ...Envelope) {
	for len(envs) > 0 {
		s := h.shardFor(envs[0].GroupID)
		n := 1
		for n < len(envs) && h.shardFor(envs[n].GroupID) == s {
			n++
		}
		s.pushMsgs(envs[:n])
		envs = envs[n:]
	}
}

// ReportUnreachable tells the group's leader that a message to nodeID was dropped, so it
// probes that follower instead of streaming to it. The Transport calls it.
func (h *Host) ReportUnreachable(groupID, nodeID uint64) {
	h.shardFor(groupID).pushUnreachable(groupID, nodeID)
}
