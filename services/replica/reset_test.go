package replica

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// Item 5 of issue 12, the repair: a channel whose copy failed on one replica (a corrupt
// entry) is repaired from its peers. The join load the control tier sends discards the copy
// and loads it empty on probation, with a durable reset mark; until the leader's conf change
// adding this store again is applied, the replica lists the channel as failed, says reset in
// its status, and refuses every load that is not a join (one would bootstrap or admit a copy
// that holds less than the configuration counts on it for), across a restart too. Once
// readmitted it holds every message at the same sequence numbers as its peers.
func TestFailedCopyIsResetAndRejoinsFromItsPeers(t *testing.T) {
	const damaged, g = 3, uint64(21)
	const channel = "flaky"
	var tampering atomic.Bool
	tampering.Store(true)
	hub := memnet.New(memnet.Options{Seed: 9})
	nodes := map[uint64]*corruptNode{}
	start := func(id uint64, store *raftstore.Memory) {
		cfg := EngineConfig{NodeID: id, Store: store, CheckpointEvery: 1, StoreID: 100 + id,
			Dedup: chanlog.Config{Window: time.Hour, MaxIDs: 1000}}
		transport := hub.Transport(id)
		if id != damaged {
			corrupt := corruptOnTheWayTo(damaged, g, 0)
			transport = tamperTransport{inner: transport, tamper: func(env multiraft.Envelope) multiraft.Envelope {
				if !tampering.Load() {
					return env
				}
				return corrupt(env)
			}}
		}
		e := NewEngine(cfg)
		h, err := multiraft.New(multiraft.Config{NodeID: id, Store: store, Transport: transport, Applier: e, Manual: true, Workers: 2})
		require.NoError(t, err)
		e.Attach(h, nil, nil)
		hub.Attach(id, h)
		nodes[id] = &corruptNode{engine: e, host: h, store: store}
	}
	for id := uint64(1); id <= 3; id++ {
		start(id, raftstore.NewMemory())
	}
	stabilize := func() { t.Helper(); require.NoError(t, hub.Stabilize(0), "no host may stop") }
	spec := func(join bool) []*replicav1.GroupSpec {
		return []*replicav1.GroupSpec{{ChannelId: channel, GroupId: g, Join: join,
			Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}}}
	}
	ctx := context.Background()
	for id, n := range nodes {
		require.NoError(t, n.engine.Load(ctx, spec(false))[0], "load on node %d", id)
	}
	require.NoError(t, nodes[1].host.Campaign(ctx, g))
	stabilize()
	proposal := uint64(0)
	send := func(payloads ...string) {
		t.Helper()
		for _, p := range payloads {
			proposal++
			data, err := sealBatch(&replicav1.LogBatch{ProposeTime: timestamppb.Now(), ProposerNodeId: 1, ProposalId: proposal,
				Messages: []*triarchv1.MessageInput{{ClientMsgId: fmt.Sprint("m-", proposal), Payload: []byte(p)}}})
			require.NoError(t, err)
			pr := nodes[1].host.ProposeAsync(g, data)
			stabilize()
			_, err = pr.Result()
			require.NoError(t, err)
		}
	}
	send("one", "flip-me", "three")
	d := nodes[damaged]
	_, err := d.engine.GroupStatus(ctx, channel)
	require.Equal(t, codes.DataLoss, status.Code(toStatus(err)), "the copy failed: %v", err)
	failed, err := d.engine.FailedChannels()
	require.NoError(t, err)
	require.Equal(t, []string{channel}, failed, "a failed copy is listed for repair")

	// The control tier's join load discards the copy. The corruption was local: what the
	// leader sends from now on arrives intact.
	tampering.Store(false)
	require.NoError(t, d.engine.Load(ctx, spec(true))[0]) // a manual host drives the reset's rounds itself
	require.NoError(t, d.host.Failure(g), "the failure is forgotten with the copy")
	st, err := d.engine.GroupStatus(ctx, channel)
	require.NoError(t, err)
	require.True(t, st.GetCopyReset(), "status of the reset copy: %v", st)
	require.ErrorIs(t, d.engine.Load(ctx, spec(false))[0], ErrCopyReset, "a load that is not a join would count the empty copy")
	require.Equal(t, codes.FailedPrecondition, status.Code(toStatus(ErrCopyReset)))
	failed, err = d.engine.FailedChannels()
	require.NoError(t, err)
	require.Equal(t, []string{channel}, failed, "a reset copy is listed until it is readmitted")

	// A restart before the rejoin keeps the mark: a plain load is still refused.
	store := d.store.(*raftstore.Memory)
	hub.Detach(damaged)
	start(damaged, store)
	d = nodes[damaged]
	require.ErrorIs(t, d.engine.Load(ctx, spec(false))[0], ErrCopyReset, "after a restart")
	failed, err = d.engine.FailedChannels()
	require.NoError(t, err)
	require.Equal(t, []string{channel}, failed, "the mark is listed before the channel loads")
	require.NoError(t, d.engine.Load(ctx, spec(true))[0])

	// The leader's half: the copy goes out of the configuration and comes back as a learner
	// carrying its store's token, then is promoted.
	leader := nodes[1].host
	for _, cc := range []*raftpb.ConfChangeV2{
		{Changes: []*raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: new(uint64(damaged))}}},
		{Changes: []*raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddLearnerNode.Enum(), NodeId: new(uint64(damaged))}},
			Context: multiraft.StoreToken(100 + damaged)},
		{Changes: []*raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: new(uint64(damaged))}}},
	} {
		p := leader.ProposeConfChangeAsync(g, cc)
		stabilize()
		_, err := p.Result()
		require.NoError(t, err)
		for range 3 { // a probe beyond the joined copy's log is answered once per heartbeat
			for _, n := range nodes {
				n.host.Tick()
			}
			stabilize()
		}
	}
	send("four")

	st, err = d.engine.GroupStatus(ctx, channel)
	require.NoError(t, err)
	require.False(t, st.GetCopyReset(), "the mark goes with the readmission: %v", st)
	reset, err := d.engine.isReset(g)
	require.NoError(t, err)
	require.False(t, reset, "the mark is gone from the store")
	failed, err = d.engine.FailedChannels()
	require.NoError(t, err)
	require.Empty(t, failed)
	require.NoError(t, d.engine.Load(ctx, spec(false))[0], "a plain load is accepted again")
	for id, n := range nodes {
		ch, err := n.engine.channel(channel)
		require.NoError(t, err, "node %d", id)
		msgs, err := n.engine.readFrom(ch, 1, 100, 1<<20)
		require.NoError(t, err, "node %d", id)
		var got []string
		for _, m := range msgs {
			got = append(got, fmt.Sprintf("%d:%s", m.GetSeq(), m.GetPayload()))
		}
		require.Equal(t, []string{"1:one", "2:flip-me", "3:three", "4:four"}, got, "node %d", id)
	}
}
