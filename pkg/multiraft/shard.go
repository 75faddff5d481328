package multiraft

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/confchange"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"
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

// inbox is what a worker takes at the start of a round.
type inbox struct {
	// local are completions from the storage stages; they are never dropped.
	local       []localDone
	props       []*Proposal
	ops         []func()
	ticks       int
	unreachable []peer
	// snapSent are the MsgSnaps handed to the Transport, to report to raft as sent.
	snapSent []peer
	msgs     []Envelope
}

type peer struct{ group, node uint64 }

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

// acceptable says whether a message may come from a peer. Local message types and types the
// host does not use are refused: a peer's MsgProp in particular would put entries into the
// leader's log behind the host's back, and a forged local sender would be stepped as if it
// came from this node's storage stages.
func (s *shard) acceptable(e Envelope) bool {
	m := e.Msg
	if m == nil || e.GroupID == 0 || m.GetTo() != s.h.cfg.NodeID {
		return false
	}
	if from := m.GetFrom(); from == 0 || raft.IsLocalMsgTarget(from) || from == s.h.cfg.NodeID {
		return false
	}
	switch m.GetType() {
	case raftpb.MessageType_MsgApp, raftpb.MessageType_MsgAppResp,
		raftpb.MessageType_MsgVote, raftpb.MessageType_MsgVoteResp,
		raftpb.MessageType_MsgPreVote, raftpb.MessageType_MsgPreVoteResp,
		raftpb.MessageType_MsgHeartbeat, raftpb.MessageType_MsgHeartbeatResp,
		raftpb.MessageType_MsgSnap, raftpb.MessageType_MsgTimeoutNow:
		return true
	}
	return false
}

func (s *shard) pushMsgs(envs []Envelope) {
	dropped := 0
	s.mu.Lock()
	for _, e := range envs {
		if s.closed || len(s.in.msgs) >= s.h.cfg.MaxInboxMessages || !s.acceptable(e) {
			dropped++
			continue
		}
		s.in.msgs = append(s.in.msgs, e)
	}
	s.mu.Unlock()
	if dropped > 0 {
		s.h.log.Debug("dropped incoming raft messages", "count", dropped)
	}
	if dropped < len(envs) {
		s.wake()
	}
}

func (s *shard) pushProposal(p *Proposal) {
	s.mu.Lock()
	var err error
	switch {
	case s.closed:
		err = s.h.stopErr()
	case len(s.in.props) >= s.h.cfg.MaxPendingProposals:
		err = fmt.Errorf("multiraft: group %d: %d proposals queued: %w", p.group, len(s.in.props), ErrOverloaded)
	default:
		s.in.props = append(s.in.props, p)
	}
	s.mu.Unlock()
	if err != nil {
		p.finish(0, err)
		return
	}
	s.wake()
}

func (s *shard) pushOp(op func()) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.in.ops = append(s.in.ops, op)
	s.mu.Unlock()
	s.wake()
	return true
}

func (s *shard) pushLocal(done []localDone) {
	s.mu.Lock()
	if !s.closed {
		s.in.local = append(s.in.local, done...)
	}
	s.mu.Unlock()
	s.wake()
}

func (s *shard) pushUnreachable(groupID, nodeID uint64) {
	s.mu.Lock()
	// Reports only speed recovery up; past the message bound they are noise.
	if !s.closed && len(s.in.unreachable) < s.h.cfg.MaxInboxMessages {
		s.in.unreachable = append(s.in.unreachable, peer{groupID, nodeID})
	}
	s.mu.Unlock()
	s.wake()
}

func (s *shard) pushSnapSent(sent []peer) {
	s.mu.Lock()
	if !s.closed {
		s.in.snapSent = append(s.in.snapSent, sent...)
	}
	s.mu.Unlock()
	s.wake()
}

func (s *shard) addTick() {
	s.mu.Lock()
	s.in.ticks++
	s.mu.Unlock()
	s.wake()
}

func (in *inbox) empty() bool {
	return len(in.local) == 0 && len(in.props) == 0 && len(in.ops) == 0 && in.ticks == 0 &&
		len(in.unreachable) == 0 && len(in.snapSent) == 0 && len(in.msgs) == 0
}

func (s *shard) pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.in.empty()
}

// take swaps the inbox for the spare one, leaving peer messages and proposals beyond
// MaxRoundItems queued for the next round. Completions, operations and ticks are always
// taken whole: they are few, and completions free raft's flow control.
func (s *shard) take() inbox {
	limit := s.h.cfg.MaxRoundItems
	s.mu.Lock()
	in := s.in
	s.in, s.spare = s.spare, inbox{}
	if len(in.msgs) > limit {
		s.in.msgs = append(s.in.msgs, in.msgs[limit:]...)
		clear(in.msgs[limit:])
		in.msgs = in.msgs[:limit]
	}
	if len(in.props) > limit {
		s.in.props = append(s.in.props, in.props[limit:]...)
		clear(in.props[limit:])
		in.props = in.props[:limit]
	}
	s.mu.Unlock()
	return in
}

func (s *shard) recycle(in inbox) {
	clear(in.local)
	clear(in.props)
	clear(in.ops)
	clear(in.unreachable)
	clear(in.snapSent)
	clear(in.msgs)
	s.spare = inbox{
		local:       in.local[:0],
		props:       in.props[:0],
		ops:         in.ops[:0],
		unreachable: in.unreachable[:0],
		snapSent:    in.snapSent[:0],
		msgs:        in.msgs[:0],
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

// readIndex queues a read confirmation (Host.ReadIndexAsync) for the group's next Ready.
func (s *shard) readIndex(id uint64, p *Proposal) {
	g, err := s.lookup(id)
	if err != nil {
		p.finish(0, err)
		return
	}
	if bs := g.rn.BasicStatus(); bs.RaftState != raft.StateLeader {
		p.finish(0, &NotLeaderError{GroupID: id, LeaderID: bs.Lead, Term: bs.GetTerm()})
		return
	}
	g.readBatch = append(g.readBatch, p)
	s.markDirty(g)
}

// issueReads hands the reads queued this round to raft as one ReadIndex: one heartbeat to each
// peer confirms them all.
func (s *shard) issueReads(g *group) {
	s.readSeq++
	if g.pendingReads == nil {
		g.pendingReads = make(map[uint64][]*Proposal)
	}
	g.pendingReads[s.readSeq] = g.readBatch
	g.readBatch = nil
	g.rn.ReadIndex(binary.BigEndian.AppendUint64(nil, s.readSeq))
}

// finishReads answers the reads raft confirmed with rs: a quorum acknowledged this replica's
// leadership after they were issued, and rs.Index is the commit index as of then.
func (s *shard) finishReads(g *group, rs raft.ReadState) {
	if len(rs.RequestCtx) != 8 {
		return
	}
	seq := binary.BigEndian.Uint64(rs.RequestCtx)
	for _, p := range g.pendingReads[seq] {
		p.finish(rs.Index, nil)
	}
	delete(g.pendingReads, seq)
}

// failReads fails every read of the group not confirmed yet: raft forgets them when its
// leader steps down.
func failReads(g *group, err error) {
	for _, p := range g.readBatch {
		p.finish(0, err)
	}
	for _, ps := range g.pendingReads {
		for _, p := range ps {
			p.finish(0, err)
		}
	}
	g.readBatch, g.pendingReads = nil, nil
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

// verify checks that the entries of this round's proposals are where propose predicted:
// same index, term and data. A proposal that is not there (its leader stepped down and
// its entry was overwritten in the same round) fails instead of waiting on a position that
// now belongs to another entry.
func (s *shard) verify(g *group, m *raftpb.Message) {
	ents := m.GetEntries()
	for _, p := range g.unverified {
		ok := false
		if len(ents) > 0 && p.index >= ents[0].GetIndex() {
			if off := p.index - ents[0].GetIndex(); off < uint64(len(ents)) {
				e := ents[off]
				ok = e.GetIndex() == p.index && e.GetTerm() == p.term && bytes.Equal(e.GetData(), p.data)
			}
		}
		p.data = nil
		if !ok {
			s.h.log.Warn("proposal not found at its predicted position", "group", g.id, "index", p.index, "term", p.term)
			g.waiters = slices.DeleteFunc(g.waiters, func(w *Proposal) bool { return w == p })
			p.finish(0, fmt.Errorf("multiraft: group %d: entry %d: %w", g.id, p.index, ErrLeadershipLost))
		}
	}
	clear(g.unverified)
	g.unverified = g.unverified[:0]
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

// confRecordInterval is how many applied entries go by, at most, between two configuration
// records of a group, bounding what a restart after a crash replays through raft (see
// newGroup). A record costs one small unsynced write.
const confRecordInterval = 1024

// record queues for the append stage what the Store should know once last is applied: the
// snapshot the apply stage took there, or else the configuration after a conf change or
// after confRecordInterval entries. confState is as of last: every conf change up to it was
// applied to raft, in order, before this.
func (s *shard) record(g *group, last *raftpb.Entry, taken *takenSnapshot, confChanged bool) {
	idx := last.GetIndex()
	if idx < g.confFloor {
		// Raft already has a later configuration (a snapshot it installed, or the one it
		// was loaded with): confState is not the one as of idx.
		return
	}
	rec := &recordTask{}
	switch {
	case taken != nil && taken.index == idx:
		rec.snap = &raftpb.Snapshot{
			Metadata: &raftpb.SnapshotMetadata{
				Index:     new(idx),
				Term:      new(last.GetTerm()),
				ConfState: g.confState,
			},
			Data: taken.data,
		}
		if keep := s.h.cfg.SnapshotKeepEntries; idx >= keep {
			rec.compact = idx + 1 - keep
		}
	case confChanged || idx >= g.confRecorded+confRecordInterval:
		if idx <= g.confRecorded {
			return
		}
		rec.conf = &confRecord{index: idx, cs: g.confState}
	default:
		return
	}
	g.confRecorded = max(g.confRecorded, idx)
	g.appending++
	s.appends = append(s.appends, appendTask{group: g.id, rec: rec})
}

// applyConfChange applies the conf change in e, if it holds one, to raft and returns the new
// configuration. Raft panics on a change its configuration cannot take; ProposeConfChange
// refuses those, but a committed one (proposed by another host), or one that does not decode,
// must fail its group with an error, not the process.
func applyConfChange(rn *raft.RawNode, e *raftpb.Entry) (cs *raftpb.ConfState, err error) {
	var cc raftpb.ConfChangeI
	switch e.GetType() {
	case raftpb.EntryConfChange:
		v1 := new(raftpb.ConfChange)
		if err := proto.Unmarshal(e.GetData(), v1); err != nil {
			return nil, fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
		}
		cc = v1
	case raftpb.EntryConfChangeV2:
		v2 := new(raftpb.ConfChangeV2)
		if err := proto.Unmarshal(e.GetData(), v2); err != nil {
			return nil, fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
		}
		cc = v2
	default:
		return nil, nil
	}
	defer func() {
		if r := recover(); r != nil {
			cs, err = nil, fmt.Errorf("apply conf change at %d: %v", e.GetIndex(), r)
		}
	}()
	return rn.ApplyConfChange(cc), nil
}

// settle resolves the waiters of applied entries: the entry applied at a proposal's index
// is the proposal's exactly when it has the proposal's term.
func (s *shard) settle(g *group, applied []*raftpb.Entry) {
	n := 0
	for _, e := range applied {
		idx := e.GetIndex()
		for n < len(g.waiters) && g.waiters[n].index <= idx {
			p := g.waiters[n]
			n++
			if p.index == idx && p.term == e.GetTerm() {
				p.finish(idx, nil)
			} else {
				p.finish(0, fmt.Errorf("multiraft: group %d: entry %d: %w", g.id, p.index, ErrProposalLost))
			}
		}
	}
	if n == 0 {
		return
	}
	clear(g.waiters[:n])
	g.waiters = g.waiters[n:]
	if len(g.waiters) == 0 {
		g.waiters = nil // let the backing array go
	}
}

// propose hands the proposals queued this round to raft, per group as few MsgProps as
// MaxProposalBatchBytes allows. The index each entry gets is known in advance: once raft has
// nothing unhandled the group's last index is exact, and a leader appends a MsgProp's
// entries right after it, in order, at its current term.
func (s *shard) propose(props []*Proposal) {
	slices.SortStableFunc(props, func(a, b *Proposal) int { return cmp.Compare(a.group, b.group) })
	for len(props) > 0 {
		n := 1
		for n < len(props) && props[n].group == props[0].group {
			n++
		}
		s.proposeGroup(props[0].group, props[:n])
		props = props[n:]
	}
}

func (s *shard) proposeGroup(id uint64, props []*Proposal) {
	g, err := s.lookup(id)
	if err != nil {
		for _, p := range props {
			p.finish(0, err)
		}
		return
	}
	if g.rn.HasReady() && !s.handleReady(g) { // makes lastIndex exact
		for _, p := range props {
			p.finish(0, s.h.Failure(id))
		}
		return
	}
	bs := g.rn.BasicStatus()
	if bs.RaftState != raft.StateLeader {
		err := &NotLeaderError{GroupID: id, LeaderID: bs.Lead, Term: bs.GetTerm()}
		for _, p := range props {
			p.finish(0, err)
		}
		return
	}
	term := bs.GetTerm()
	limit := s.h.cfg.MaxProposalBatchBytes
	for len(props) > 0 {
		// A conf change goes alone, so that raft's verdict on it is its own.
		n, size := 1, uint64(len(props[0].data))
		for !props[0].conf && n < len(props) && !props[n].conf && size+uint64(len(props[n].data)) <= limit {
			size += uint64(len(props[n].data))
			n++
		}
		batch := props[:n]
		props = props[n:]
		ents := make([]*raftpb.Entry, n)
		for i, p := range batch {
			ents[i] = &raftpb.Entry{Data: p.data}
		}
		conf := batch[0].conf
		if conf {
			if err := validConfChange(g.confState, batch[0].data); err != nil {
				batch[0].finish(0, fmt.Errorf("multiraft: group %d: %w: %w", id, ErrConfChangeRefused, err))
				continue
			}
			ents[0].Type = raftpb.EntryType_EntryConfChangeV2.Enum()
		}
		err := g.rn.Step(&raftpb.Message{
			Type:    raftpb.MessageType_MsgProp.Enum(),
			From:    proto.Uint64(s.h.cfg.NodeID),
			Entries: ents,
		})
		if err != nil {
			// raft.ErrProposalDropped: over MaxUncommittedEntriesSize or a transfer is on.
			for _, p := range batch {
				p.finish(0, fmt.Errorf("multiraft: group %d: propose: %w", id, err))
			}
			continue
		}
		g.lastTerm = term
		if conf && ents[0].GetType() != raftpb.EntryType_EntryConfChangeV2 {
			// Raft appended an empty entry in its place: a conf change may not be applied
			// yet (an earlier one, or one in the log the leader has not applied since its
			// election).
			g.lastIndex++
			batch[0].finish(0, fmt.Errorf("multiraft: group %d: %w: a conf change may be pending", id, ErrConfChangeRefused))
			continue
		}
		for _, p := range batch {
			g.lastIndex++
			p.index, p.term = g.lastIndex, term
		}
		g.waiters = append(g.waiters, batch...)
		g.unverified = append(g.unverified, batch...)
	}
	s.markDirty(g)
}

// validConfChange checks the encoded ConfChangeV2 against the configuration as raft would
// when applying it, so that a change raft cannot apply (it panics on those) is refused
// before it is committed. No other conf change can come between: raft takes one only when
// every earlier one is applied.
func validConfChange(cs *raftpb.ConfState, data []byte) error {
	cc := new(raftpb.ConfChangeV2)
	if err := proto.Unmarshal(data, cc); err != nil {
		return fmt.Errorf("decode conf change: %w", err)
	}
	chg := confchange.Changer{Tracker: tracker.MakeProgressTracker(1, 0), LastIndex: 1}
	cfg, trk, err := confchange.Restore(chg, cs)
	if err != nil {
		return fmt.Errorf("current configuration: %w", err)
	}
	chg.Tracker.Config, chg.Tracker.Progress = cfg, trk
	if cc.LeaveJoint() {
		_, _, err = chg.LeaveJoint()
	} else if autoLeave, joint := cc.EnterJoint(); joint {
		_, _, err = chg.EnterJoint(autoLeave, cc.GetChanges()...)
	} else {
		_, _, err = chg.Simple(cc.GetChanges()...)
	}
	return err
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

// probation filters what a group on probation (GroupSpec.AdmitToken) takes from its peers:
// no vote requests and no leadership transfers (its vote may be one an earlier store of this
// node already gave in the same term, and its log may lack what that store acknowledged), and
// heartbeats without their commit index, which the leader sends as what it believes this
// replica holds (raft would panic on one beyond the log, or commit entries this log holds
// differently). The heartbeat itself is still answered, so the leader keeps probing with
// appends, whose commit index raft checks against this log.
//
// An append beyond the end of this log is answered at most once per heartbeat: a leader that
// believes this replica holds more than it does (the old store's match index) answers each
// rejection with the same append at once, a loop at network speed until it removes this
// replica, while a leader that merely probes needs one answer per step. Returns nil to drop m.
func (g *group) probation(m *raftpb.Message) *raftpb.Message {
	switch m.GetType() {
	case raftpb.MessageType_MsgVote, raftpb.MessageType_MsgPreVote, raftpb.MessageType_MsgTimeoutNow:
		return nil
	case raftpb.MessageType_MsgApp:
		if m.GetIndex() > g.lastIndex {
			if !g.probeCredit {
				return nil
			}
			g.probeCredit = false
		}
	case raftpb.MessageType_MsgHeartbeat:
		g.probeCredit = true
		if m.GetCommit() == 0 && len(m.GetContext()) == 0 {
			return m
		}
		// The transport's message may be shared; the copy is the only one changed. The
		// context goes too: the answer would count towards a read's confirmation of the
		// leader (ReadIndex), which a vote of the earlier store may already have deposed.
		m = proto.Clone(m).(*raftpb.Message)
		m.Commit = new(uint64(0))
		m.Context = nil
	}
	return m
}

// Admits reports whether e is the conf change that admits replica self on probation with
// token (see GroupSpec.AdmitToken): it adds self, as a voter or a learner, and carries the
// token as its context.
func Admits(e *raftpb.Entry, self uint64, token []byte) bool {
	if e.GetType() != raftpb.EntryConfChangeV2 {
		return false
	}
	var cc raftpb.ConfChangeV2
	if proto.Unmarshal(e.GetData(), &cc) != nil || !bytes.Equal(cc.GetContext(), token) {
		return false
	}
	for _, c := range cc.GetChanges() {
		switch c.GetType() {
		case raftpb.ConfChangeType_ConfChangeAddNode, raftpb.ConfChangeType_ConfChangeAddLearnerNode:
			if c.GetNodeId() == self {
				return true
			}
		}
	}
	return false
}

// admitSnapshot makes a snapshot whose configuration lacks this replica acceptable to raft,
// which otherwise drops it, by adding the replica as a learner.
//
// A leader sends snapshots only to replicas of its applied configuration, so a snapshot
// lacks this replica only when the replica was added after the snapshot's index: a joining
// replica that is sent the group's bootstrap state, or a replica added after the leader's
// last snapshot. The conf change that added it is then committed after the snapshot, and
// this replica replays it with every other entry after the snapshot. Each change names the
// state it gives a replica (voter, learner, removed) whatever the replica was, so from the
// first change that names this replica on, the configuration is exactly the group's; before
// it, the only difference is this replica being a learner, which lets it take entries but
// neither vote for itself nor campaign. (etcd solves the same problem on the leader, by
// replacing the snapshot with a fresh one of its applied state.)
func (s *shard) admitSnapshot(g *group, m *raftpb.Message) *raftpb.Message {
	if raft.IsEmptySnap(m.GetSnapshot()) {
		return m
	}
	self := s.h.cfg.NodeID
	cs := m.GetSnapshot().GetMetadata().GetConfState()
	for _, set := range [][]uint64{cs.GetVoters(), cs.GetLearners(), cs.GetVotersOutgoing()} {
		if slices.Contains(set, self) {
			return m
		}
	}
	// The transport's message may be shared; the copy is the only one changed.
	m = proto.Clone(m).(*raftpb.Message)
	md := raftpb.EnsureSnapshotMetadata(m.GetSnapshot().GetMetadata())
	md.ConfState = raftpb.EnsureConfState(md.ConfState)
	md.ConfState.Learners = append(md.ConfState.Learners, self)
	slices.Sort(md.ConfState.Learners)
	s.h.log.Info("admitting a snapshot from before this replica was added, as a learner",
		"group", g.id, "index", md.GetIndex(), "conf", cs.String())
	return m
}

func (s *shard) lookup(id uint64) (*group, error) {
	if f := s.h.failure(id); f != nil {
		s.dropFailed(id)
		return nil, f
	}
	g := s.groups[id]
	if g == nil {
		return nil, fmt.Errorf("multiraft: group %d: %w", id, ErrGroupNotFound)
	}
	return g, nil
}

func (s *shard) install(gs []*group) {
	for _, g := range gs {
		if s.groups[g.id] != nil {
			continue
		}
		g.loaded = true
		s.groups[g.id] = g
		s.peak = max(s.peak, len(s.groups))
		s.markDirty(g) // entries committed but not applied come out in its first Ready
	}
}

// unload drops a quiescent group. It returns the configuration record to write before the
// Store releases the group, nil when the newest queued one is as of the applied index.
func (s *shard) unload(id uint64) (*confRecord, error) {
	g, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	if g.rn.HasReady() && !s.handleReady(g) {
		return nil, s.h.Failure(id)
	}
	if why := g.quiescence(); why != "" {
		return nil, fmt.Errorf("multiraft: group %d: %w: %s", id, ErrNotQuiescent, why)
	}
	var rec *confRecord
	// At rest everything is applied, so confState is the configuration as of applied.
	if applied := g.rn.BasicStatus().Applied; applied > g.confRecorded && applied >= g.confFloor {
		rec = &confRecord{index: applied, cs: g.confState}
	}
	if g.leaderPos >= 0 {
		s.dropLeader(g)
	}
	failReads(g, fmt.Errorf("multiraft: group %d: read: %w", id, ErrGroupNotFound))
	delete(s.groups, id)
	g.loaded = false
	g.rn = nil
	if n := len(s.groups); n == 0 || (s.peak >= 1024 && n <= s.peak/4) {
		s.groups = compacted(s.groups)
		s.peak = n
	}
	return rec, nil
}

func compacted(m map[uint64]*group) map[uint64]*group {
	fresh := make(map[uint64]*group, len(m))
	for k, v := range m {
		fresh[k] = v
	}
	return fresh
}

func (s *shard) campaign(id uint64) error {
	g, err := s.lookup(id)
	if err != nil {
		return err
	}
	if g.admit != nil {
		return fmt.Errorf("multiraft: group %d: %w (on probation until admitted)", id, ErrCampaignIgnored)
	}
	if err := g.rn.Campaign(); err != nil {
		return fmt.Errorf("multiraft: group %d: campaign: %w", id, err)
	}
	s.markDirty(g)
	if g.rn.BasicStatus().RaftState == raft.StateFollower {
		return fmt.Errorf("multiraft: group %d: %w (learner, not a voter, or conf changes to apply)", id, ErrCampaignIgnored)
	}
	return nil
}

func (s *shard) transferLeader(id, target uint64) error {
	g, err := s.lookup(id)
	if err != nil {
		return err
	}
	bs := g.rn.BasicStatus()
	if bs.RaftState != raft.StateLeader {
		return &NotLeaderError{GroupID: id, LeaderID: bs.Lead, Term: bs.GetTerm()}
	}
	if target == s.h.cfg.NodeID {
		return nil
	}
	voter := false
	g.rn.WithProgress(func(pid uint64, typ raft.ProgressType, _ tracker.Progress) {
		voter = voter || (pid == target && typ == raft.ProgressTypePeer)
	})
	if !voter {
		return fmt.Errorf("multiraft: group %d: transfer leader: node %d is not a voter", id, target)
	}
	g.rn.TransferLeader(target)
	s.markDirty(g)
	return nil
}

func (s *shard) status(id uint64) (Status, error) {
	g, err := s.lookup(id)
	if err != nil {
		return Status{}, err
	}
	// So LastIndex counts entries raft appended since the last round.
	if g.rn.HasReady() && !s.handleReady(g) {
		return Status{}, s.h.Failure(id)
	}
	return g.status(s.h.cfg.NodeID), nil
}

// shutdown fails everything pending. It runs after the worker has stopped.
func (s *shard) shutdown(err error) {
	s.mu.Lock()
	s.closed = true
	in := s.in
	s.in = inbox{}
	s.mu.Unlock()
	for _, p := range in.props {
		p.finish(0, err)
	}
	for _, g := range s.groups {
		for _, p := range g.waiters {
			p.finish(0, err)
		}
		g.waiters, g.unverified = nil, nil
		failReads(g, err)
	}
}
