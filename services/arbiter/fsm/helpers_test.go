package fsm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

const (
	replica    = arbiterv1.NodeRole_NODE_ROLE_REPLICA
	channelctl = arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL

	alive    = arbiterv1.NodeState_NODE_STATE_ALIVE
	suspect  = arbiterv1.NodeState_NODE_STATE_SUSPECT
	dead     = arbiterv1.NodeState_NODE_STATE_DEAD
	draining = arbiterv1.NodeState_NODE_STATE_DRAINING

	hibernated = arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED
	activating = arbiterv1.ChannelState_CHANNEL_STATE_ACTIVATING
	active     = arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE
	electing   = arbiterv1.ChannelState_CHANNEL_STATE_ELECTING
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func addr(id uint64) string { return fmt.Sprintf("10.0.0.%d:7400", id) }

// mustApply applies a command that must succeed, through the encoded path the raft
// integration uses.
func mustApply(t testing.TB, f *FSM, cmd *arbiterv1.Command) any {
	t.Helper()
	data, err := Encode(cmd)
	require.NoError(t, err)
	res, err := f.ApplyEntry(data)
	require.NoError(t, err)
	return res
}

func register(t testing.TB, f *FSM, id uint64, role arbiterv1.NodeRole, zone string) RegisterNodeResult {
	t.Helper()
	return mustApply(t, f, RegisterNodeCommand(id, role, addr(id), zone, t0)).(RegisterNodeResult)
}

// registerStore registers a replica with a store id.
func registerStore(t testing.TB, f *FSM, id, store uint64) RegisterNodeResult {
	t.Helper()
	return mustApply(t, f, RegisterNodeWithStoreCommand(id, replica, addr(id), "", store, t0)).(RegisterNodeResult)
}

func setState(t testing.TB, f *FSM, id uint64, s arbiterv1.NodeState) SetNodeStateResult {
	t.Helper()
	return mustApply(t, f, SetNodeStateCommand(id, s, "test", t0)).(SetNodeStateResult)
}

func create(t testing.TB, f *FSM, id string, rf uint32) CreateChannelResult {
	t.Helper()
	return mustApply(t, f, CreateChannelCommand(id, rf, t0)).(CreateChannelResult)
}

func cas(t testing.TB, f *FSM, requester uint64, changes ...*arbiterv1.ChannelChange) CompareAndSetResult {
	t.Helper()
	return mustApply(t, f, CompareAndSetChannelsCommand(requester, changes...)).(CompareAndSetResult)
}

// ownerOf returns the channelctl owning the channel's slot.
func ownerOf(t testing.TB, f *FSM, channel string) uint64 {
	t.Helper()
	return f.Slots()[SlotOf(channel)].Owner
}

// dump is everything an FSM holds, including derived indexes, for exact comparisons.
type dump struct {
	Revision    uint64
	NextGroupID uint64
	NodeIDs     []uint64
	Nodes       []Node
	Channels    []Channel
	Slots       []Slot
	ByState     [numChannelStates]uint64
	Peers       map[uint64]map[uint64]uint32
	Index       slotIndex
	Counts      Counts
}

func dumpOf(f *FSM) dump {
	f.mu.RLock()
	st := f.st
	d := dump{
		Revision:    st.revision,
		NextGroupID: st.nextGroupID,
		NodeIDs:     slices.Clone(st.nodeIDs),
		ByState:     st.byState,
		Peers:       make(map[uint64]map[uint64]uint32),
		Slots:       slices.Clone(st.slots[:]),
	}
	for i := range st.index {
		d.Index[i] = slices.Clone(st.index[i])
	}
	for a, m := range st.peers {
		d.Peers[a] = make(map[uint64]uint32)
		for b, n := range m {
			d.Peers[a][b] = n
		}
	}
	ids := make([]string, 0, len(st.channels))
	for id := range st.channels {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		d.Channels = append(d.Channels, st.channels[id].clone())
	}
	f.mu.RUnlock()
	d.Nodes = f.Nodes()
	d.Counts = f.Counts()
	return d
}

// requireUnchanged asserts that fn leaves the FSM exactly as it was.
func requireUnchanged(t *testing.T, f *FSM, fn func()) {
	t.Helper()
	before := dumpOf(f)
	fn()
	require.Equal(t, before, dumpOf(f), "state changed")
}

// workload generates a random but meaningful command stream against a model FSM: most
// compare-and-sets are valid (current epoch, slot owner), some are stale or wrong, nodes come
// and go.
type workload struct {
	rng *rand.Rand
	// srng makes the store id choices; a stream of its own keeps the rest of the workload
	// what it was before stores existed.
	srng *rand.Rand
	// nrng makes the next-replica-set choices, in a stream of its own for the same reason.
	nrng *rand.Rand
	now  time.Time
	next int
}

func newWorkload(seed uint64) *workload {
	return &workload{
		rng:  rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		srng: rand.New(rand.NewPCG(seed^0x5704e, seed)),
		nrng: rand.New(rand.NewPCG(seed^0x7e47, seed+1)),
		now:  t0,
	}
}

func (w *workload) bootstrap() []*arbiterv1.Command {
	var cmds []*arbiterv1.Command
	zones := []string{"a", "b", "c"}
	for id := uint64(1); id <= 8; id++ {
		cmds = append(cmds, RegisterNodeWithStoreCommand(id, replica, addr(id), zones[id%3], 0x5000+id, w.now))
	}
	for id := uint64(100); id <= 102; id++ {
		cmds = append(cmds, RegisterNodeCommand(id, channelctl, addr(id), "", w.now))
	}
	return cmds
}

// step returns the next command, looking at f to aim compare-and-sets well.
func (w *workload) step(f *FSM) *arbiterv1.Command {
	w.now = w.now.Add(time.Duration(w.rng.IntN(1000)) * time.Millisecond)
	r := w.rng.IntN(100)
	switch {
	case r < 30:
		w.next++
		id := fmt.Sprintf("ch-%d", w.rng.IntN(w.next+1)) // sometimes an existing one
		return CreateChannelCommand(id, uint32(1+w.rng.IntN(3)), w.now)
	case r < 80:
		page, err := f.ListChannels("", 1000, nil)
		if err != nil || len(page.Channels) == 0 {
			return CreateChannelCommand("ch-0", 3, w.now)
		}
		var changes []*arbiterv1.ChannelChange
		requester := uint64(100 + w.rng.IntN(3))
		for range 1 + w.rng.IntN(5) {
			ch := page.Channels[w.rng.IntN(len(page.Channels))]
			chg := &arbiterv1.ChannelChange{ChannelId: ch.ID, ExpectedEpoch: ch.Epoch}
			if w.rng.IntN(10) == 0 {
				chg.ExpectedEpoch--
			}
			leader := ch.Replicas[w.rng.IntN(len(ch.Replicas))]
			if w.rng.IntN(10) == 0 {
				leader = 0
			}
			term := ch.LeaderTerm + uint64(w.rng.IntN(2))
			state := arbiterv1.ChannelState(1 + w.rng.IntN(5))
			seq := ch.LastSeq + uint64(w.rng.IntN(100))
			chg.LeaderNodeId, chg.LeaderTerm, chg.State, chg.LastSeq = &leader, &term, &state, &seq
			if w.rng.IntN(8) == 0 {
				// Replica-set repair: swap one member for another replica node.
				set := slices.Clone(ch.Replicas)
				i := w.rng.IntN(len(set))
				set[i] = uint64(1 + w.rng.IntN(8))
				chg.ReplicaNodeIds = set
				if w.srng.IntN(2) == 0 {
					// The repair names the store of the replica it added.
					chg.ReplicaStoreIds = map[uint64]uint64{set[i]: w.storeID()}
				}
			}
			if w.srng.IntN(8) == 0 {
				// Store entries, sometimes wrong: a rejoin of a member, a node outside the
				// set, a store id 0, several at once.
				if chg.ReplicaStoreIds == nil {
					chg.ReplicaStoreIds = map[uint64]uint64{}
				}
				for range 1 + w.srng.IntN(3) {
					r, s := ch.Replicas[w.srng.IntN(len(ch.Replicas))], w.storeID()
					switch w.srng.IntN(6) {
					case 0:
						r = uint64(1 + w.srng.IntN(8))
					case 1:
						s = 0
					}
					chg.ReplicaStoreIds[r] = s
				}
			}
			if w.nrng.IntN(6) == 0 {
				// A repair's claim naming the set raft moves to (sometimes together with a
				// replica set, which is refused), or clearing it.
				if w.nrng.IntN(3) == 0 {
					chg.ClearNextReplicas = true
				} else {
					set := slices.Clone(ch.Replicas)
					set[w.nrng.IntN(len(set))] = uint64(1 + w.nrng.IntN(8))
					chg.NextReplicaNodeIds = set
				}
			}
			changes = append(changes, chg)
		}
		if w.rng.IntN(2) == 0 {
			requester = f.Slots()[SlotOf(changes[0].GetChannelId())].Owner
		}
		return CompareAndSetChannelsCommand(requester, changes...)
	case r < 92:
		states := []arbiterv1.NodeState{alive, alive, suspect, dead, draining}
		id := uint64(1 + w.rng.IntN(8))
		if w.rng.IntN(3) == 0 {
			id = uint64(100 + w.rng.IntN(3))
		}
		return SetNodeStateCommand(id, states[w.rng.IntN(len(states))], "workload", w.now)
	default:
		id := uint64(1 + w.rng.IntN(8))
		role := replica
		if w.rng.IntN(3) == 0 {
			id, role = uint64(100+w.rng.IntN(3)), channelctl
		}
		a := addr(id)
		if w.rng.IntN(4) == 0 {
			a = fmt.Sprintf("10.1.0.%d:7400", id) // moved: only allowed when dead
		}
		var store uint64
		if role == replica && w.srng.IntN(5) != 0 {
			store = 0x5000 + id
			if w.srng.IntN(2) == 0 {
				store = w.storeID() // the disk was replaced
			}
		}
		return RegisterNodeWithStoreCommand(id, role, a, []string{"a", "b", "c"}[id%3], store, w.now)
	}
}

// storeID returns a random non-zero store id.
func (w *workload) storeID() uint64 { return 1 + w.srng.Uint64N(1<<63) }

// cloneCmd deep-copies a command so two FSMs never share one message.
func cloneCmd(c *arbiterv1.Command) *arbiterv1.Command { return proto.Clone(c).(*arbiterv1.Command) }
