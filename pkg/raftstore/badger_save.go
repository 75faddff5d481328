package raftstore

import (
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Save implements Store: all updates go into as few Badger transactions as Badger allows
// (usually one), each synced by Badger before its commit returns (SyncWrites; see
// badgerOptions for why db.Sync() after the commits is not enough). A group's entries of one
// Save become one run key (or a few, if larger than maxRunBytes), because the number of keys,
// not bytes, is what costs.
//
// Hard state: the 'h' key is written only when term or vote differ from what is stored. Raft
// needs term and vote durable before it sends messages (they are its promises), but the commit
// index only as a lower bound: on restart raft re-learns it from the leader, and a lower one
// just means re-applying committed entries. Writing 'h' on every commit change would rewrite one
// hot key per group per round, and Badger handles hot keys badly (versions pile up in the LSM
// until compaction). So a commit-only change stays in memory (InitialState of the open group
// sees it) and is written with the next term/vote change, on Release and on Close; after a
// crash InitialState returns the stored commit clamped to [first-1, last]. An application that
// persists its applied index elsewhere must pass raft Config.Applied no higher than that commit.
func (b *Badger) Save(updates []Update) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if err := b.writable(); err != nil {
		return err
	}
	updates, err := coalesce(updates)
	if err != nil {
		return err
	}
	plans := make([]*plan, 0, len(updates))
	for _, u := range updates {
		g, err := b.openLocked(u.GroupID)
		if err != nil {
			return err
		}
		p, err := b.plan(g, u)
		if err != nil {
			return fmt.Errorf("raftstore: group %d: %w", u.GroupID, err)
		}
		plans = append(plans, p)
	}

	// Readers must not see Badger change under a group's old in-memory state: hold the group
	// locks from the first commit until the state is updated.
	for _, p := range plans {
		p.g.mu.Lock()
	}
	w := b.newTxnWriter()
	for _, p := range plans {
		p.write(w)
	}
	err = w.finish()
	if err == nil {
		for _, p := range plans {
			p.apply()
		}
	}
	for _, p := range plans {
		p.g.mu.Unlock()
	}
	if err != nil {
		b.failed = err
		return fmt.Errorf("raftstore: save: %w", err)
	}
	if w.commits == 0 {
		return nil // only commit indexes moved: nothing to make durable
	}
	if err := b.sync(); err != nil {
		// Memory now shows writes that may not be durable; refuse to go on.
		b.failed = err
		return fmt.Errorf("raftstore: save: sync: %w", err)
	}
	return nil
}

// coalesce merges the updates of one group in a batch into one, as if applied in order, so
// that planning can read the disk state each group's update starts from.
func coalesce(updates []Update) ([]Update, error) {
	if len(updates) <= 1 {
		return updates, nil
	}
	at := make(map[uint64]int, len(updates))
	out := make([]Update, 0, len(updates))
	for _, u := range updates {
		i, ok := at[u.GroupID]
		if !ok {
			at[u.GroupID] = len(out)
			out = append(out, u)
			continue
		}
		a := &out[i]
		if u.Snapshot != nil {
			if a.Snapshot != nil && a.Snapshot.GetMetadata().GetIndex() >= u.Snapshot.GetMetadata().GetIndex() {
				return nil, fmt.Errorf("raftstore: group %d: %w", u.GroupID, raft.ErrSnapOutOfDate)
			}
			a.Snapshot, a.Entries = u.Snapshot, nil
		}
		if len(u.Entries) > 0 {
			if len(a.Entries) == 0 {
				a.Entries = u.Entries
			} else {
				af, f := a.Entries[0].GetIndex(), u.Entries[0].GetIndex()
				switch n := uint64(len(a.Entries)); {
				case f <= af:
					a.Entries = u.Entries
				case f <= af+n:
					// Full slice expression: never write into the caller's array.
					k := f - af
					a.Entries = append(a.Entries[:k:k], u.Entries...)
				default:
					return nil, fmt.Errorf("raftstore: group %d: entries from %d leave a gap after %d",
						u.GroupID, f, af+n-1)
				}
			}
		}
		if u.HardState != nil {
			a.HardState = u.HardState
		}
	}
	return out, nil
}

// plan is what one group's update writes and how its in-memory state changes.
type plan struct {
	g     *group
	next  groupState
	ents  []*raftpb.Entry // new entries, for the tail cache
	reset bool            // a snapshot replaced the log: drop the tail cache

	// Either atomic is set (the usual case: everything in one transaction), or the update is
	// too big for one transaction and is written as head, rest, final (see write).
	atomic            []op
	head, rest, final []op
}

func (b *Badger) plan(g *group, u Update) (*plan, error) {
	id := g.id
	st := g.st // writeMu is held: nobody else changes st
	p := &plan{g: g, next: st}
	var hsOps, snapOps, staleOps, runOps []op
	var cut *op
	limit := uint64(0) // where the log ends (+1) if the update is interrupted
	metaChanged := !st.hasMeta

	if h := u.HardState; h != nil {
		hs := hardState{term: h.GetTerm(), vote: h.GetVote(), commit: h.GetCommit()}
		if hs.term != st.disk.term || hs.vote != st.disk.vote {
			hsOps = append(hsOps, setOp(groupKey(kindHard, id), hs.encode()))
			p.next.disk = hs
		}
		p.next.hs = hs
	}

	if s := u.Snapshot; s != nil {
		md := raftpb.EnsureSnapshotMetadata(proto.Clone(s.GetMetadata()).(*raftpb.SnapshotMetadata))
		idx := md.GetIndex()
		if st.snap != nil && st.snap.GetIndex() != 0 && st.snap.GetIndex() >= idx {
			return nil, fmt.Errorf("snapshot %d not newer than %d: %w", idx, st.snap.GetIndex(), raft.ErrSnapOutOfDate)
		}
		mdBytes, err := proto.Marshal(md)
		if err != nil {
			return nil, fmt.Errorf("marshal snapshot metadata: %w", err)
		}
		snapOps = append(snapOps,
			setOp(groupKey(kindSnapMeta, id), mdBytes),
			setOp(groupKey(kindSnapData, id), s.GetData()))
		// As raft.MemoryStorage.ApplySnapshot: the snapshot replaces the whole log. Raft
		// installs one only when its log does not already hold the snapshot's index and term,
		// so any later entries belong to a diverged history.
		starts, err := g.store.runStarts(id, 0, ^uint64(0))
		if err != nil {
			return nil, err
		}
		for _, s := range starts {
			staleOps = append(staleOps, delOp(runKey(id, s)))
		}
		p.next.snap = md
		p.next.first, p.next.prevTerm, p.next.last = idx+1, md.GetTerm(), idx
		p.reset, metaChanged, limit = true, true, idx+1
	}

	ents := u.Entries
	for i, e := range ents {
		if e.GetIndex() != ents[0].GetIndex()+uint64(i) || e.GetIndex() == 0 {
			return nil, fmt.Errorf("entries not consecutive: index %d at position %d after %d",
				e.GetIndex(), i, ents[0].GetIndex())
		}
	}
	// Entries below the first index are already covered by a snapshot or compaction.
	if len(ents) > 0 && ents[0].GetIndex() < p.next.first {
		skip := p.next.first - ents[0].GetIndex()
		if skip >= uint64(len(ents)) {
			ents = nil
		} else {
			ents = ents[skip:]
		}
	}
	if len(ents) > 0 {
		f := ents[0].GetIndex()
		if f > p.next.last+1 {
			return nil, fmt.Errorf("entries from %d leave a gap after last index %d", f, p.next.last)
		}
		if f <= p.next.last && u.Snapshot == nil {
			// Truncation of a diverged tail: runs from f on go, the run holding f-1 is cut.
			starts, err := g.store.runStarts(id, f, ^uint64(0))
			if err != nil {
				return nil, err
			}
			for _, s := range starts {
				staleOps = append(staleOps, delOp(runKey(id, s)))
			}
			if cut, err = g.store.cutRun(id, f); err != nil {
				return nil, err
			}
		}
		if u.Snapshot == nil {
			limit = f
		}
		for rest := ents; len(rest) > 0; {
			n := runLen(rest)
			runOps = append(runOps, setOp(runKey(id, rest[0].GetIndex()), encodeRun(rest[:n])))
			rest = rest[n:]
		}
		p.next.last = f + uint64(len(ents)) - 1
		p.ents = ents
	}

	m := meta{first: p.next.first, prevTerm: p.next.prevTerm}
	var metaOps []op
	if metaChanged {
		metaOps = []op{setOp(groupKey(kindMeta, id), m.encode())}
		p.next.hasMeta = true
	}

	// Deletes come before the sets: a new run may reuse a stale run's key.
	atomic := make([]op, 0, len(hsOps)+len(snapOps)+len(staleOps)+len(runOps)+2)
	atomic = append(atomic, hsOps...)
	atomic = append(atomic, snapOps...)
	atomic = append(atomic, staleOps...)
	if cut != nil {
		atomic = append(atomic, *cut)
	}
	atomic = append(atomic, runOps...)
	atomic = append(atomic, metaOps...)
	if g.store.unitFits(atomic) {
		p.atomic = atomic
		return p, nil
	}

	// Too big for one transaction (a truncation or snapshot over very many runs, or a huge
	// append). The head, written atomically, holds the hard state, the snapshot, the cut run
	// and a meta key with a recovery limit; then stale runs are deleted and new runs written in
	// as many transactions as needed; the final meta clears the limit. If this is interrupted,
	// loading the group deletes runs from the limit on: the log is then what it was before the
	// update, shortened to limit-1 (for a truncation, only entries being replaced anyway; for a
	// snapshot, entries the durable snapshot covers), with the new hard state.
	m.limit = limit
	p.head = append(append([]op{}, hsOps...), snapOps...)
	if cut != nil {
		p.head = append(p.head, *cut)
	}
	p.head = append(p.head, setOp(groupKey(kindMeta, id), m.encode()))
	p.rest = append(staleOps, runOps...)
	m.limit = 0
	p.final = []op{setOp(groupKey(kindMeta, id), m.encode())}
	p.next.hasMeta = true
	return p, nil
}

// runLen returns how many of ents go in one run: up to maxRunBytes encoded, at least one.
func runLen(ents []*raftpb.Entry) int {
	size := 0
	for i, e := range ents {
		size += encodedEntrySize(e)
		if size > maxRunBytes && i > 0 {
			return i
		}
	}
	return len(ents)
}

func (p *plan) write(w *txnWriter) {
	if p.head == nil {
		w.addUnit(p.atomic)
		return
	}
	w.addUnit(p.head)
	for _, o := range p.rest {
		w.add(o)
	}
	w.addUnit(p.final)
}

// apply publishes the new state; g.mu is held for writing.
func (p *plan) apply() {
	g := p.g
	g.st = p.next
	if p.reset {
		g.dropTail()
	}
	g.appendTail(p.ents)
}
