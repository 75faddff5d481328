package multiraft

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/triarch-io/triarch/pkg/raftstore"
)

// appendTask is one group's MsgStorageAppend.
type appendTask struct {
	group uint64
	msg   *raftpb.Message
	bytes int64
}

// applyTask is one group's MsgStorageApply. floor is the group's applyFloor when it was
// emitted: entries at or below it were applied before the group was loaded.
type applyTask struct {
	group uint64
	msg   *raftpb.Message
	floor uint64
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
	batch   []appendTask
	updates []raftstore.Update
	pos     map[uint64]int
	out     []Envelope
	done    [][]localDone
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
		a.fold(raftstore.UpdateFromMessage(t.group, t.msg))
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

	self := a.h.cfg.NodeID
	for i := range a.batch {
		t := &a.batch[i]
		for _, m := range t.msg.GetResponses() {
			if m.GetTo() != self {
				a.out = append(a.out, Envelope{GroupID: t.group, Msg: m})
			}
		}
		si := a.h.shardIndex(t.group)
		a.done[si] = append(a.done[si], localDone{kind: doneAppend, group: t.group, msgs: t.msg.GetResponses()})
	}
	if len(a.out) > 0 {
		a.h.cfg.Transport.Send(a.out)
	}
	for si, d := range a.done {
		if len(d) > 0 {
			a.h.shards[si].pushLocal(d)
		}
	}
	return true, nil
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
	for i := range a.done {
		clear(a.done[i])
		a.done[i] = a.done[i][:0]
	}
}

// applyStage hands committed entries to the Applier, many groups per call, then returns the
// responses (and the applied entries, to settle proposals and apply conf changes) to the
// groups' workers.
type applyStage struct {
	h *Host
	q stageQueue[applyTask]

	// Owned by the stage goroutine.
	batch     []applyTask
	committed []Committed
	done      [][]localDone
}

func newApplyStage(h *Host) *applyStage {
	a := &applyStage{h: h, done: make([][]localDone, len(h.shards))}
	a.q.notify = make(chan struct{}, 1)
	return a
}

func (a *applyStage) push(ts []applyTask) { a.q.push(ts) }

func (a *applyStage) loop(ctx context.Context) { stageLoop(ctx, a.h, a.q.notify, a.drain) }

func (a *applyStage) drain() (bool, error) {
	a.batch = a.q.take(a.batch[:0], int64(a.h.cfg.MaxApplyBatchBytes), func(t *applyTask) int64 {
		return entryBytes(t.msg.GetEntries())
	})
	if len(a.batch) == 0 {
		return false, nil
	}
	defer a.reset()

	for i := range a.batch {
		t := &a.batch[i]
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
	}
	if len(a.committed) > 0 {
		if err := a.h.cfg.Applier.Apply(a.committed); err != nil {
			return true, fmt.Errorf("multiraft: apply %d groups: %w", len(a.committed), err)
		}
	}
	for i := range a.batch {
		t := &a.batch[i]
		si := a.h.shardIndex(t.group)
		a.done[si] = append(a.done[si], localDone{
			kind: doneApply, group: t.group, msgs: t.msg.GetResponses(), entries: t.msg.GetEntries(),
		})
	}
	for si, d := range a.done {
		if len(d) > 0 {
			a.h.shards[si].pushLocal(d)
		}
	}
	return true, nil
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
