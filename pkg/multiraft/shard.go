package multiraft

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// shard is one raft worker and the groups it owns. Anyone may queue work into its inbox;
// only the worker (the caller of ProcessRound in manual mode) touches the fields below mu's.
type shard struct {
	h      *Host
	notify chan struct{}

	mu     sync.Mutex
	in     inbox
	closed bool

	groups map[uint64]*group
	// peak is the high-water mark of len(groups): Go maps never shrink, so after mass
	// hibernation the map is rebuilt to give its memory back.
	peak    int
	leaders []*group // ticked; nobody else is
	dirty   []*group // touched this round, to check for a Ready
	spare   inbox    // the previous round's inbox, reused

	// Outputs of this round, flushed at its end.
	out     []Envelope
	appends []appendTask
	applies []applyTask
	// installing is set when appends holds a snapshot raft installed.
	installing bool
	// readSeq numbers the shard's ReadIndex requests to raft (their context).
	readSeq uint64
	// now is when the current round began: the time of the peers' answers it steps
	// (group.acked), read once per round rather than once per message.
	now time.Time
}

type doneKind uint8

const (
	doneAppend doneKind = iota
	doneApply
	// doneReset ends a ResetGroup (see resetTask).
	doneReset
)

// localDone is a completed MsgStorageAppend or MsgStorageApply of one group (or a record
// the append stage wrote): msgs are its responses (only those addressed to this node are
// stepped) and, for an apply, entries are what was applied.
type localDone struct {
	kind    doneKind
	group   uint64
	msgs    []*raftpb.Message
	entries []*raftpb.Entry
	// installed marks the append that persisted a snapshot raft installed, once the apply
	// stage has also restored it.
	installed bool
	// snap is the snapshot the apply stage took after applying entries, if it took one.
	snap *takenSnapshot
	// reset is the ResetGroup a doneReset ends.
	reset *resetTask
}

func newShard(h *Host) *shard {
	return &shard{h: h, notify: make(chan struct{}, 1), groups: make(map[uint64]*group)}
}

func (s *shard) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *shard) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.notify:
		}
		for ctx.Err() == nil {
			s.round()
			if !s.pending() {
				break
			}
		}
	}
}

// round is one pass of the worker over what was queued for it: storage completions first
// (they free raft's flow control), then proposals, control operations, ticks, unreachable
// reports and peer messages; then every group touched hands over its Ready. Messages to
// peers go out at once, before the local append is durable, as raft allows; appends and
// applies go to the stages, which the worker does not wait for.
func (s *shard) round() bool {
	in := s.take()
	worked := !in.empty()
	s.now = time.Now()
	for i := range in.local {
		s.complete(&in.local[i])
	}
	if len(in.props) > 0 {
		s.propose(in.props)
	}
	for _, op := range in.ops {
		op()
	}
	if in.ticks > 0 {
		s.tick(in.ticks)
	}
	// Drops first: a MsgSnap the Transport dropped at once is reported failed before the
	// report that it was sent, which raft then ignores.
	for _, u := range in.unreachable {
		if g := s.groups[u.group]; g != nil {
			g.rn.ReportUnreachable(u.node)
			if awaitsSnapshot(g, u.node) {
				g.rn.ReportSnapshot(u.node, raft.SnapshotFailure)
			}
			s.markDirty(g)
		}
	}
	for _, p := range in.snapSent {
		if g := s.groups[p.group]; g != nil {
			g.rn.ReportSnapshot(p.node, raft.SnapshotFinish)
			s.markDirty(g)
		}
	}
	for _, e := range in.msgs {
		s.step(e)
	}
	if s.flush() {
		worked = true
	}
	s.recycle(in)
	return worked
}

func (s *shard) markDirty(g *group) {
	if !g.dirty {
		g.dirty = true
		s.dirty = append(s.dirty, g)
	}
}

func (s *shard) flush() bool {
	for _, g := range s.dirty {
		g.dirty = false
		if !g.loaded {
			continue
		}
		if s.h.failure(g.id) != nil {
			s.dropFailed(g.id)
			continue
		}
		if len(g.readBatch) > 0 {
			s.issueReads(g)
		}
		if g.rn.HasReady() && !s.handleReady(g) {
			continue
		}
		if len(g.unverified) > 0 {
			// Entries raft accepted always show in a Ready; if none came they are gone.
			s.verify(g, nil)
		}
	}
	clear(s.dirty)
	s.dirty = s.dirty[:0]

	worked := len(s.out) > 0 || len(s.appends) > 0 || len(s.applies) > 0
	if len(s.out) > 0 {
		var snaps []peer
		for _, e := range s.out {
			if e.Msg.GetType() == raftpb.MessageType_MsgSnap {
				snaps = append(snaps, peer{e.GroupID, e.Msg.GetTo()})
			}
		}
		s.h.cfg.Transport.Send(s.out)
		if len(snaps) > 0 {
			// Reported next round, after any drop the Transport reported during Send.
			s.pushSnapSent(snaps)
		}
		clear(s.out)
		s.out = s.out[:0]
	}
	if s.installing {
		// A snapshot this round persists goes from the append stage to the apply stage to
		// be restored, and must queue there behind the applies of the entries committed
		// before it, which this round may hold: those go first.
		s.pushApplies()
		s.installing = false
	}
	// Appends first otherwise: they are on the way to commit, applies only follow.
	if len(s.appends) > 0 {
		s.h.appends.push(s.appends)
		clear(s.appends)
		s.appends = s.appends[:0]
	}
	s.pushApplies()
	return worked
}

func (s *shard) pushApplies() {
	if len(s.applies) > 0 {
		s.h.applies.push(s.applies)
		clear(s.applies)
		s.applies = s.applies[:0]
	}
}

// awaitsSnapshot says whether the group leads and holds back replication to node until a
// snapshot sent to it is reported.
func awaitsSnapshot(g *group, node uint64) bool {
	if g.role != raft.StateLeader {
		return false
	}
	waiting := false
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		waiting = waiting || (id == node && pr.State == tracker.StateSnapshot)
	})
	return waiting
}

// handleReady takes a group's Ready and routes its messages: the append to the append stage,
// the apply to the apply stage, the rest to peers. With AsyncStorageWrites the Ready's other
// fields are carried by those messages. A group restoring a snapshot is left alone until it
// is restored (see group.restoring); raft keeps what it has for the next Ready. It reports
// false when the group failed taking its Ready and is dropped.
func (s *shard) handleReady(g *group) bool {
	if g.restoring {
		return true
	}
	rd, err := ready(g.rn)
	if err != nil {
		// Raft panics on a log it cannot read (a checksum error from the store, a run
		// missing): the group's log is unusable here, the other groups' are not.
		s.failLocal(g, 0, err)
		return false
	}
	var appendMsg *raftpb.Message
	for _, m := range rd.Messages {
		switch m.GetTo() {
		case raft.LocalAppendThread:
			appendMsg = m
			t := appendTask{group: g.id, msg: m, bytes: entryBytes(m.GetEntries())}
			if snap := m.GetSnapshot(); !raft.IsEmptySnap(snap) && !s.installSnapshot(g, snap, &t) {
				return true // the host failed
			}
			if ents := m.GetEntries(); len(ents) > 0 {
				last := ents[len(ents)-1]
				g.lastIndex, g.lastTerm = last.GetIndex(), last.GetTerm()
			}
			g.appending++
			s.appends = append(s.appends, t)
		case raft.LocalApplyThread:
			g.applying++
			t := applyTask{group: g.id, msg: m, floor: g.applyFloor}
			if n := s.h.cfg.SnapshotEntries; n > 0 {
				g.sinceSnapshot += uint64(len(m.GetEntries()))
				if g.sinceSnapshot >= n {
					t.snapshot, g.sinceSnapshot = true, 0
				}
			}
			s.applies = append(s.applies, t)
		default:
			s.out = append(s.out, Envelope{GroupID: g.id, Msg: m})
		}
	}
	if len(g.unverified) > 0 {
		s.verify(g, appendMsg)
	}
	for _, rs := range rd.ReadStates {
		s.finishReads(g, rs)
	}
	if rd.SoftState != nil {
		s.setRole(g, rd.SoftState)
	}
	return true
}

// ready is rn.Ready with raft's panics on storage errors turned into an error.
func ready(rn *raft.RawNode) (rd raft.Ready, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("raft: %v", r)
		}
	}()
	return rn.Ready(), nil
}

// stepRecovered is rn.Step with raft's panics (a log it cannot read, an inconsistent log)
// turned into an error of their own: panicked says the group is unusable.
func stepRecovered(rn *raft.RawNode, m *raftpb.Message) (err error, panicked error) {
	defer func() {
		if r := recover(); r != nil {
			panicked = fmt.Errorf("raft: step %s from %d: %v", m.GetType(), m.GetFrom(), r)
		}
	}()
	return rn.Step(m), nil
}

// failLocal fails a group its worker found unusable (see Applier.Apply for what that means)
// and drops it at once.
func (s *shard) failLocal(g *group, index uint64, err error) {
	s.h.failGroups([]*GroupFailedError{{GroupID: g.id, Index: index, Err: err}})
	s.dropFailed(g.id)
}

// dropFailed drops a failed group from the worker: it is no longer ticked, stepped or led,
// and its proposals fail. Unlike unload it leaves the Store alone: the stages may still hold
// writes of the group, which would open it in the Store again after a Release.
func (s *shard) dropFailed(id uint64) {
	g := s.groups[id]
	if g == nil {
		return
	}
	err := s.h.Failure(id)
	for _, p := range g.waiters {
		p.finish(0, err)
	}
	g.waiters, g.unverified = nil, nil
	failReads(g, err)
	if g.leaderPos >= 0 {
		s.dropLeader(g)
	}
	delete(s.groups, id)
	g.loaded = false
	g.rn = nil
}

// installSnapshot prepares the append of a snapshot raft installed from its leader. The
// append stage persists it, the apply stage restores the state machine from it once the
// entries committed before it are applied, and only then does raft hear that it is
// persisted (its MsgStorageAppendResp marks the snapshot applied) and hand out the entries
// after it; meanwhile the group's Ready is held back. It reports false, after failing the
// host, when the Applier cannot take the snapshot.
func (s *shard) installSnapshot(g *group, snap *raftpb.Snapshot, t *appendTask) bool {
	md := snap.GetMetadata()
	idx := md.GetIndex()
	restore := false
	if idx > BootstrapIndex {
		if s.h.snapshotter == nil {
			// Going on would apply the entries after it to a state that lacks the snapshot.
			s.h.fail(fmt.Errorf("multiraft: group %d: received a snapshot at index %d, and the Applier %T does not implement Snapshotter",
				g.id, idx, s.h.cfg.Applier))
			return false
		}
		// An Applier already past the snapshot (it was ahead of raft when the group was
		// loaded, see applyFloor) holds everything the snapshot does; the floor keeps the
		// entries between the two from it.
		restore = idx > g.applyFloor
	}
	t.install, t.restore = true, restore
	g.restoring = true
	s.installing = true
	// Raft switched to the snapshot's configuration. Conf changes up to its index, in
	// applies still to complete, are in it.
	g.confState = cloneConfState(md.GetConfState())
	g.confFloor = idx
	g.confRecorded = max(g.confRecorded, idx) // the Store records the snapshot's
	g.lastIndex, g.lastTerm = idx, md.GetTerm()
	g.sinceSnapshot = 0
	s.h.log.Info("installing a snapshot from the leader", "group", g.id, "index", idx, "restore", restore)
	return true
}

func entryBytes(ents []*raftpb.Entry) int64 {
	var n int64
	for _, e := range ents {
		n += int64(len(e.GetData()))
	}
	return n
}

func (s *shard) setRole(g *group, ss *raft.SoftState) {
	was := g.role
	g.role, g.lead = ss.RaftState, ss.Lead
	isLeader := ss.RaftState == raft.StateLeader
	switch {
	case isLeader && g.leaderPos < 0:
		g.leaderPos = len(s.leaders)
		s.leaders = append(s.leaders, g)
	case !isLeader && g.leaderPos >= 0:
		s.dropLeader(g)
	}
	if !isLeader {
		g.acked = nil
		if len(g.readBatch)+len(g.pendingReads) > 0 {
			failReads(g, fmt.Errorf("multiraft: group %d: read: %w", g.id, ErrLeadershipLost))
		}
	}
	if was == raft.StateLeader && !isLeader {
		// Entries beyond the commit index may be overwritten by the next leader. Tell their
		// proposers now rather than when (if ever) another entry is applied there; entries
		// up to the commit index stay committed and their waiters are kept.
		commit := g.rn.BasicStatus().GetCommit()
		n := 0
		for _, p := range g.waiters {
			if p.index <= commit {
				g.waiters[n] = p
				n++
				continue
			}
			p.finish(0, fmt.Errorf("multiraft: group %d: entry %d: %w", g.id, p.index, ErrLeadershipLost))
		}
		clear(g.waiters[n:])
		g.waiters = g.waiters[:n]
	}
	s.h.log.Debug("role changed", "group", g.id, "role", ss.RaftState.String(), "leader", ss.Lead)
}

func (s *shard) dropLeader(g *group) {
	i := g.leaderPos
	last := len(s.leaders) - 1
	s.leaders[i] = s.leaders[last]
	s.leaders[i].leaderPos = i
	s.leaders[last] = nil
	s.leaders = s.leaders[:last]
	g.leaderPos = -1
	if len(s.leaders) == 0 {
		s.leaders = nil
	}
}

// complete steps the responses of a finished storage message back into raft. For an apply it
// also applies conf changes to raft and settles the proposals whose entries were applied.
func (s *shard) complete(d *localDone) {
	if d.kind == doneReset {
		// Every completion of the group queued before came first and was dropped.
		if d.reset.err == nil {
			s.h.forgetFailure(d.group)
		}
		d.reset.done <- d.reset.err
		return
	}
	if s.h.failure(d.group) != nil {
		// Whatever it completes, the group no longer runs.
		s.dropFailed(d.group)
		return
	}
	g := s.groups[d.group]
	if g == nil {
		// Unload waits for every completion, so this is a bug, not a race.
		s.h.log.Error("storage completion for a group not loaded", "group", d.group)
		return
	}
	self := s.h.cfg.NodeID
	confChanged := false
	switch d.kind {
	case doneAppend:
		g.appending--
		if d.installed {
			g.restoring = false
		}
	case doneApply:
		g.applying--
		for _, e := range d.entries {
			if e.GetIndex() <= g.confFloor {
				continue // already in the configuration raft started from
			}
			cs, err := applyConfChange(g.rn, e)
			if err != nil {
				// Corrupt, or a change raft cannot take: this group cannot go on, the others can.
				s.failLocal(g, e.GetIndex(), err)
				return
			}
			if cs != nil {
				g.confState, confChanged = cs, true
				if g.admit != nil && Admits(e, self, g.admit) {
					g.admit = nil
					s.h.log.Info("replica admitted to its group", "group", g.id, "index", e.GetIndex())
				}
			}
		}
	}
	for _, m := range d.msgs {
		if m.GetTo() != self {
			continue // sent to its peer by the stage
		}
		if err := g.rn.Step(m); err != nil {
			s.h.log.Debug("local response refused by raft", "group", g.id, "type", m.GetType().String(), "err", err)
		}
	}
	if d.kind == doneApply {
		s.settle(g, d.entries)
		if n := len(d.entries); n > 0 {
			s.record(g, d.entries[n-1], d.snap, confChanged)
		}
	}
	s.markDirty(g)
}

func (s *shard) tick(n int) {
	// A backlog of ticks is one long pause, not many heartbeats' worth of work.
	n = min(n, s.h.cfg.ElectionTick)
	if s.h.cfg.SelfElecting {
		for _, g := range s.groups {
			if g.admit != nil {
				// On probation: its election timer would make it campaign (see probation).
				continue
			}
			for range n {
				g.rn.Tick()
			}
			s.markDirty(g)
		}
		return
	}
	for _, g := range s.leaders {
		for range n {
			g.rn.Tick()
		}
		s.markDirty(g)
	}
}

func (s *shard) step(e Envelope) {
	g := s.groups[e.GroupID]
	if g == nil {
		return // hibernated or never loaded here; the control tier loads before it orders
	}
	if s.h.failure(g.id) != nil {
		s.dropFailed(g.id)
		return
	}
	m := e.Msg
	if m.GetType() == raftpb.MessageType_MsgSnap {
		m = s.admitSnapshot(g, m)
	}
	if g.admit != nil {
		if m = g.probation(m); m == nil {
			return
		}
	}
	m = s.sanitize(g, m)
	err, panicked := stepRecovered(g.rn, m)
	if panicked != nil {
		s.failLocal(g, 0, panicked)
		return
	}
	if g.role == raft.StateLeader && isAck(m) {
		s.recordAck(g, m)
	}
	if err != nil {
		s.h.log.Debug("raft refused message", "group", g.id, "type", m.GetType().String(), "from", m.GetFrom(), "err", err)
	}
	s.markDirty(g)
}

// recordAck notes when m's sender answered this leader, if m is of its current term. The
// term is cached: raft's status is read only when an answer's term differs from it, which is
// rare (a stale answer, or a leadership renewed in a new term within one round).
func (s *shard) recordAck(g *group, m *raftpb.Message) {
	if m.GetTerm() != g.leaderTerm {
		if term := g.rn.BasicStatus().GetTerm(); term != g.leaderTerm {
			g.leaderTerm, g.acked = term, nil // contact of an earlier term counts for nothing
		}
		if m.GetTerm() != g.leaderTerm {
			return
		}
	}
	if g.acked == nil {
		g.acked = make(map[uint64]time.Time, 2)
	}
	g.acked[m.GetFrom()] = s.now
}

// isAck reports whether m answers a leader's append or heartbeat.
func isAck(m *raftpb.Message) bool {
	t := m.GetType()
	return t == raftpb.MessageType_MsgAppResp || t == raftpb.MessageType_MsgHeartbeatResp
}
