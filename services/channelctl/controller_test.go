package channelctl

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

func replicaNode(id uint64, state arbiterv1.NodeState) *arbiterv1.WatchEvent {
	return &arbiterv1.WatchEvent{Kind: &arbiterv1.WatchEvent_Node{Node: &arbiterv1.Node{NodeId: id,
		Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA, State: state, Address: "replica-addr", Incarnation: 1}}}
}

// A channel resolved before this channelctl has seen its replicas register (the arbiter placed
// it on them, the watch has not delivered their nodes yet) stalls: unknown replicas count as
// dead. When the watch then shows them alive, the machine must hear so and elect. Before the
// fix the controller told machines only of a change from dead to alive, never of a first
// sighting, so such a channel stayed stalled for good (TestIdleChannelsHibernateAndWake hung on
// a loaded machine, where the first sends can overtake the replicas' registration).
func TestReplicasSeenAfterTheFirstResolveAreAlive(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewController(ControllerConfig{NodeID: 101, HibernateAfter: time.Minute, Now: func() time.Time { return now }})
	c.slots[3] = &arbiterv1.SlotAssignment{Slot: 3, OwnerNodeId: 101}
	ctx := context.Background()
	c.applyWatch(ctx, &arbiterv1.WatchResponse{Events: []*arbiterv1.WatchEvent{
		replicaNode(1, arbiterv1.NodeState_NODE_STATE_ALIVE)}})

	ch := &arbiterv1.Channel{ChannelId: "c", GroupId: 7, Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3}, Epoch: 1,
		State: arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED}
	req := &resolveReq{ch: ch, reply: make(chan answer, 1), id: make(chan uint64, 1)}
	acts := c.startResolve(req)
	select {
	case a := <-req.reply:
		t.Fatalf("answered at once: %v", a.err)
	default:
	}
	require.Len(t, acts, 1)
	claim, ok := acts[0].(machine.CommitCAS)
	require.True(t, ok, "%v", acts)
	res := machine.CASResult{Accepted: true, At: now, Channel: &arbiterv1.Channel{ChannelId: "c", GroupId: 7, Slot: 3,
		ReplicaNodeIds: []uint64{1, 2, 3}, Epoch: claim.Change.GetExpectedEpoch() + 1,
		State: arbiterv1.ChannelState_CHANNEL_STATE_ACTIVATING}}
	acts = c.step("c", res)
	require.True(t, c.machines["c"].Stalled(), "one replica of three known: no majority to elect from")
	require.IsType(t, machine.FailWaiters{}, acts[0])

	acts = c.applyWatch(ctx, &arbiterv1.WatchResponse{Events: []*arbiterv1.WatchEvent{
		replicaNode(2, arbiterv1.NodeState_NODE_STATE_ALIVE), replicaNode(3, arbiterv1.NodeState_NODE_STATE_ALIVE)}})
	var load *machine.LoadGroups
	for _, a := range acts {
		if l, ok := a.(machine.LoadGroups); ok {
			load = &l
		}
	}
	require.NotNil(t, load, "the stalled election resumes once the replicas are seen alive: %v", acts)
	// Node 2's return already makes a majority: the gather starts with it, before node 3's.
	require.Equal(t, []uint64{1, 2}, load.Nodes)
}

// fakeArbiter keeps nodes, slots and channels, and applies compare-and-sets as the arbiter
// does (epoch fence, fields set, store ids merged with those of departed replicas dropped);
// Watch delivers what is pushed to watch, which includes every accepted change.
type fakeArbiter struct {
	mu       sync.Mutex
	nodes    map[uint64]*arbiterv1.Node
	slots    []*arbiterv1.SlotAssignment
	channels map[string]*arbiterv1.Channel
	changes  []*arbiterv1.ChannelChange
	watch    chan *arbiterv1.WatchResponse
}

func (a *fakeArbiter) GetChannel(_ context.Context, req *arbiterv1.GetChannelRequest) (*arbiterv1.GetChannelResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch := a.channels[req.GetChannelId()]
	if ch == nil {
		return nil, status.Errorf(codes.NotFound, "channel %s", req.GetChannelId())
	}
	return &arbiterv1.GetChannelResponse{Channel: proto.Clone(ch).(*arbiterv1.Channel)}, nil
}

func (a *fakeArbiter) CreateChannel(context.Context, *arbiterv1.CreateChannelRequest) (*arbiterv1.CreateChannelResponse, error) {
	return nil, status.Error(codes.Unimplemented, "fake")
}

func (a *fakeArbiter) ListChannels(_ context.Context, req *arbiterv1.ListChannelsRequest) (*arbiterv1.ListChannelsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	resp := &arbiterv1.ListChannelsResponse{}
	for _, ch := range a.channels {
		if slices.Contains(req.GetSlots(), ch.GetSlot()) {
			resp.Channels = append(resp.Channels, proto.Clone(ch).(*arbiterv1.Channel))
		}
	}
	return resp, nil
}

func (a *fakeArbiter) CompareAndSetChannels(_ context.Context, req *arbiterv1.CompareAndSetChannelsRequest) (*arbiterv1.CompareAndSetChannelsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	resp := &arbiterv1.CompareAndSetChannelsResponse{}
	for _, chg := range req.GetChanges() {
		a.changes = append(a.changes, proto.Clone(chg).(*arbiterv1.ChannelChange))
		cur := a.channels[chg.GetChannelId()]
		if cur.GetEpoch() != chg.GetExpectedEpoch() {
			resp.Results = append(resp.Results, &arbiterv1.ChannelChangeResult{Error: "stale epoch", Channel: proto.Clone(cur).(*arbiterv1.Channel),
				Refusal: arbiterv1.ChangeRefusal_CHANGE_REFUSAL_STALE_EPOCH})
			continue
		}
		next := proto.Clone(cur).(*arbiterv1.Channel)
		next.Epoch++
		if chg.State != nil {
			next.State = chg.GetState()
		}
		if chg.LeaderNodeId != nil {
			next.LeaderNodeId = chg.GetLeaderNodeId()
		}
		if chg.LeaderTerm != nil {
			next.LeaderTerm = chg.GetLeaderTerm()
		}
		if chg.LastSeq != nil {
			next.LastSeq = chg.GetLastSeq()
		}
		if ids := chg.GetReplicaNodeIds(); len(ids) > 0 {
			next.ReplicaNodeIds = slices.Clone(ids)
			next.NextReplicaNodeIds = nil
		}
		if ids := chg.GetNextReplicaNodeIds(); len(ids) > 0 {
			next.NextReplicaNodeIds = slices.Clone(ids)
		}
		if chg.GetClearNextReplicas() {
			next.NextReplicaNodeIds = nil
		}
		if next.ReplicaStoreIds == nil {
			next.ReplicaStoreIds = map[uint64]uint64{}
		}
		maps.Copy(next.ReplicaStoreIds, chg.GetReplicaStoreIds())
		maps.DeleteFunc(next.ReplicaStoreIds, func(n, _ uint64) bool { return !slices.Contains(next.ReplicaNodeIds, n) })
		a.channels[next.GetChannelId()] = next
		resp.Results = append(resp.Results, &arbiterv1.ChannelChangeResult{Succeeded: true, Channel: proto.Clone(next).(*arbiterv1.Channel)})
		a.watch <- &arbiterv1.WatchResponse{Events: []*arbiterv1.WatchEvent{
			{Kind: &arbiterv1.WatchEvent_Channel{Channel: proto.Clone(next).(*arbiterv1.Channel)}}}}
	}
	return resp, nil
}

func (a *fakeArbiter) ListSlots(context.Context, *arbiterv1.ListSlotsRequest) (*arbiterv1.ListSlotsResponse, error) {
	return nil, status.Error(codes.Unimplemented, "fake")
}

func (a *fakeArbiter) GetClusterStatus(context.Context, *arbiterv1.GetClusterStatusRequest) (*arbiterv1.GetClusterStatusResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	resp := &arbiterv1.GetClusterStatusResponse{Slots: a.slots}
	for _, n := range a.nodes {
		resp.Nodes = append(resp.Nodes, proto.Clone(n).(*arbiterv1.Node))
	}
	return resp, nil
}

func (a *fakeArbiter) Watch(ctx context.Context, _ *arbiterv1.WatchRequest, fn func(*arbiterv1.WatchResponse) error) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-a.watch:
			if err := fn(r); err != nil {
				return err
			}
		}
	}
}

func (a *fakeArbiter) channel(id string) *arbiterv1.Channel {
	a.mu.Lock()
	defer a.mu.Unlock()
	return proto.Clone(a.channels[id]).(*arbiterv1.Channel)
}

// changed is the compare-and-sets made on channel id.
func (a *fakeArbiter) changed(id string) []*arbiterv1.ChannelChange {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*arbiterv1.ChannelChange
	for _, c := range a.changes {
		if c.GetChannelId() == id {
			out = append(out, c)
		}
	}
	return out
}

// fakeReplica is a replica node's control service: it loads whatever it is asked to unless
// the spec names a store other than its own (the replica's "store replaced" refusal), every
// group at the same position; a campaign wins term 6; a membership change ends with the
// voters asked for. It records the specs and changes it received.
//
// A channel in failed failed here (a corrupt entry): its status and loads answer DataLoss,
// except a join load, which resets it (reset: true, loaded empty) as the replica does; a reset
// channel refuses loads that are not joins until admitted clears it. GetGroupStatus{failed}
// lists both.
type fakeReplica struct {
	replicav1.UnimplementedReplicaControlServiceServer
	node, store uint64

	mu      sync.Mutex
	loads   []*replicav1.GroupSpec
	changes []*replicav1.ReplicaChange
	failed  map[string]bool
	reset   map[string]bool
	// admitted, when set, is called with each change this replica made as leader (the test
	// tells the added replica it applied it).
	admitted func(*replicav1.ReplicaChange)
	// short drops the last result of every LoadGroups reply, as a buggy replica would.
	short bool
	// voters, when set, is the configuration the replica reports it applies.
	voters []uint64
	// campaignGate, when set, holds every Campaign until it is closed; campaigns counts the
	// Campaign calls that arrived.
	campaignGate chan struct{}
	campaigns    atomic.Int32
}

func (f *fakeReplica) setShort(short bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.short = short
}

func dataLoss(channel string) *replicav1.GroupError {
	return &replicav1.GroupError{Code: int32(codes.DataLoss), Message: "channel " + channel + " failed here: corrupt entry"}
}

func (f *fakeReplica) GetGroupStatus(_ context.Context, req *replicav1.GetGroupStatusRequest) (*replicav1.GetGroupStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &replicav1.GetGroupStatusResponse{}
	ids := req.GetChannelIds()
	if len(ids) == 0 && req.GetFailed() {
		ids = slices.Sorted(maps.Keys(f.failed))
		ids = append(ids, slices.Sorted(maps.Keys(f.reset))...)
	}
	for _, id := range ids {
		res := &replicav1.GetGroupStatusResult{ChannelId: id}
		switch {
		case f.failed[id]:
			res.Error = dataLoss(id)
		case f.reset[id]:
			res.Status = f.status(id)
			res.Status.CopyReset, res.Status.LastIndex, res.Status.Commit, res.Status.Applied = true, 0, 0, 0
		default:
			res.Status = f.status(id)
		}
		resp.Results = append(resp.Results, res)
	}
	return resp, nil
}

// admit clears the reset of channel: the replica applied the change that added it back.
func (f *fakeReplica) admit(channel string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.reset, channel)
}

func (f *fakeReplica) status(channel string) *replicav1.GroupStatus {
	return &replicav1.GroupStatus{ChannelId: channel, Loaded: true, Role: replicav1.Role_ROLE_FOLLOWER, Term: 5, LastTerm: 5,
		LastIndex: 100, Commit: 100, Applied: 100, LastSeq: 40, StoreId: f.store, Voters: slices.Clone(f.voters)}
}

func (f *fakeReplica) LoadGroups(_ context.Context, req *replicav1.LoadGroupsRequest) (*replicav1.LoadGroupsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &replicav1.LoadGroupsResponse{}
	for _, g := range req.GetGroups() {
		f.loads = append(f.loads, proto.Clone(g).(*replicav1.GroupSpec))
		id := g.GetChannelId()
		res := &replicav1.LoadGroupsResult{ChannelId: id}
		switch {
		case f.failed[id] && g.GetJoin():
			delete(f.failed, id)
			if f.reset == nil {
				f.reset = map[string]bool{}
			}
			f.reset[id] = true
			res.Status = f.status(id)
			res.Status.CopyReset, res.Status.LastIndex, res.Status.Commit, res.Status.Applied = true, 0, 0, 0
		case f.failed[id]:
			res.Error = dataLoss(id)
		case f.reset[id] && !g.GetJoin():
			res.Error = &replicav1.GroupError{Code: int32(codes.FailedPrecondition), Message: "reset: waiting to rejoin"}
		case g.GetStoreId() != 0 && f.store != 0 && g.GetStoreId() != f.store:
			res.Error = &replicav1.GroupError{Code: int32(codes.FailedPrecondition),
				Message: fmt.Sprintf("store replaced: the record names store %d, this is %d", g.GetStoreId(), f.store)}
		default:
			res.Status = f.status(id)
		}
		resp.Results = append(resp.Results, res)
	}
	if f.short {
		resp.Results = resp.Results[:len(resp.Results)-1]
	}
	return resp, nil
}

func (f *fakeReplica) Campaign(ctx context.Context, req *replicav1.CampaignRequest) (*replicav1.CampaignResponse, error) {
	f.campaigns.Add(1)
	if f.campaignGate != nil {
		select {
		case <-f.campaignGate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	resp := &replicav1.CampaignResponse{}
	for _, o := range req.GetOrders() {
		st := f.status(o.GetChannelId())
		st.Role, st.Term, st.LeaderNodeId = replicav1.Role_ROLE_LEADER, 6, f.node
		resp.Results = append(resp.Results, &replicav1.CampaignResult{ChannelId: o.GetChannelId(), Leader: true, Status: st})
	}
	return resp, nil
}

func (f *fakeReplica) ChangeReplicas(_ context.Context, req *replicav1.ChangeReplicasRequest) (*replicav1.ChangeReplicasResponse, error) {
	f.mu.Lock()
	resp := &replicav1.ChangeReplicasResponse{}
	for _, c := range req.GetChanges() {
		f.changes = append(f.changes, proto.Clone(c).(*replicav1.ReplicaChange))
		st := f.status(c.GetChannelId())
		st.Role, st.Voters = replicav1.Role_ROLE_LEADER, c.GetVoters()
		resp.Results = append(resp.Results, &replicav1.ChangeReplicasResult{ChannelId: c.GetChannelId(), Status: st})
	}
	admitted := f.admitted
	f.mu.Unlock()
	if admitted != nil {
		for _, c := range req.GetChanges() {
			admitted(c)
		}
	}
	return resp, nil
}

// received is the specs the replica was sent for channel id.
func (f *fakeReplica) received(id string) []*replicav1.GroupSpec {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*replicav1.GroupSpec
	for _, g := range f.loads {
		if g.GetChannelId() == id {
			out = append(out, g)
		}
	}
	return out
}

func (f *fakeReplica) changesMade() []*replicav1.ReplicaChange {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.changes)
}

// storeNode is a live replica node's record with its store id.
func storeNode(id, store, incarnation uint64) *arbiterv1.Node {
	return &arbiterv1.Node{NodeId: id, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA, State: arbiterv1.NodeState_NODE_STATE_ALIVE,
		Address: fmt.Sprintf("replica-%d", id), Incarnation: incarnation, StoreId: store}
}

// A replica whose disk was wiped comes back under its old node id with a new store (22 -> 99).
// Every channel whose record names store 22 for it must take it back through a rejoin: the
// leader's ChangeReplicas with add == remove carrying the new store, then the record naming
// 99 — at once, not after ReplaceDeadAfter, and a hibernated one after being activated (its
// activation load names store 22 to node 2, which refuses it). Channels whose record names no
// store for the node, and nodes whose store matches or is unknown (registered as 0), get no
// repair. Loads that are not joins name the recorded store per node; the reload of a
// restarted node leaves out the channels whose record names another store.
func TestReplicaWithANewStoreRejoins(t *testing.T) {
	// Node 3 is a replica too old to name its store; node 2's disk was wiped: its new store
	// answers from the start.
	arb, replica, start := startStoreCluster(t, map[uint64]uint64{1: 11, 2: 22, 3: 0, 4: 44}, map[uint64]uint64{2: 99})
	mk := func(id string, group uint64, state arbiterv1.ChannelState, set []uint64, recorded map[uint64]uint64) {
		arb.mu.Lock()
		defer arb.mu.Unlock()
		arb.channels[id] = &arbiterv1.Channel{ChannelId: id, GroupId: group, Slot: 3, ReplicaNodeIds: set, LeaderNodeId: 1,
			LeaderTerm: 5, Epoch: 10, State: state, LastSeq: 40, ReplicaStoreIds: recorded}
	}
	active, hibernated := arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED
	mk("c", 1, active, []uint64{1, 2, 3}, map[uint64]uint64{1: 11, 2: 22, 3: 33})
	mk("h", 2, hibernated, []uint64{1, 2, 4}, map[uint64]uint64{1: 11, 2: 22, 4: 44})
	mk("d", 3, active, []uint64{1, 2, 3}, map[uint64]uint64{1: 11, 3: 33}) // no store recorded for 2
	mk("m", 4, active, []uint64{1, 3, 4}, map[uint64]uint64{1: 11, 3: 33, 4: 44})
	start()

	// The nodes' registrations match (or do not name) the recorded stores: nothing to do.
	time.Sleep(300 * time.Millisecond) // 6 s on the controller's clock: passes ran
	for _, id := range []string{"c", "h", "d", "m"} {
		require.Empty(t, arb.changed(id), id)
	}

	// Node 2 registers again, with its new store.
	arb.reregister(2, 99)

	require.Eventually(t, func() bool {
		return arb.channel("c").GetReplicaStoreIds()[2] == 99 && arb.channel("h").GetReplicaStoreIds()[2] == 99
	}, 20*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // and nothing more happens

	for id, set := range map[string][]uint64{"c": {1, 2, 3}, "h": {1, 2, 4}} {
		ch := arb.channel(id)
		require.Equal(t, set, ch.GetReplicaNodeIds(), id)
		require.Equal(t, arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, ch.GetState(), id)
		require.Equal(t, uint64(1), ch.GetLeaderNodeId(), id)
		want := map[uint64]uint64{1: 11, 2: 99, 3: 33}
		if id == "h" {
			want = map[uint64]uint64{1: 11, 2: 99, 4: 44}
		}
		require.Equal(t, want, ch.GetReplicaStoreIds(), id)
		changes := arb.changed(id)
		last := changes[len(changes)-1]
		require.Empty(t, last.GetReplicaNodeIds(), "%s: a rejoin leaves the replica set alone", id)
		require.Equal(t, map[uint64]uint64{2: 99}, last.GetReplicaStoreIds(), id)
	}
	// The leader got one rejoin per channel: node 2 out and back in as a learner with store 99.
	var got []string
	for _, ch := range replica(1).changesMade() {
		require.Equal(t, uint64(2), ch.GetAddNodeId(), ch.GetChannelId())
		require.Equal(t, uint64(2), ch.GetRemoveNodeId(), ch.GetChannelId())
		require.Equal(t, uint64(99), ch.GetAddStoreId(), ch.GetChannelId())
		require.Equal(t, "replica-2", ch.GetAddAddress(), ch.GetChannelId())
		got = append(got, ch.GetChannelId())
		if ch.GetChannelId() == "c" {
			require.Equal(t, []uint64{1, 2, 3}, ch.GetVoters())
		} else {
			require.Equal(t, []uint64{1, 2, 4}, ch.GetVoters())
		}
	}
	slices.Sort(got)
	require.Equal(t, []string{"c", "h"}, got)
	for _, n := range []uint64{2, 3, 4} {
		require.Empty(t, replica(n).changesMade(), "node %d leads nothing", n)
	}
	// Matching, unknown and unrecorded stores: no repair, not even a claim.
	require.Empty(t, arb.changed("d"))
	require.Empty(t, arb.changed("m"))
	require.Equal(t, uint64(10), arb.channel("d").GetEpoch())
	require.Equal(t, uint64(10), arb.channel("m").GetEpoch())

	// What node 2 was sent: reloads of "d" (at the controller's start and the node's restart;
	// no store recorded for it); of "c" only the start's reload naming store 22 (refused by the
	// new store, so nothing bootstraps) and the rejoin's join load, naming no store; the
	// activation of "h" naming 22, which it refused; the rejoins' join loads.
	var cJoins int
	for _, g := range replica(2).received("c") {
		if g.GetJoin() {
			require.Zero(t, g.GetStoreId())
			cJoins++
			continue
		}
		require.Equal(t, uint64(22), g.GetStoreId(), "a load of c that is not the rejoin names the recorded store, which node 2 refuses")
	}
	require.Equal(t, 1, cJoins)
	d := replica(2).received("d")
	require.NotEmpty(t, d)
	for _, g := range d {
		require.False(t, g.GetJoin())
		require.Zero(t, g.GetStoreId())
	}
	var refused, joined bool
	for _, g := range replica(2).received("h") {
		switch {
		case g.GetJoin():
			require.Zero(t, g.GetStoreId())
			joined = true
		default:
			require.Equal(t, uint64(22), g.GetStoreId())
			refused = true
		}
	}
	require.True(t, refused, "h's activation load names the recorded store")
	require.True(t, joined)
	// The activation's loads on the others name their recorded stores.
	for n, store := range map[uint64]uint64{1: 11, 4: 44} {
		var named bool
		for _, g := range replica(n).received("h") {
			if !g.GetJoin() {
				require.Equal(t, store, g.GetStoreId(), "node %d", n)
				named = true
			}
		}
		require.True(t, named, "node %d", n)
	}
}

// startStoreCluster is a fake arbiter whose replica nodes registered the given stores, and
// fake replicas answering with their own (now, where a node's disk was replaced since). The
// test adds channels, then start runs a controller owning slot 3 (runWithFakes).
func startStoreCluster(t *testing.T, registered, now map[uint64]uint64) (arb *fakeArbiter, replica func(id uint64) *fakeReplica, start func()) {
	arb = &fakeArbiter{nodes: map[uint64]*arbiterv1.Node{}, channels: map[string]*arbiterv1.Channel{},
		watch: make(chan *arbiterv1.WatchResponse, 1024),
		slots: []*arbiterv1.SlotAssignment{{Slot: 3, OwnerNodeId: 101}}}
	replicas := map[uint64]*fakeReplica{}
	for id, store := range registered {
		arb.nodes[id] = storeNode(id, store, 1)
		f := &fakeReplica{node: id, store: store}
		if s, ok := now[id]; ok {
			f.store = s
		}
		replicas[id] = f
	}
	return arb, func(id uint64) *fakeReplica { return replicas[id] }, func() { runWithFakes(t, arb, replicas) }
}

// reregister has node register again with store (a new incarnation), as the watch tells.
func (f *fakeArbiter) reregister(node, store uint64) {
	f.mu.Lock()
	f.nodes[node] = storeNode(node, store, 2)
	f.mu.Unlock()
	f.watch <- &arbiterv1.WatchResponse{Events: []*arbiterv1.WatchEvent{{Kind: &arbiterv1.WatchEvent_Node{Node: storeNode(node, store, 2)}}}}
}

// A replica whose batched reply holds fewer results than orders (a bug, or another version)
// fails that call, which the machines treat as unknown and retry later; the controller does
// not index past the reply and stop. Once the replica answers properly the rejoin completes.
func TestShortReplyFailsTheCallNotTheController(t *testing.T) {
	arb, replica, start := startStoreCluster(t, map[uint64]uint64{1: 11, 2: 22, 3: 33}, map[uint64]uint64{2: 99})
	arb.channels["c"] = &arbiterv1.Channel{ChannelId: "c", GroupId: 1, Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3}, LeaderNodeId: 1,
		LeaderTerm: 5, Epoch: 10, State: arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, LastSeq: 40,
		ReplicaStoreIds: map[uint64]uint64{1: 11, 2: 22, 3: 33}}
	replica(2).setShort(true)
	start()
	arb.reregister(2, 99)
	require.Eventually(t, func() bool { return len(replica(2).received("c")) > 0 }, 20*time.Second, 10*time.Millisecond,
		"the rejoin's join load reached node 2")
	time.Sleep(200 * time.Millisecond) // 4 s on the controller's clock: the short reply was handled
	require.Equal(t, uint64(22), arb.channel("c").GetReplicaStoreIds()[2], "nothing recorded from a short reply")
	require.Empty(t, replica(1).changesMade(), "no change ordered without node 2's status")

	replica(2).setShort(false)
	require.Eventually(t, func() bool { return arb.channel("c").GetReplicaStoreIds()[2] == 99 }, 20*time.Second, 10*time.Millisecond,
		"the rejoin completes once node 2 answers properly")
}

// When the replaced store is the channel's leader's, the rejoin cannot start (a leader does
// not take itself out of its group), and that leader no longer serves (its loads are refused):
// the controller has the leader checked at once, not when a client happens to be turned away,
// so another replica is elected and the old leader then rejoins under it.
func TestReplacedStoreOfTheLeaderRejoinsAfterAnElection(t *testing.T) {
	arb, replica, start := startStoreCluster(t, map[uint64]uint64{1: 11, 2: 22, 3: 33}, map[uint64]uint64{2: 99})
	arb.channels["l"] = &arbiterv1.Channel{ChannelId: "l", GroupId: 7, Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3}, LeaderNodeId: 2,
		LeaderTerm: 5, Epoch: 10, State: arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, LastSeq: 40,
		ReplicaStoreIds: map[uint64]uint64{1: 11, 2: 22, 3: 33}}
	start()
	arb.reregister(2, 99)

	require.Eventually(t, func() bool { return arb.channel("l").GetReplicaStoreIds()[2] == 99 }, 20*time.Second, 10*time.Millisecond,
		"the old leader's new store is never recorded")
	ch := arb.channel("l")
	require.NotEqual(t, uint64(2), ch.GetLeaderNodeId(), "elected elsewhere first")
	require.Equal(t, []uint64{1, 2, 3}, ch.GetReplicaNodeIds())
	rejoins := replica(ch.GetLeaderNodeId()).changesMade()
	require.NotEmpty(t, rejoins)
	last := rejoins[len(rejoins)-1]
	require.Equal(t, uint64(2), last.GetAddNodeId())
	require.Equal(t, uint64(2), last.GetRemoveNodeId())
	require.Equal(t, uint64(99), last.GetAddStoreId())
}

// A restarted node's reload names the store each record holds for it (0 where none is
// recorded) and leaves out the channels whose record names another store than the one it
// registered; an unknown store (0) on either side leaves nothing out.
func TestRejoinLoadsNameTheRecordedStore(t *testing.T) {
	c := NewController(ControllerConfig{NodeID: 101, HibernateAfter: time.Minute})
	active := arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE
	for id, stores := range map[string]map[uint64]uint64{
		"same":      {1: 11, 2: 22},
		"other":     {1: 11, 2: 21},
		"unknown":   {1: 11},
		"none":      nil,
		"elsewhere": {1: 11, 3: 33},
	} {
		set := []uint64{1, 2}
		if id == "elsewhere" {
			set = []uint64{1, 3}
		}
		c.channels[id] = &arbiterv1.Channel{ChannelId: id, Slot: 3, ReplicaNodeIds: set, LeaderNodeId: 1, Epoch: 4,
			State: active, ReplicaStoreIds: stores}
	}
	names := func(specs []*replicav1.GroupSpec) map[string]uint64 {
		out := map[string]uint64{}
		for _, s := range specs {
			out[s.GetChannelId()] = s.GetStoreId()
		}
		return out
	}
	specs, replaced := c.rejoinSpecs(2, 22, nil)
	require.Equal(t, map[string]uint64{"same": 22, "unknown": 0, "none": 0}, names(specs))
	require.Equal(t, 1, replaced)
	// A node that names no store: nothing is known to be replaced; the replica checks.
	specs, replaced = c.rejoinSpecs(2, 0, nil)
	require.Equal(t, map[string]uint64{"same": 22, "other": 21, "unknown": 0, "none": 0}, names(specs))
	require.Zero(t, replaced)
}

// Issue 13, item 5: a node that only a channel's next replica set lists (a repair under way or
// cut short) gets that channel back at restart as a join naming no store; the members of both
// sets are its peers. A repair of the replica the next set drops resumes with the next set's
// newcomer while it can take channels.
func TestRejoinLoadsCoverTheNextReplicaSet(t *testing.T) {
	c := NewController(ControllerConfig{NodeID: 101, HibernateAfter: time.Minute})
	active := arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE
	c.channels["moving"] = &arbiterv1.Channel{ChannelId: "moving", Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3},
		NextReplicaNodeIds: []uint64{1, 2, 4}, LeaderNodeId: 1, Epoch: 4, State: active,
		ReplicaStoreIds: map[uint64]uint64{1: 11, 2: 22, 3: 33}}
	c.channels["still"] = &arbiterv1.Channel{ChannelId: "still", Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3},
		LeaderNodeId: 1, Epoch: 4, State: active, ReplicaStoreIds: map[uint64]uint64{3: 33}}

	specs, replaced := c.rejoinSpecs(4, 44, nil)
	require.Zero(t, replaced)
	require.Len(t, specs, 1)
	require.Equal(t, "moving", specs[0].GetChannelId())
	require.True(t, specs[0].GetJoin())
	require.Zero(t, specs[0].GetStoreId())
	var peers []uint64
	for _, p := range specs[0].GetReplicas() {
		peers = append(peers, p.GetNodeId())
	}
	require.ElementsMatch(t, []uint64{1, 2, 3, 4}, peers)

	// The leaving replica still loads as a member, with its recorded store.
	specs, _ = c.rejoinSpecs(3, 33, nil)
	require.Len(t, specs, 2)
	for _, s := range specs {
		require.False(t, s.GetJoin())
		require.Equal(t, uint64(33), s.GetStoreId())
	}

	moving := c.channels["moving"]
	require.Equal(t, uint64(4), resumedReplica(moving, 3, []uint64{4, 5}))
	require.Zero(t, resumedReplica(moving, 3, []uint64{5}), "4 cannot take channels")
	require.Zero(t, resumedReplica(moving, 2, []uint64{4, 5}), "next keeps 2: another repair")
	require.Zero(t, resumedReplica(c.channels["still"], 3, []uint64{4, 5}))
}

// Issue 13, item 5, end to end through the controller: a repair of 3 by 4 was cut short after
// raft's change (the record lists 1, 2, 3 and next 1, 2, 4; 2 and 4 apply 1, 2, 4), and leader
// 1 dies with 3 dead too. The election loads the group on 2 (naming its store) and on 4 (as a
// join, naming none), elects within 1, 2, 4 and rolls the record forward.
func TestElectionAfterACutShortRepairRollsTheRecordForward(t *testing.T) {
	arb, replica, start := startStoreCluster(t, map[uint64]uint64{1: 11, 2: 22, 3: 33, 4: 44}, nil)
	arb.channels["j"] = &arbiterv1.Channel{ChannelId: "j", GroupId: 7, Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3},
		NextReplicaNodeIds: []uint64{1, 2, 4}, LeaderNodeId: 1, LeaderTerm: 5, Epoch: 10,
		State: arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, LastSeq: 40, ReplicaStoreIds: map[uint64]uint64{1: 11, 2: 22, 3: 33}}
	for _, n := range []uint64{2, 4} {
		replica(n).voters = []uint64{1, 2, 4}
	}
	dead := func(id, store uint64) {
		n := storeNode(id, store, 1)
		n.State = arbiterv1.NodeState_NODE_STATE_DEAD
		arb.mu.Lock()
		arb.nodes[id] = n
		arb.mu.Unlock()
		arb.watch <- &arbiterv1.WatchResponse{Events: []*arbiterv1.WatchEvent{{Kind: &arbiterv1.WatchEvent_Node{Node: n}}}}
	}
	dead(3, 33)
	start()
	dead(1, 11)

	require.Eventually(t, func() bool { return len(arb.channel("j").GetNextReplicaNodeIds()) == 0 }, 20*time.Second,
		10*time.Millisecond, "the record never rolls forward")
	ch := arb.channel("j")
	require.Equal(t, []uint64{1, 2, 4}, ch.GetReplicaNodeIds())
	require.Contains(t, []uint64{2, 4}, ch.GetLeaderNodeId())
	require.Equal(t, map[uint64]uint64{1: 11, 2: 22, 4: 44}, ch.GetReplicaStoreIds())
	for _, g := range replica(4).received("j") {
		require.True(t, g.GetJoin(), "4 is loaded only as a join before the record lists it")
		require.Zero(t, g.GetStoreId())
	}
	require.NotEmpty(t, replica(4).received("j"))
	loads := replica(2).received("j")
	require.NotEmpty(t, loads)
	require.False(t, loads[0].GetJoin())
	require.Equal(t, uint64(22), loads[0].GetStoreId())
}

// A channelctl that starts, or takes over a slot, loads the active channels of its slots on
// every live replica: a node's return is acted on only by the slot's owner of the moment, and
// one that died meanwhile would leave the node out of its groups until an election happened
// to load them (make verify SEED=3 FAULTS=all: a replica restarted while its channelctl was
// killed never took its group back). Loads are idempotent; each names the recorded store.
func TestStartAndSlotTakeoverReloadTheActiveGroups(t *testing.T) {
	arb, replica, start := startStoreCluster(t, map[uint64]uint64{1: 11, 2: 22, 3: 33}, nil)
	stores := map[uint64]uint64{1: 11, 2: 22, 3: 33}
	arb.channels["mine"] = &arbiterv1.Channel{ChannelId: "mine", GroupId: 1, Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3}, LeaderNodeId: 1,
		LeaderTerm: 5, Epoch: 10, State: arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, ReplicaStoreIds: stores}
	arb.channels["later"] = &arbiterv1.Channel{ChannelId: "later", GroupId: 2, Slot: 4, ReplicaNodeIds: []uint64{1, 2, 3}, LeaderNodeId: 2,
		LeaderTerm: 5, Epoch: 10, State: arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, ReplicaStoreIds: stores}
	arb.channels["asleep"] = &arbiterv1.Channel{ChannelId: "asleep", GroupId: 3, Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3},
		Epoch: 10, State: arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED, ReplicaStoreIds: stores}
	start()
	loadedEverywhere := func(channel string) bool {
		for id := uint64(1); id <= 3; id++ {
			got := replica(id).received(channel)
			if len(got) == 0 || got[0].GetJoin() || got[0].GetStoreId() != stores[id] || got[0].GetEpoch() != 10 {
				return false
			}
		}
		return true
	}
	require.Eventually(t, func() bool { return loadedEverywhere("mine") }, 20*time.Second, 10*time.Millisecond,
		"the start loads the active channels of the owned slots on every live replica")
	require.Empty(t, replica(1).received("later"), "slot 4 is not this channelctl's yet")
	require.Empty(t, replica(1).received("asleep"), "a hibernated channel stays unloaded")

	slot := &arbiterv1.SlotAssignment{Slot: 4, OwnerNodeId: 101}
	arb.mu.Lock()
	arb.slots = append(arb.slots, slot)
	arb.mu.Unlock()
	arb.watch <- &arbiterv1.WatchResponse{Events: []*arbiterv1.WatchEvent{{Kind: &arbiterv1.WatchEvent_Slot{Slot: slot}}}}
	require.Eventually(t, func() bool { return loadedEverywhere("later") }, 20*time.Second, 10*time.Millisecond,
		"taking over slot 4 loads its active channels")
}

// A joint record no repair is about to settle gets a leader check every reconcilePassEvery,
// which has the machine reconcile it with raft (machine/reconcile.go); a busy channel never
// reaches the idle check that would. Hibernated channels, plain records and channels whose
// repair was just ordered are left alone.
func TestReconcilesCheckTheLeadersOfJointRecords(t *testing.T) {
	c := NewController(ControllerConfig{NodeID: 101, HibernateAfter: time.Minute})
	active, hibernated := arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED
	joint := func(id string, state arbiterv1.ChannelState) *arbiterv1.Channel {
		return &arbiterv1.Channel{ChannelId: id, Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3}, NextReplicaNodeIds: []uint64{1, 2, 4},
			LeaderNodeId: 1, Epoch: 4, State: state}
	}
	c.channels["joint"] = joint("joint", active)
	c.channels["asleep"] = joint("asleep", hibernated)
	c.channels["repairing"] = joint("repairing", active)
	c.channels["plain"] = &arbiterv1.Channel{ChannelId: "plain", Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3}, LeaderNodeId: 1,
		Epoch: 4, State: active}
	now := time.Unix(1000, 0)
	c.repairTried["repairing"] = now.Add(-time.Second)

	out := c.reconciles(now)
	require.Len(t, out, 1)
	require.Equal(t, "joint", out[0].channel)
	require.Equal(t, machine.CheckLeader{}, out[0].event)
	require.True(t, out[0].ensure, "a channel nobody asked for has no machine yet")
	require.Empty(t, c.reconciles(now.Add(reconcilePassEvery/2)), "one pass per reconcilePassEvery")
	require.Len(t, c.reconciles(now.Add(reconcilePassEvery)), 2, "the repair ordered a pass ago is due too")
}

// A replica that comes back while its channel is electing (make verify FAULTS=powerloss: every
// replica's power cut at once, one back before the others) may be left out of the election's
// gather; once the channel is active nothing else loads the group there, and the node stayed
// out of it for good. The controller now loads it once the channel settles.
func TestNodeBackDuringAnElectionIsLoadedOnceTheChannelSettles(t *testing.T) {
	stores := map[uint64]uint64{1: 11, 2: 22, 3: 33, 4: 44, 5: 55}
	arb, replica, start := startStoreCluster(t, stores, nil)
	arb.channels["e"] = &arbiterv1.Channel{ChannelId: "e", GroupId: 9, Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3, 4, 5},
		LeaderNodeId: 1, LeaderTerm: 5, Epoch: 10, State: arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, LastSeq: 40,
		ReplicaStoreIds: stores}
	gate := make(chan struct{})
	for id := range stores {
		replica(id).campaignGate = gate
	}
	setState := func(id uint64, st arbiterv1.NodeState) {
		n := storeNode(id, stores[id], 1)
		n.State = st
		arb.mu.Lock()
		arb.nodes[id] = n
		arb.mu.Unlock()
		arb.watch <- &arbiterv1.WatchResponse{Events: []*arbiterv1.WatchEvent{{Kind: &arbiterv1.WatchEvent_Node{Node: n}}}}
	}
	setState(5, arbiterv1.NodeState_NODE_STATE_DEAD)
	start()
	setState(1, arbiterv1.NodeState_NODE_STATE_DEAD)
	campaigning := func() bool {
		for id := range stores {
			if replica(id).campaigns.Load() > 0 {
				return true
			}
		}
		return false
	}
	require.Eventually(t, campaigning, 20*time.Second, 5*time.Millisecond, "the election gathered 2, 3 and 4 and campaigns")
	require.Empty(t, replica(5).received("e"), "5 was dead when the election gathered")

	setState(5, arbiterv1.NodeState_NODE_STATE_ALIVE)
	// The return reaches the controller while the campaign is still held.
	require.Eventually(t, func() bool {
		arb.mu.Lock()
		defer arb.mu.Unlock()
		return len(arb.watch) == 0
	}, 20*time.Second, 5*time.Millisecond)
	close(gate)
	require.Eventually(t, func() bool { return arb.channel("e").GetState() == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE },
		20*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return len(replica(5).received("e")) > 0 }, 20*time.Second, 5*time.Millisecond,
		"the returned node is loaded once the channel is active")
	load := replica(5).received("e")[0]
	require.Equal(t, uint64(55), load.GetStoreId())
	require.False(t, load.GetJoin())
}
