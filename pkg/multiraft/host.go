package multiraft

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"

	"github.com/triarch-io/triarch/pkg/raftstore"
)

// BootstrapIndex is the log position of a new group's initial configuration. The host
// bootstraps a group by storing a snapshot at this index that holds only the voter set, so
// the first entry of a group's log, and the first entry the Applier sees, is
// BootstrapIndex+1.
const BootstrapIndex uint64 = 1

// GroupSpec names a group and, for a group with no data on this replica yet, how it starts:
// bootstrapped with Voters, or joining a running group.
type GroupSpec struct {
	GroupID uint64
	// Voters bootstraps a brand-new group; it must hold this node and be the same on every
	// replica. It is ignored for a group that already has data (raft's stored
	// configuration is authoritative).
	Voters []uint64
	// Join loads a group this replica is being added to (ProposeConfChange on its leader):
	// with no data here, the group starts with an empty log and no configuration, and
	// learns everything from the leader. It cannot campaign and does nothing until the
	// leader, once the conf change adding it is applied, reaches it: the leader finds
	// nothing in common with the empty log and sends its snapshot (the group's bootstrap
	// state at BootstrapIndex if it was never compacted, which every replica stores alike),
	// then the entries after it, conf changes included, which bring the configuration up to
	// date. Load before proposing the change, so the leader's first messages are not
	// dropped. Join is ignored for a group that already has data, and excludes Voters.
	// Until the leader has reached it, the group has no data: a reload (after UnloadGroup
	// or a restart) must Join again, as bootstrapping it with Voters would give it a
	// history of its own.
	Join bool
	// AdmitToken, when set, loads the group on probation: this replica's place in the
	// group's configuration may be an earlier store's (the node's disk was replaced), whose
	// votes and log this one does not hold, so until it is admitted the group grants no vote,
	// does not campaign or take a leadership transfer, and ignores the commit index of
	// heartbeats (a leader derives it from what it believes this replica holds). It is
	// admitted when it applies a conf change adding this node whose Context equals the token
	// (the leader re-adds a replaced store that way, after removing the old one), or by
	// Admit. Appends stay accepted: what they carry is checked against this log and truly
	// stored here. Ignored for a group already loaded.
	AdmitToken []byte
}

// Status is a snapshot of one group on this replica.
type Status struct {
	GroupID uint64
	NodeID  uint64
	Role    raft.StateType
	Term    uint64
	Vote    uint64
	// Leader is the leader this replica knows of in Term, 0 when none.
	Leader uint64
	// LastIndex and LastTerm are the position of the last entry of the local log, including
	// entries not yet on stable storage.
	LastIndex uint64
	LastTerm  uint64
	Commit    uint64
	Applied   uint64
	// LeadTransferee is the target of a leader transfer in progress, 0 when none.
	LeadTransferee uint64
	// Progress holds every replica's progress, the leader's own included; only on the leader.
	Progress map[uint64]FollowerProgress
	// ConfState is the group's configuration as this replica applies it: voters, learners
	// and, in a joint configuration, the outgoing voters. A copy.
	ConfState *raftpb.ConfState
	// OnProbation is set while the group waits to be admitted (GroupSpec.AdmitToken).
	OnProbation bool
	// LastAcked is when each peer last answered this leader's appends or heartbeats in its
	// current term (by this host's monotonic clock); only on the leader.
	LastAcked map[uint64]time.Time
}

// FollowerProgress is the leader's view of one replica.
type FollowerProgress struct {
	Match   uint64
	Next    uint64
	State   tracker.StateType
	Learner bool
}

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

// failGroups fails groups alone (see Applier.Apply): it records them, so that the stages
// drop their work from now on, and has their workers drop them.
func (h *Host) failGroups(fs []*GroupFailedError) {
	var fresh []*GroupFailedError
	h.failMu.Lock()
	if h.failed == nil {
		h.failed = make(map[uint64]*GroupFailedError)
	}
	for _, f := range fs {
		if h.failed[f.GroupID] == nil {
			h.failed[f.GroupID] = f
			fresh = append(fresh, f)
		}
	}
	h.anyFailed.Store(len(h.failed) > 0)
	h.failMu.Unlock()
	for _, f := range fresh {
		h.log.Error("raft group failed: it no longer applies, votes or acknowledges on this node, and stays unloaded",
			"group", f.GroupID, "index", f.Index, "err", f.Err)
		s := h.shardFor(f.GroupID)
		// The worker also drops it on its next touch of the group, whichever comes first.
		s.pushOp(func() { s.dropFailed(f.GroupID) })
	}
}

// failure returns the failure of a group, nil if it has not failed.
func (h *Host) failure(groupID uint64) *GroupFailedError {
	if !h.anyFailed.Load() {
		return nil
	}
	h.failMu.RLock()
	defer h.failMu.RUnlock()
	return h.failed[groupID]
}

// Failure returns the *GroupFailedError of a group that failed on this host (see
// Applier.Apply), or nil. A failed group stays failed until the process exits or
// ResetGroup discards it.
func (h *Host) Failure(groupID uint64) error {
	if f := h.failure(groupID); f != nil {
		return f
	}
	return nil
}

// forgetFailure ends the failure of a group whose data ResetGroup deleted.
func (h *Host) forgetFailure(groupID uint64) {
	h.failMu.Lock()
	defer h.failMu.Unlock()
	delete(h.failed, groupID)
	h.anyFailed.Store(len(h.failed) > 0)
}

// ResetGroup discards this replica's copy of a group that failed here (see Applier.Apply):
// its log, hard state, snapshot, configuration and state records go, and the failure is
// forgotten, so that the group can be loaded again, with GroupSpec.Join and an AdmitToken:
// its copy is gone, and the votes and entries the configuration counts on it for with it.
// Anything of the group queued in the stages before the reset is handled, or dropped as
// failed, before its data goes. Resetting a group that has not failed is refused: a copy
// that serves must not vanish under its peers.
//
// The caller must make sure, before calling, that a restart cannot load the group without
// Join (the replica keeps its own mark): a crash between the delete and the rejoin would
// otherwise bootstrap an empty log as a voter.
func (h *Host) ResetGroup(ctx context.Context, groupID uint64) error {
	if h.failure(groupID) == nil {
		return fmt.Errorf("multiraft: reset group %d: %w", groupID, ErrNotFailed)
	}
	s := h.shardFor(groupID)
	done := make(chan error, 1)
	// From the worker: the group is dropped there first, so nothing more of it is queued
	// behind the reset.
	if err := h.exec(ctx, s, func() error {
		s.dropFailed(groupID)
		h.appends.push([]appendTask{{group: groupID, reset: &resetTask{done: done}}})
		return nil
	}); err != nil {
		return fmt.Errorf("multiraft: reset group %d: %w", groupID, err)
	}
	if h.cfg.Manual {
		// The caller is the goroutine that runs the rounds (see ProcessRound): the reset
		// reaches the worker again in the round after the stages' drains.
		for len(done) == 0 {
			if _, err := h.ProcessRound(); err != nil {
				return fmt.Errorf("multiraft: reset group %d: %w", groupID, err)
			}
		}
	}
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("multiraft: reset group %d: delete: %w", groupID, err)
		}
		h.log.Warn("raft group reset: its copy here was discarded; it may join again", "group", groupID)
		return nil
	case <-h.stopped:
		return fmt.Errorf("multiraft: reset group %d: %w", groupID, ErrStopped)
	case <-ctx.Done():
		return fmt.Errorf("multiraft: reset group %d: %w", groupID, ctx.Err())
	}
}

// FailedGroups lists the groups that failed on this host, in increasing order.
func (h *Host) FailedGroups() []uint64 {
	h.failMu.RLock()
	defer h.failMu.RUnlock()
	ids := slices.Collect(maps.Keys(h.failed))
	slices.Sort(ids)
	return ids
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

// LoadGroup loads one group; see LoadGroups.
func (h *Host) LoadGroup(ctx context.Context, spec GroupSpec) error {
	return h.LoadGroups(ctx, []GroupSpec{spec})
}

// LoadGroups loads groups into memory. A group with no data on this replica is bootstrapped
// with spec.Voters (the bootstrap state of all new groups is written in one Store.Save
// before they start), or starts empty with spec.Join. A group with data is restored from
// the Store with its newest recorded configuration, and the Applier resumes after what it
// reports applied; an Applier behind the log's compaction point is first restored from the
// stored snapshot (Snapshotter). Loading a loaded group does nothing. A group that failed on
// this host (see Applier.Apply) is refused with its *GroupFailedError. Groups that fail are
// reported together; the others are loaded.
func (h *Host) LoadGroups(ctx context.Context, specs []GroupSpec) error {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()

	ids := make([]uint64, 0, len(specs))
	for _, sp := range specs {
		ids = append(ids, sp.GroupID)
	}
	loaded, err := h.loadedAmong(ctx, ids)
	if err != nil {
		return err
	}

	type opened struct {
		id    uint64
		log   raftstore.Log
		admit []byte
	}
	var (
		errs  []error
		todo  []opened
		boots []raftstore.Update
	)
	seen := make(map[uint64]bool, len(specs))
	for _, sp := range specs {
		if seen[sp.GroupID] {
			continue
		}
		seen[sp.GroupID] = true
		if f := h.failure(sp.GroupID); f != nil {
			// Loading it again would apply past the entry it failed on, or fail again. A
			// group failed but not dropped yet by its worker also counts as failed, not loaded.
			errs = append(errs, f)
			continue
		}
		if loaded[sp.GroupID] {
			continue
		}
		if sp.GroupID == 0 {
			errs = append(errs, errors.New("multiraft: group id 0"))
			continue
		}
		log, err := h.cfg.Store.Open(sp.GroupID)
		if err != nil {
			errs = append(errs, fmt.Errorf("multiraft: group %d: open: %w", sp.GroupID, err))
			continue
		}
		empty, err := isEmptyLog(log)
		if err == nil && sp.Join && len(sp.Voters) > 0 {
			err = fmt.Errorf("join: voters %v given to a group that joins", sp.Voters)
		}
		if err == nil && empty && !sp.Join {
			var boot raftstore.Update
			if boot, err = h.bootstrapUpdate(sp); err == nil {
				boots = append(boots, boot)
			}
		}
		if err != nil {
			h.cfg.Store.Release(sp.GroupID)
			errs = append(errs, fmt.Errorf("multiraft: group %d: %w", sp.GroupID, err))
			continue
		}
		todo = append(todo, opened{sp.GroupID, log, slices.Clone(sp.AdmitToken)})
	}

	if len(boots) > 0 {
		h.saveMu.Lock()
		err := h.cfg.Store.Save(boots)
		h.saveMu.Unlock()
		if err != nil {
			for _, o := range todo {
				h.cfg.Store.Release(o.id)
			}
			return errors.Join(append(errs, fmt.Errorf("multiraft: bootstrap %d groups: %w", len(boots), err))...)
		}
	}

	perShard := make(map[*shard][]*group)
	for _, o := range todo {
		g, err := h.newGroup(o.id, o.log)
		if err != nil {
			h.cfg.Store.Release(o.id)
			errs = append(errs, err)
			continue
		}
		g.admit, g.probeCredit = o.admit, true
		s := h.shardFor(o.id)
		perShard[s] = append(perShard[s], g)
	}
	for _, s := range h.shards {
		gs := perShard[s]
		if len(gs) == 0 {
			continue
		}
		if err := h.exec(ctx, s, func() error { s.install(gs); return nil }); err != nil {
			// The install may still run later; the groups then load as asked.
			errs = append(errs, fmt.Errorf("multiraft: install %d groups: %w", len(gs), err))
		}
	}
	h.log.DebugContext(ctx, "groups loaded", "groups", len(todo), "bootstrapped", len(boots))
	return errors.Join(errs...)
}

func (h *Host) loadedAmong(ctx context.Context, ids []uint64) (map[uint64]bool, error) {
	byShard := make(map[*shard][]uint64)
	for _, id := range ids {
		s := h.shardFor(id)
		byShard[s] = append(byShard[s], id)
	}
	loaded := make(map[uint64]bool)
	for s, ids := range byShard {
		var found []uint64
		err := h.exec(ctx, s, func() error {
			for _, id := range ids {
				if s.groups[id] != nil {
					found = append(found, id)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, id := range found {
			loaded[id] = true
		}
	}
	return loaded, nil
}

// bootstrapUpdate writes a new group's voters as the ConfState of a snapshot at
// BootstrapIndex, with term 1. Every replica writes the very same state, so the logs agree
// at BootstrapIndex without any entry, and raft restores the voters from the Store on every
// reload (conf change entries in the log would only be replayed from the log, which a
// reload that resumes after the applied index skips).
func (h *Host) bootstrapUpdate(sp GroupSpec) (raftstore.Update, error) {
	voters := slices.Clone(sp.Voters)
	slices.Sort(voters)
	voters = slices.Compact(voters)
	if len(voters) == 0 || voters[0] == 0 {
		return raftstore.Update{}, fmt.Errorf("bootstrap: invalid voters %v", sp.Voters)
	}
	if _, ok := slices.BinarySearch(voters, h.cfg.NodeID); !ok {
		return raftstore.Update{}, fmt.Errorf("bootstrap: node %d not among voters %v", h.cfg.NodeID, voters)
	}
	return raftstore.Update{
		GroupID:   sp.GroupID,
		HardState: &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(BootstrapIndex)},
		Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
			Index:     proto.Uint64(BootstrapIndex),
			Term:      proto.Uint64(1),
			ConfState: &raftpb.ConfState{Voters: voters},
		}},
	}, nil
}

func isEmptyLog(log raftstore.Log) (bool, error) {
	hs, cs, err := log.InitialState()
	if err != nil {
		return false, fmt.Errorf("initial state: %w", err)
	}
	last, err := log.LastIndex()
	if err != nil {
		return false, fmt.Errorf("last index: %w", err)
	}
	return raft.IsEmptyHardState(hs) && last == 0 && len(cs.GetVoters()) == 0 && len(cs.GetLearners()) == 0, nil
}

// UnloadGroup drops a group from memory (hibernation) and releases it in the Store; its data
// stays there and LoadGroup brings it back. It is refused with ErrNotQuiescent unless the
// group is at rest: nothing in flight in the stages, no proposal pending, everything
// committed and applied, and on the leader every replica's log matching to the last index.
//
// The group's configuration as of its applied index is recorded in the Store first (unless
// already recorded), so that the reload resumes right there instead of replaying the
// entries since the last record.
func (h *Host) UnloadGroup(ctx context.Context, groupID uint64) error {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	s := h.shardFor(groupID)
	var rec *confRecord
	err := h.exec(ctx, s, func() (err error) {
		rec, err = s.unload(groupID)
		return err
	})
	if err != nil {
		// rec may still be written by an op that ran late; do not read it.
		return err
	}
	if rec != nil {
		if err := h.cfg.Store.SaveConfState(groupID, rec.index, rec.cs); err != nil {
			// Without the record a reload replays from an older one: slower, as correct.
			h.log.WarnContext(ctx, "record configuration on unload", "group", groupID, "err", err)
		}
	}
	h.cfg.Store.Release(groupID)
	return nil
}

// Campaign orders the local replica to campaign for leadership of the group, the only way
// besides a leader transfer for a group to elect anyone. It returns once raft has taken the
// order (the election itself completes as messages flow) and fails with ErrCampaignIgnored
// when raft ignored it. Raft still guards safety: a replica whose log is behind a majority's
// loses the pre-vote and goes back to follower.
func (h *Host) Campaign(ctx context.Context, groupID uint64) error {
	s := h.shardFor(groupID)
	return h.exec(ctx, s, func() error { return s.campaign(groupID) })
}

// ReadIndex asks this replica, which must lead the group, to confirm with a quorum of the
// group that it still leads (raft's ReadIndex, ReadOnlySafe) and returns the commit index as
// of the request: once the Applier has applied up to it, a read of the state machine reflects
// every write acknowledged anywhere before the request began. A leader that another replica
// deposed without its knowing (a higher term elected behind its back) gets no confirmation
// from that quorum, and a new leader none until an entry of its own term is committed. Reads
// of a group queued in the same round share one confirmation (one heartbeat to each peer). It
// fails with *NotLeaderError on a replica that does not lead and with ErrLeadershipLost if it
// stops leading before the confirmation; one never confirmed waits until ctx ends.
func (h *Host) ReadIndex(ctx context.Context, groupID uint64) (uint64, error) {
	return h.ReadIndexAsync(groupID).Wait(ctx)
}

// ReadIndexAsync queues a ReadIndex and returns at once; the result is the handle's.
func (h *Host) ReadIndexAsync(groupID uint64) *Proposal {
	p := newProposal(groupID, nil)
	s := h.shardFor(groupID)
	if !s.pushOp(func() { s.readIndex(groupID, p) }) {
		p.finish(0, h.stopErr())
	}
	return p
}

// StoreToken is the AdmitToken of a store: its id, 8 bytes big-endian. The replica and the
// arbiter load a joining store with it, and their leaders put it in the conf changes that add
// the store back, so the two sides agree on one encoding.
func StoreToken(storeID uint64) []byte { return binary.BigEndian.AppendUint64(nil, storeID) }

// catchUpPoll is how often WaitCaughtUp looks at the node's progress.
const catchUpPoll = 5 * time.Millisecond

// WaitCaughtUp waits, on the group's leader (this replica), until node's log reaches the
// leader's last index as it was when the wait began: node then holds everything committed so
// far and follows the rest like any follower, so making it a voter cannot make a quorum
// depend on a replica far behind. It fails with *NotLeaderError once this replica does not
// lead, and with ctx's error naming where node got to.
func (h *Host) WaitCaughtUp(ctx context.Context, groupID, node uint64) error {
	st, err := h.Status(ctx, groupID)
	if err != nil {
		return err
	}
	target := st.LastIndex
	t := time.NewTicker(catchUpPoll)
	defer t.Stop()
	for {
		if st.Leader != h.cfg.NodeID {
			return &NotLeaderError{GroupID: groupID, LeaderID: st.Leader, Term: st.Term}
		}
		if p, ok := st.Progress[node]; ok && p.Match >= target {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("multiraft: group %d: node %d catching up (at %d of %d): %w",
				groupID, node, st.Progress[node].Match, target, ctx.Err())
		case <-t.C:
		}
		if st, err = h.Status(ctx, groupID); err != nil {
			return err
		}
	}
}

// Admit ends the probation of a group loaded with GroupSpec.AdmitToken: the caller learned
// that this replica's store is the one the group's configuration counts (the control tier
// recorded it). Admitting a group not on probation does nothing.
func (h *Host) Admit(ctx context.Context, groupID uint64) error {
	s := h.shardFor(groupID)
	return h.exec(ctx, s, func() error {
		g, err := s.lookup(groupID)
		if err != nil {
			return err
		}
		if g.admit != nil {
			g.admit = nil
			h.log.InfoContext(ctx, "replica admitted to its group by the control tier", "group", groupID)
		}
		return nil
	})
}

// Campaigns is Campaign for many groups, with one queued operation per shard instead of one
// per group: an ordered failover campaigns thousands of groups on a node at once, and waiting
// for the worker once per group would take longer than the elections. The result holds an
// error for each group whose order failed.
func (h *Host) Campaigns(ctx context.Context, groupIDs []uint64) (map[uint64]error, error) {
	return collect(ctx, h, groupIDs, func(s *shard, id uint64) (error, bool) {
		err := s.campaign(id)
		return err, err != nil
	})
}

// Statuses is Status for many groups, one queued operation per shard (see Campaigns). Groups
// not loaded here are missing from the result.
func (h *Host) Statuses(ctx context.Context, groupIDs []uint64) (map[uint64]Status, error) {
	return collect(ctx, h, groupIDs, func(s *shard, id uint64) (Status, bool) {
		st, err := s.status(id)
		return st, err == nil
	})
}

// collect runs get for every group on its shard's worker, all shards at once, and gathers the
// values get reports.
func collect[V any](ctx context.Context, h *Host, groupIDs []uint64, get func(s *shard, id uint64) (V, bool)) (map[uint64]V, error) {
	var (
		mu  sync.Mutex
		out = make(map[uint64]V, len(groupIDs))
	)
	err := h.perShard(ctx, groupIDs, func(s *shard, ids []uint64) func() error {
		return func() error {
			local := make(map[uint64]V, len(ids))
			for _, id := range ids {
				if v, ok := get(s, id); ok {
					local[id] = v
				}
			}
			mu.Lock()
			maps.Copy(out, local)
			mu.Unlock()
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// perShard runs the operation op makes for the groups of each shard, on all shards at once,
// and waits for them all. Each operation writes to its own state, merged by the caller after;
// on an error (ctx ended, host stopped) an operation may still be running, so the caller must
// not read that state.
func (h *Host) perShard(ctx context.Context, groupIDs []uint64, op func(s *shard, ids []uint64) func() error) error {
	byShard := map[int][]uint64{}
	for _, id := range groupIDs {
		i := h.shardIndex(id)
		byShard[i] = append(byShard[i], id)
	}
	errs := make(chan error, len(byShard))
	for i, ids := range byShard {
		fn := op(h.shards[i], ids)
		go func() { errs <- h.exec(ctx, h.shards[i], fn) }()
	}
	var first error
	for range byShard {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// TransferLeader asks the local leader to hand leadership to target, which campaigns as soon
// as its log is caught up. The local replica must lead the group.
func (h *Host) TransferLeader(ctx context.Context, groupID, target uint64) error {
	s := h.shardFor(groupID)
	return h.exec(ctx, s, func() error { return s.transferLeader(groupID, target) })
}

// Propose proposes data to the group and returns its index once the entry is committed and
// applied locally. It fails with a *NotLeaderError when the local replica does not lead the
// group, and with an error wrapping raft.ErrProposalDropped, ErrLeadershipLost,
// ErrProposalLost, ErrOverloaded, ErrGroupNotFound or ErrStopped, or the ctx's, otherwise.
// Under ErrLeadershipLost and ctx errors the entry may still commit.
//
// Proposals queued for a group within one round go to raft together, as one MsgProp (or a
// few, see Config.MaxProposalBatchBytes). In manual mode use ProposeAsync.
func (h *Host) Propose(ctx context.Context, groupID uint64, data []byte) (uint64, error) {
	return h.ProposeAsync(groupID, data).Wait(ctx)
}

// ProposeAsync queues a proposal and returns at once; see Propose. data must not be
// modified after the call.
func (h *Host) ProposeAsync(groupID uint64, data []byte) *Proposal {
	p := newProposal(groupID, data)
	switch {
	case len(data) == 0:
		p.finish(0, fmt.Errorf("multiraft: group %d: %w", groupID, ErrEmptyProposal))
	case uint64(h.appends.backlog.Load()) > h.cfg.MaxAppendBacklogBytes:
		p.finish(0, fmt.Errorf("multiraft: group %d: append backlog full: %w", groupID, ErrOverloaded))
	default:
		h.shardFor(groupID).pushProposal(p)
	}
	return p
}

// ProposeConfChange proposes a membership change to the group and returns the index of its
// entry once it is applied locally: raft has switched to the new configuration (the host
// calls ApplyConfChange on every replica as it applies the entry) and the configuration is
// queued to be recorded in the Store, so reloads and restarts resume with it. The local
// replica must lead the group.
//
// Raft takes one change at a time: a change proposed while another is not yet applied, or
// one that is invalid for the current configuration (removing the last voter, a simple
// change of several voters at once, leaving a joint configuration that is not joint), fails
// with ErrConfChangeRefused before anything is committed. Several changes in one cc enter a
// joint configuration, which raft leaves on its own when cc.Transition is auto. Other errors
// are those of Propose. In manual mode use ProposeConfChangeAsync.
//
// To add a replica, load the group on its host with GroupSpec.Join, add it as a learner,
// wait until its Match reaches the leader's log (Status.Progress), then promote it with
// ConfChangeAddNode; a replica removed while it leads steps down once the change is applied.
func (h *Host) ProposeConfChange(ctx context.Context, groupID uint64, cc *raftpb.ConfChangeV2) (uint64, error) {
	return h.ProposeConfChangeAsync(groupID, cc).Wait(ctx)
}

// ProposeConfChangeAsync queues a conf change proposal and returns at once; see
// ProposeConfChange. It is queued with the proposals of ProposeAsync and keeps its place
// among them. cc is encoded at once; the caller may reuse it.
func (h *Host) ProposeConfChangeAsync(groupID uint64, cc *raftpb.ConfChangeV2) *Proposal {
	var data []byte
	err := errors.New("nil conf change") // an empty one would mean "leave the joint configuration"
	if cc != nil {
		data, err = proto.Marshal(cc)
	}
	p := newProposal(groupID, data)
	p.conf = true
	if err != nil {
		p.finish(0, fmt.Errorf("multiraft: group %d: encode conf change: %w", groupID, err))
		return p
	}
	h.shardFor(groupID).pushProposal(p)
	return p
}

// Status returns the state of one group on this replica.
func (h *Host) Status(ctx context.Context, groupID uint64) (Status, error) {
	s := h.shardFor(groupID)
	var st Status
	err := h.exec(ctx, s, func() (err error) {
		st, err = s.status(groupID)
		return err
	})
	if err != nil {
		// st may still be written by an op that ran late; do not read it.
		return Status{}, err
	}
	return st, nil
}

// Groups lists the groups loaded on this host, in increasing order.
func (h *Host) Groups(ctx context.Context) ([]uint64, error) {
	var ids []uint64
	for _, s := range h.shards {
		err := h.exec(ctx, s, func() error {
			for id := range s.groups {
				ids = append(ids, id)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(ids, cmp.Compare)
	return ids, nil
}
