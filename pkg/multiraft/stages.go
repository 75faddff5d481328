package multiraft

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/triarch-io/triarch/pkg/raftstore"
)

// appendTask is one group's MsgStorageAppend, or (rec set) records for the Store.
type appendTask struct {
	group uint64
	msg   *raftpb.Message
	bytes int64
	// install marks a MsgStorageAppend with a snapshot raft installed: once persisted, its
	// completion goes through the apply stage, which restores the snapshot if restore.
	install, restore bool
	rec              *recordTask
	// reset, instead of an append, discards the data of a failed group (Host.ResetGroup).
	reset *resetTask
}

// resetTask carries a ResetGroup through the append stage (which deletes the group's data),
// the apply stage and back to the group's worker (which forgets the failure): every task of
// the group queued before it is handled, or dropped as failed, before its data goes and
// before the group may load again.
type resetTask struct {
	done chan error
	err  error // of the delete
}

// recordTask is what the Store should record of a group beside its log: a snapshot (and the
// compaction behind it) or a configuration.
type recordTask struct {
	snap    *raftpb.Snapshot
	compact uint64 // when not 0, discard the entries before it, once snap is saved
	conf    *confRecord
}

// confRecord is a group's configuration once every entry up to index is applied.
type confRecord struct {
	index uint64
	cs    *raftpb.ConfState
}

// applyTask is one group's MsgStorageApply. floor is the group's applyFloor when it was
// emitted: entries at or below it were applied before the group was loaded.
type applyTask struct {
	group uint64
	msg   *raftpb.Message
	floor uint64
	// snapshot asks for a snapshot of the group once its entries in the batch are applied.
	snapshot bool
	// install, instead of entries, is a persisted snapshot to restore before the group's
	// later entries are applied.
	install *installTask
	// reset, instead of entries, is a ResetGroup on its way back to the group's worker.
	reset *resetTask
}

// installTask is a snapshot raft installed, persisted by the append stage.
type installTask struct {
	snap    *raftpb.Snapshot
	restore bool
	// msgs are the append's responses, stepped once the snapshot is restored.
	msgs []*raftpb.Message
}

// takenSnapshot is what Snapshotter.Snapshot returned after an apply.
type takenSnapshot struct {
	data  []byte
	index uint64
}

func (t *applyTask) cost() int64 {
	if t.reset != nil {
		return 0
	}
	if t.install != nil {
		return int64(len(t.install.snap.GetData()))
	}
	return entryBytes(t.msg.GetEntries())
}

// stageQueue is the FIFO between the workers and a stage. Per group, tasks stay in the order
// the group's worker pushed them, which is the order raft requires.
type stageQueue[T any] struct {
	mu     sync.Mutex
	tasks  []T
	notify chan struct{}
}

func (q *stageQueue[T]) push(ts []T) {
	q.mu.Lock()
	q.tasks = append(q.tasks, ts...)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// take moves into dst the longest prefix of the queue whose cost stays within limit (at
// least one task), so that one busy moment does not become one giant lock-step batch.
func (q *stageQueue[T]) take(dst []T, limit int64, cost func(*T) int64) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	n, total := 0, int64(0)
	for n < len(q.tasks) {
		c := cost(&q.tasks[n])
		if n > 0 && total+c > limit {
			break
		}
		total += c
		n++
	}
	dst = append(dst, q.tasks[:n]...)
	rest := copy(q.tasks, q.tasks[n:])
	clear(q.tasks[rest:])
	q.tasks = q.tasks[:rest]
	return dst
}

func stageLoop(ctx context.Context, h *Host, notify <-chan struct{}, drain func() (bool, error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-notify:
		}
		for ctx.Err() == nil {
			worked, err := drain()
			if err != nil {
				h.fail(err)
				return
			}
			if !worked {
				break
			}
		}
	}
}

// appendStage makes raft state durable: every group's MsgStorageAppend queued since the last
// Save goes into one Store.Save (one write batch, one fsync); then the responses go out:
// to peers (acks that must follow the write) through the Transport, to this node through its
// workers. While it saves, the workers go on stepping and queue the next batch.
type appendStage struct {
	h *Host
	q stageQueue[appendTask]
	// backlog is the entry bytes queued and not yet saved.
	backlog atomic.Int64

	// Owned by the stage goroutine.
	batch    []appendTask
	updates  []raftstore.Update
	pos      map[uint64]int
	out      []Envelope
	done     [][]localDone
	installs []applyTask
}

func newAppendStage(h *Host) *appendStage {
	a := &appendStage{h: h, pos: make(map[uint64]int), done: make([][]localDone, len(h.shards))}
	a.q.notify = make(chan struct{}, 1)
	return a
}

func (a *appendStage) push(ts []appendTask) {
	var n int64
	for i := range ts {
		n += ts[i].bytes
	}
	a.backlog.Add(n)
	a.q.push(ts)
}

func (a *appendStage) loop(ctx context.Context) { stageLoop(ctx, a.h, a.q.notify, a.drain) }

func (a *appendStage) drain() (bool, error) {
	a.batch = a.q.take(a.batch[:0], int64(a.h.cfg.MaxAppendBatchBytes), func(t *appendTask) int64 { return t.bytes })
	if len(a.batch) == 0 {
		return false, nil
	}
	defer a.reset()

	var bytes int64
	for i := range a.batch {
		t := &a.batch[i]
		bytes += t.bytes
		// A failed group's log is left as it failed; nothing of it is acknowledged anyway.
		if t.msg != nil && a.h.failure(t.group) == nil {
			a.fold(raftstore.UpdateFromMessage(t.group, t.msg))
		}
	}
	if len(a.updates) > 0 {
		a.h.saveMu.Lock()
		err := a.h.cfg.Store.Save(a.updates)
		a.h.saveMu.Unlock()
		if err != nil {
			return true, fmt.Errorf("multiraft: save %d updates: %w", len(a.updates), err)
		}
	}
	a.backlog.Add(-bytes)

	// Held from the check of each group to the sends, so that a group failing meanwhile has
	// either all of this batch's responses sent before failGroups returns, or none.
	a.h.failMu.RLock()
	defer a.h.failMu.RUnlock()
	self := a.h.cfg.NodeID
	for i := range a.batch {
		t := &a.batch[i]
		if t.reset != nil {
			// Behind every earlier save of the group, none of which is acknowledged: it failed.
			a.h.saveMu.Lock()
			t.reset.err = a.h.cfg.Store.Delete(t.group)
			a.h.saveMu.Unlock()
			a.installs = append(a.installs, applyTask{group: t.group, reset: t.reset})
			continue
		}
		if a.h.anyFailed.Load() && a.h.failed[t.group] != nil {
			continue
		}
		if t.rec != nil {
			if err := a.record(t.group, t.rec); err != nil {
				return true, err
			}
		}
		for _, m := range t.msg.GetResponses() {
			if m.GetTo() != self {
				a.out = append(a.out, Envelope{GroupID: t.group, Msg: m})
			}
		}
		if t.install {
			a.installs = append(a.installs, applyTask{group: t.group, install: &installTask{
				snap: t.msg.GetSnapshot(), restore: t.restore, msgs: t.msg.GetResponses(),
			}})
			continue
		}
		si := a.h.shardIndex(t.group)
		a.done[si] = append(a.done[si], localDone{kind: doneAppend, group: t.group, msgs: t.msg.GetResponses()})
	}
	if len(a.out) > 0 {
		a.h.cfg.Transport.Send(a.out)
	}
	if len(a.installs) > 0 {
		a.h.applies.push(a.installs)
	}
	for si, d := range a.done {
		if len(d) > 0 {
			a.h.shards[si].pushLocal(d)
		}
	}
	return true, nil
}

// record writes what a recordTask holds. The log already holds every entry up to the
// record's index (entries are applied only once they are stable), so the order against the
// Saves around it does not matter; a snapshot raft installed meanwhile makes a local
// snapshot or compaction redundant, and the Store says so with the errors ignored here.
func (a *appendStage) record(group uint64, r *recordTask) error {
	st := a.h.cfg.Store
	if r.snap != nil {
		idx := r.snap.GetMetadata().GetIndex()
		err := st.SaveSnapshot(group, r.snap)
		switch {
		case errors.Is(err, raft.ErrSnapOutOfDate):
			a.h.log.Debug("snapshot superseded", "group", group, "index", idx, "err", err)
			return nil
		case err != nil:
			return fmt.Errorf("multiraft: group %d: save snapshot at %d: %w", group, idx, err)
		}
		a.h.log.Debug("snapshot saved", "group", group, "index", idx, "bytes", len(r.snap.GetData()))
		if r.compact > 0 {
			err := st.Compact(group, r.compact)
			switch {
			case errors.Is(err, raft.ErrCompacted):
			case err != nil:
				return fmt.Errorf("multiraft: group %d: compact to %d: %w", group, r.compact, err)
			}
		}
	}
	if r.conf != nil {
		if err := st.SaveConfState(group, r.conf.index, r.conf.cs); err != nil {
			return fmt.Errorf("multiraft: group %d: record configuration at %d: %w", group, r.conf.index, err)
		}
	}
	return nil
}

// fold adds u to the batch, merged into the group's previous update of the batch when it can
// be, so that a group costs one update (for Badger, few keys) per Save however many rounds
// it spans.
func (a *appendStage) fold(u raftstore.Update) {
	if u.HardState == nil && len(u.Entries) == 0 && u.Snapshot == nil {
		return // only responses: durable as soon as everything before it is
	}
	if i, ok := a.pos[u.GroupID]; ok && mergeUpdate(&a.updates[i], u) {
		return
	}
	a.pos[u.GroupID] = len(a.updates)
	a.updates = append(a.updates, u)
}

// mergeUpdate folds next, which follows prev, into prev. New entries replace those of prev
// from their first index on, as the Store would. The slices are raft's and are not
// modified.
func mergeUpdate(prev *raftstore.Update, next raftstore.Update) bool {
	if prev.Snapshot != nil || next.Snapshot != nil {
		return false
	}
	if len(next.Entries) > 0 && len(prev.Entries) > 0 {
		first := next.Entries[0].GetIndex()
		prevFirst := prev.Entries[0].GetIndex()
		prevLast := prev.Entries[len(prev.Entries)-1].GetIndex()
		switch {
		case first > prevLast+1:
			return false // a gap; cannot happen with raft, keep the updates apart
		case first <= prevFirst:
			prev.Entries = next.Entries
		default:
			keep := prev.Entries[:first-prevFirst]
			merged := make([]*raftpb.Entry, 0, len(keep)+len(next.Entries))
			prev.Entries = append(append(merged, keep...), next.Entries...)
		}
	} else if len(next.Entries) > 0 {
		prev.Entries = next.Entries
	}
	if next.HardState != nil {
		prev.HardState = next.HardState
	}
	return true
}

func (a *appendStage) reset() {
	clear(a.batch)
	a.batch = a.batch[:0]
	clear(a.updates)
	a.updates = a.updates[:0]
	clear(a.pos)
	clear(a.out)
	a.out = a.out[:0]
	clear(a.installs)
	a.installs = a.installs[:0]
	for i := range a.done {
		clear(a.done[i])
		a.done[i] = a.done[i][:0]
	}
}

// applyStage hands committed entries to the Applier, many groups per call, then returns the
// responses (and the applied entries, to settle proposals and apply conf changes) to the
// groups' workers. It also restores the snapshots raft installed, in order with the applies:
// a snapshot's install is queued behind the applies of the entries committed before it, and
// raft hands out no entry after it until the restore is done.
type applyStage struct {
	h *Host
	q stageQueue[applyTask]

	// Owned by the stage goroutine.
	batch     []applyTask
	committed []Committed
	taken     map[int]*takenSnapshot
	wanted    map[uint64]bool
	done      [][]localDone
}

func newApplyStage(h *Host) *applyStage {
	a := &applyStage{
		h: h, done: make([][]localDone, len(h.shards)),
		taken: make(map[int]*takenSnapshot), wanted: make(map[uint64]bool),
	}
	a.q.notify = make(chan struct{}, 1)
	return a
}

func (a *applyStage) push(ts []applyTask) { a.q.push(ts) }

func (a *applyStage) loop(ctx context.Context) { stageLoop(ctx, a.h, a.q.notify, a.drain) }

func (a *applyStage) drain() (bool, error) {
	a.batch = a.q.take(a.batch[:0], int64(a.h.cfg.MaxApplyBatchBytes), (*applyTask).cost)
	if len(a.batch) == 0 {
		return false, nil
	}
	defer a.reset()

	// Runs of applies go to the Applier together; an install splits them, so that it comes
	// after the entries queued before it.
	start := 0
	for i := range a.batch {
		if a.batch[i].install == nil && a.batch[i].reset == nil {
			continue
		}
		if err := a.apply(a.batch[start:i]); err != nil {
			return true, err
		}
		if t := &a.batch[i]; t.reset != nil {
			si := a.h.shardIndex(t.group)
			a.done[si] = append(a.done[si], localDone{kind: doneReset, group: t.group, reset: t.reset})
		} else if a.h.failure(a.batch[i].group) == nil {
			if err := a.restore(&a.batch[i]); err != nil {
				return true, err
			}
		}
		start = i + 1
	}
	if err := a.apply(a.batch[start:]); err != nil {
		return true, err
	}
	for si, d := range a.done {
		if len(d) > 0 {
			a.h.shards[si].pushLocal(d)
		}
	}
	return true, nil
}

// apply applies a run of MsgStorageApply, takes the snapshots asked for, and queues the
// completions.
func (a *applyStage) apply(run []applyTask) error {
	if len(run) == 0 {
		return nil
	}
	clear(a.committed)
	a.committed = a.committed[:0]
	for i := range run {
		t := &run[i]
		if a.h.failure(t.group) != nil {
			continue // see Applier.Apply: nothing more of a failed group
		}
		ents := t.msg.GetEntries()
		if len(ents) > 0 && ents[0].GetIndex() <= t.floor {
			skip, _ := slices.BinarySearchFunc(ents, t.floor+1, func(e *raftpb.Entry, idx uint64) int {
				return cmp.Compare(e.GetIndex(), idx)
			})
			ents = ents[skip:]
		}
		if len(ents) > 0 {
			a.committed = append(a.committed, Committed{GroupID: t.group, Entries: ents})
		}
		if t.snapshot {
			a.wanted[t.group] = true
		}
	}
	if len(a.committed) > 0 {
		if err := a.h.cfg.Applier.Apply(a.committed); err != nil {
			fs, ok := groupFailures(err)
			if !ok {
				return fmt.Errorf("multiraft: apply %d groups: %w", len(a.committed), err)
			}
			a.h.failGroups(fs)
		}
	}
	if len(a.wanted) > 0 {
		a.snapshots(run)
	}
	for i := range run {
		t := &run[i]
		if a.h.failure(t.group) != nil {
			continue // its worker drops it; the completions would only settle proposals
		}
		var snap *takenSnapshot
		if len(a.taken) > 0 {
			snap = a.taken[i]
		}
		si := a.h.shardIndex(t.group)
		a.done[si] = append(a.done[si], localDone{
			kind: doneApply, group: t.group, msgs: t.msg.GetResponses(), entries: t.msg.GetEntries(), snap: snap,
		})
	}
	clear(a.taken)
	return nil
}

// snapshots takes one snapshot per group that asked, now that all its entries of the run are
// applied, and hands it with the group's last task of the run: the worker adds the
// configuration as of that task's last entry, which it knows once it has applied the task's
// conf changes to raft. A snapshot that is not exactly as of that entry (the Applier was
// ahead of raft, see applyFloor) is skipped; a later one will do.
func (a *applyStage) snapshots(run []applyTask) {
	defer clear(a.wanted)
	for i := len(run) - 1; i >= 0; i-- {
		t := &run[i]
		if !a.wanted[t.group] {
			continue
		}
		delete(a.wanted, t.group)
		if a.h.failure(t.group) != nil {
			continue
		}
		ents := t.msg.GetEntries()
		want := ents[len(ents)-1].GetIndex()
		data, idx, err := a.h.snapshotter.Snapshot(t.group)
		switch {
		case err != nil:
			a.h.log.Warn("snapshot failed", "group", t.group, "at", want, "err", err)
		case idx != want:
			a.h.log.Warn("snapshot skipped: the applier is not at the applied entry", "group", t.group, "applier", idx, "entry", want)
		default:
			a.taken[i] = &takenSnapshot{data: data, index: idx}
		}
	}
}

// restore restores a snapshot raft installed, then hands its append completion to the
// worker, after the completions of the applies before it.
func (a *applyStage) restore(t *applyTask) error {
	in := t.install
	if in.restore {
		if err := a.h.snapshotter.Restore(t.group, in.snap); err != nil {
			if fs, ok := groupFailures(err); ok {
				a.h.failGroups(fs)
				return nil
			}
			return fmt.Errorf("multiraft: group %d: restore snapshot at %d: %w", t.group, in.snap.GetMetadata().GetIndex(), err)
		}
		a.h.log.Info("restored a snapshot", "group", t.group, "index", in.snap.GetMetadata().GetIndex())
	}
	si := a.h.shardIndex(t.group)
	a.done[si] = append(a.done[si], localDone{kind: doneAppend, group: t.group, msgs: in.msgs, installed: true})
	return nil
}

func (a *applyStage) reset() {
	clear(a.batch)
	a.batch = a.batch[:0]
	clear(a.committed)
	a.committed = a.committed[:0]
	for i := range a.done {
		clear(a.done[i])
		a.done[i] = a.done[i][:0]
	}
}
