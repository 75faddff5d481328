package fsm

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// DefaultHistory is how many recent events the FSM keeps for resuming watchers.
const DefaultHistory = 10_000

// FSM is the arbiter's replicated state machine. Apply and ApplyEntry must be called in log
// order by one goroutine (the raft apply loop); reads may run concurrently with them.
type FSM struct {
	mu   sync.RWMutex
	st   *state
	hist history
}

// Option configures New.
type Option func(*options)

type options struct{ history int }

// WithHistory sets how many recent events are kept for EventsSince (DefaultHistory if unset).
// It only bounds memory; it does not affect the replicated state.
func WithHistory(events int) Option {
	return func(o *options) { o.history = max(events, 0) }
}

// New returns an empty state machine at revision 0.
func New(opts ...Option) *FSM {
	o := options{history: DefaultHistory}
	for _, opt := range opts {
		opt(&o)
	}
	return &FSM{st: newState(), hist: newHistory(o.history, 0)}
}

// numChannelStates bounds ChannelState values; a new state must be added here too.
const numChannelStates = int(arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATING) + 1

// state is everything that is replicated. It is a separate type so Restore can build a new one
// aside and swap it in only once it is known to be consistent.
type state struct {
	revision    uint64
	nextGroupID uint64
	nodes       map[uint64]*Node
	// nodeIDs is sorted: placement and rebalancing walk nodes in id order, never in map order.
	nodeIDs  []uint64
	channels map[string]*Channel
	index    slotIndex
	slots    [NumSlots]Slot
	// byState counts channels per ChannelState value.
	byState [numChannelStates]uint64
	// peers[a][b] is how many channels list both a and b as replicas; liveness asks which
	// peers share channels with a node, and scanning every channel for that would not scale.
	peers map[uint64]map[uint64]uint32
}

func newState() *state {
	st := &state{
		nextGroupID: 1,
		nodes:       make(map[uint64]*Node),
		channels:    make(map[string]*Channel),
		peers:       make(map[uint64]map[uint64]uint32),
	}
	for i := range st.slots {
		st.slots[i].Slot = uint32(i)
	}
	return st
}

// emit records one change under its own new revision. Callers that store the revision in
// the changed object (channels) set it to Revision()+1 before emitting, so the event carries
// the object exactly as it now is.
func (f *FSM) emit(ev Event) {
	f.st.revision++
	ev.Revision = f.st.revision
	f.hist.append(ev)
}

// Encode marshals a command into a log entry.
func Encode(cmd *arbiterv1.Command) ([]byte, error) {
	if cmd == nil || cmd.GetKind() == nil {
		return nil, fmt.Errorf("encode: %w: no command kind", ErrInvalidCommand)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return b, nil
}

// Decode unmarshals a log entry.
func Decode(data []byte) (*arbiterv1.Command, error) {
	cmd := &arbiterv1.Command{}
	if err := proto.Unmarshal(data, cmd); err != nil {
		return nil, fmt.Errorf("decode entry: %w: %w", ErrInvalidCommand, err)
	}
	if cmd.GetKind() == nil {
		// Either garbage that happened to parse or a command kind from a newer version; both
		// must be refused identically by every member.
		return nil, fmt.Errorf("decode entry: %w: no known command kind", ErrInvalidCommand)
	}
	return cmd, nil
}

// ApplyEntry decodes and applies one committed log entry. The result is a RegisterNodeResult,
// SetNodeStateResult, CreateChannelResult or CompareAndSetResult; an error means the state is
// unchanged (see the package doc: it is still an applied entry).
func (f *FSM) ApplyEntry(data []byte) (any, error) {
	cmd, err := Decode(data)
	if err != nil {
		return nil, err
	}
	return f.Apply(cmd)
}

// Apply applies one command; see ApplyEntry.
func (f *FSM) Apply(cmd *arbiterv1.Command) (any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var (
		res any
		err error
	)
	switch k := cmd.GetKind().(type) {
	case *arbiterv1.Command_RegisterNode:
		res, err = f.registerNode(k.RegisterNode)
	case *arbiterv1.Command_SetNodeState:
		res, err = f.setNodeState(k.SetNodeState)
	case *arbiterv1.Command_CreateChannel:
		res, err = f.createChannel(k.CreateChannel)
	case *arbiterv1.Command_CompareAndSetChannels:
		res = f.compareAndSet(k.CompareAndSetChannels)
	default:
		err = fmt.Errorf("apply: %w: no known command kind", ErrInvalidCommand)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// commandTime converts the leader's timestamp; a command without one is a proposer bug.
func commandTime(ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, fmt.Errorf("%w: missing time", ErrInvalidCommand)
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", ErrInvalidCommand, err)
	}
	return ts.AsTime(), nil
}

// Revision is the revision of the last change.
func (f *FSM) Revision() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.revision
}

// Node returns one node.
func (f *FSM) Node(id uint64) (Node, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.st.nodes[id]
	if !ok {
		return Node{}, false
	}
	return *n, true
}

// Nodes returns every node in id order.
func (f *FSM) Nodes() []Node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]Node, 0, len(f.st.nodeIDs))
	for _, id := range f.st.nodeIDs {
		out = append(out, *f.st.nodes[id])
	}
	return out
}

// Peers returns, in id order, the nodes that share at least one channel with id.
func (f *FSM) Peers(id uint64) []uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	m := f.st.peers[id]
	out := make([]uint64, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Channel returns one channel.
func (f *FSM) Channel(id string) (Channel, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	c, ok := f.st.channels[id]
	if !ok {
		return Channel{}, false
	}
	return c.clone(), true
}

// ChannelPage is one page of ListChannels.
type ChannelPage struct {
	Channels []Channel
	// More is true when channels after the last one of this page exist.
	More bool
	// Revision is the revision the page reflects; watch from it to follow later changes.
	Revision uint64
}

// ListChannels returns up to limit channels with ids greater than after, in id order, only
// those of the given slots when slots is non-empty.
func (f *FSM) ListChannels(after string, limit int, slots []uint32) (ChannelPage, error) {
	if limit <= 0 {
		return ChannelPage{}, fmt.Errorf("list channels: %w: limit %d must be positive", ErrInvalidArgument, limit)
	}
	for _, s := range slots {
		if s >= NumSlots {
			return ChannelPage{}, fmt.Errorf("list channels: %w: slot %d out of range [0, %d)", ErrInvalidArgument, s, NumSlots)
		}
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	ids := f.st.index.list(after, limit+1, slots)
	page := ChannelPage{Revision: f.st.revision}
	if len(ids) > limit {
		ids, page.More = ids[:limit], true
	}
	page.Channels = make([]Channel, len(ids))
	for i, id := range ids {
		page.Channels[i] = f.st.channels[id].clone()
	}
	return page, nil
}

// Slots returns the 256 slot assignments in slot order.
func (f *FSM) Slots() []Slot {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.st.slots[:])
}

// Counts returns channel and node counts by state.
func (f *FSM) Counts() Counts {
	f.mu.RLock()
	defer f.mu.RUnlock()
	c := Counts{
		Channels:        uint64(len(f.st.channels)),
		ChannelsByState: make(map[arbiterv1.ChannelState]uint64),
		NodesByState:    make(map[arbiterv1.NodeState]uint64),
	}
	for s, n := range f.st.byState {
		if n > 0 {
			c.ChannelsByState[arbiterv1.ChannelState(s)] = n
		}
	}
	for _, n := range f.st.nodes {
		c.NodesByState[n.State]++
	}
	return c
}
