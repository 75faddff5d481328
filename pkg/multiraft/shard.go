package multiraft

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	"go.etcd.io/raft/v3"
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
}

// inbox is what a worker takes at the start of a round.
type inbox struct {
	// local are completions from the storage stages; they are never dropped.
	local       []localDone
	props       []*Proposal
	ops         []func()
	ticks       int
	unreachable []peer
	msgs        []Envelope
}

type peer struct{ group, node uint64 }

type doneKind uint8

const (
	doneAppend doneKind = iota
	doneApply
)

// localDone is a completed MsgStorageAppend or MsgStorageApply of one group: msgs are its
// responses (only those addressed to this node are stepped) and, for an apply, entries are
// what was applied.
type localDone struct {
	kind    doneKind
	group   uint64
	msgs    []*raftpb.Message
	entries []*raftpb.Entry
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

func (s *shard) addTick() {
	s.mu.Lock()
	s.in.ticks++
	s.mu.Unlock()
	s.wake()
}

func (in *inbox) empty() bool {
	return len(in.local) == 0 && len(in.props) == 0 && len(in.ops) == 0 && in.ticks == 0 &&
		len(in.unreachable) == 0 && len(in.msgs) == 0
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
	clear(in.msgs)
	s.spare = inbox{
		local:       in.local[:0],
		props:       in.props[:0],
		ops:         in.ops[:0],
		unreachable: in.unreachable[:0],
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
	for _, u := range in.unreachable {
		if g := s.groups[u.group]; g != nil {
			g.rn.ReportUnreachable(u.node)
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
		if g.rn.HasReady() {
			s.handleReady(g)
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
		s.h.cfg.Transport.Send(s.out)
		clear(s.out)
		s.out = s.out[:0]
	}
	if len(s.appends) > 0 {
		s.h.appends.push(s.appends)
		clear(s.appends)
		s.appends = s.appends[:0]
	}
	if len(s.applies) > 0 {
		s.h.applies.push(s.applies)
		clear(s.applies)
		s.applies = s.applies[:0]
	}
	return worked
}

// handleReady takes a group's Ready and routes its messages: the append to the append stage,
// the apply to the apply stage, the rest to peers. With AsyncStorageWrites the Ready's other
// fields are carried by those messages.
func (s *shard) handleReady(g *group) {
	rd := g.rn.Ready()
	var appendMsg *raftpb.Message
	for _, m := range rd.Messages {
		switch m.GetTo() {
		case raft.LocalAppendThread:
			appendMsg = m
			if snap := m.GetSnapshot(); !raft.IsEmptySnap(snap) {
				// The host never compacts, so no leader sends snapshots, and the Applier
				// could not take one; going on would apply entries on a missing state.
				s.h.fail(fmt.Errorf("multiraft: group %d: received a snapshot at index %d; snapshots are not supported",
					g.id, snap.GetMetadata().GetIndex()))
			}
			if ents := m.GetEntries(); len(ents) > 0 {
				last := ents[len(ents)-1]
				g.lastIndex, g.lastTerm = last.GetIndex(), last.GetTerm()
			}
			g.appending++
			s.appends = append(s.appends, appendTask{group: g.id, msg: m, bytes: entryBytes(m.GetEntries())})
		case raft.LocalApplyThread:
			g.applying++
			s.applies = append(s.applies, applyTask{group: g.id, msg: m, floor: g.applyFloor})
		default:
			s.out = append(s.out, Envelope{GroupID: g.id, Msg: m})
		}
	}
	if len(g.unverified) > 0 {
		s.verify(g, appendMsg)
	}
	if rd.SoftState != nil {
		s.setRole(g, rd.SoftState)
	}
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
	g := s.groups[d.group]
	if g == nil {
		// Unload waits for every completion, so this is a bug, not a race.
		s.h.log.Error("storage completion for a group not loaded", "group", d.group)
		return
	}
	self := s.h.cfg.NodeID
	switch d.kind {
	case doneAppend:
		g.appending--
	case doneApply:
		g.applying--
		for _, e := range d.entries {
			if err := applyConfChange(g.rn, e); err != nil {
				s.h.fail(fmt.Errorf("multiraft: group %d: %w", g.id, err))
				return
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
	}
	s.markDirty(g)
}

func applyConfChange(rn *raft.RawNode, e *raftpb.Entry) error {
	var cc raftpb.ConfChangeI
	switch e.GetType() {
	case raftpb.EntryConfChange:
		v1 := new(raftpb.ConfChange)
		if err := proto.Unmarshal(e.GetData(), v1); err != nil {
			return fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
		}
		cc = v1
	case raftpb.EntryConfChangeV2:
		v2 := new(raftpb.ConfChangeV2)
		if err := proto.Unmarshal(e.GetData(), v2); err != nil {
			return fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
		}
		cc = v2
	default:
		return nil
	}
	rn.ApplyConfChange(cc)
	return nil
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
	g := s.groups[id]
	if g == nil {
		for _, p := range props {
			p.finish(0, fmt.Errorf("multiraft: group %d: %w", id, ErrGroupNotFound))
		}
		return
	}
	if g.rn.HasReady() {
		s.handleReady(g) // makes lastIndex exact
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
		n, size := 0, uint64(0)
		for n < len(props) && (n == 0 || size+uint64(len(props[n].data)) <= limit) {
			size += uint64(len(props[n].data))
			n++
		}
		batch := props[:n]
		props = props[n:]
		ents := make([]*raftpb.Entry, n)
		for i, p := range batch {
			ents[i] = &raftpb.Entry{Data: p.data}
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
		for _, p := range batch {
			g.lastIndex++
			p.index, p.term = g.lastIndex, term
		}
		g.lastTerm = term
		g.waiters = append(g.waiters, batch...)
		g.unverified = append(g.unverified, batch...)
	}
	s.markDirty(g)
}

func (s *shard) tick(n int) {
	// A backlog of ticks is one long pause, not many heartbeats' worth of work.
	n = min(n, s.h.cfg.ElectionTick)
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
	if err := g.rn.Step(e.Msg); err != nil {
		s.h.log.Debug("raft refused message", "group", g.id, "type", e.Msg.GetType().String(), "from", e.Msg.GetFrom(), "err", err)
	}
	s.markDirty(g)
}

func (s *shard) lookup(id uint64) (*group, error) {
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

func (s *shard) unload(id uint64) error {
	g, err := s.lookup(id)
	if err != nil {
		return err
	}
	if g.rn.HasReady() {
		s.handleReady(g)
	}
	if why := g.quiescence(); why != "" {
		return fmt.Errorf("multiraft: group %d: %w: %s", id, ErrNotQuiescent, why)
	}
	if g.leaderPos >= 0 {
		s.dropLeader(g)
	}
	delete(s.groups, id)
	g.loaded = false
	g.rn = nil
	if n := len(s.groups); n == 0 || (s.peak >= 1024 && n <= s.peak/4) {
		s.groups = compacted(s.groups)
		s.peak = n
	}
	return nil
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
	if g.rn.HasReady() {
		s.handleReady(g) // so LastIndex counts entries raft appended since the last round
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
	}
}
