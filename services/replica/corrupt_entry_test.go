package replica

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// tamperTransport changes messages on their way, as a bad disk, memory or link would.
type tamperTransport struct {
	inner  multiraft.Transport
	tamper func(env multiraft.Envelope) multiraft.Envelope
}

func (t tamperTransport) Send(msgs []multiraft.Envelope) {
	out := make([]multiraft.Envelope, len(msgs))
	for i, e := range msgs {
		out[i] = t.tamper(e)
	}
	t.inner.Send(out)
}

// corruptNode is one replica of a manual three-node cluster.
type corruptNode struct {
	engine *Engine
	host   *multiraft.Host
	store  raftstore.Store
}

// Item 5 of issue 12: a committed entry that reaches one replica corrupt (a payload byte
// flipped, which still decodes but fails the entry's checksum; or bytes that do not decode at
// all) fails that channel on that replica, loudly, instead of being skipped. Its other
// channels, its host and the other replicas go on; the failed channel takes no sequence
// number past the bad entry, is never checkpointed past it, and reports itself failed to
// the control tier (DataLoss) so that it is never elected.
func TestCorruptEntryFailsItsChannelOnly(t *testing.T) {
	const damaged = 3
	const good, flipped, garbled = uint64(11), uint64(12), uint64(13)
	channels := map[uint64]string{good: "good", flipped: "flipped", garbled: "garbled"}

	var logs bytes.Buffer
	reader := sdkmetric.NewManualReader()
	hub := memnet.New(memnet.Options{Seed: 5})
	nodes := map[uint64]*corruptNode{}
	for id := uint64(1); id <= 3; id++ {
		store := raftstore.NewMemory()
		cfg := EngineConfig{NodeID: id, Store: store, CheckpointEvery: 1,
			Dedup: chanlog.Config{Window: time.Hour, MaxIDs: 1000}}
		transport := hub.Transport(id)
		if id != damaged {
			transport = tamperTransport{inner: transport, tamper: corruptOnTheWayTo(damaged, flipped, garbled)}
		} else {
			cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
			cfg.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
		}
		e := NewEngine(cfg)
		h, err := multiraft.New(multiraft.Config{NodeID: id, Store: store, Transport: transport, Applier: e, Manual: true, Workers: 2})
		require.NoError(t, err)
		e.Attach(h, nil, nil)
		hub.Attach(id, h)
		nodes[id] = &corruptNode{engine: e, host: h, store: store}
	}
	stabilize := func() { t.Helper(); require.NoError(t, hub.Stabilize(0), "no host may stop") }

	ctx := context.Background()
	for id, n := range nodes {
		var specs []*replicav1.GroupSpec
		for _, g := range []uint64{good, flipped, garbled} {
			specs = append(specs, &replicav1.GroupSpec{ChannelId: channels[g], GroupId: g,
				Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}})
		}
		for _, err := range n.engine.Load(ctx, specs) {
			require.NoError(t, err, "load on node %d", id)
		}
	}
	for _, g := range []uint64{good, flipped, garbled} {
		require.NoError(t, nodes[1].host.Campaign(ctx, g))
	}
	stabilize()

	proposal := uint64(0)
	send := func(g uint64, payloads ...string) {
		t.Helper()
		var ps []*multiraft.Proposal
		for _, p := range payloads {
			proposal++
			data, err := sealBatch(&replicav1.LogBatch{ProposeTime: timestamppb.Now(), ProposerNodeId: 1, ProposalId: proposal,
				Messages: []*triarchv1.MessageInput{{ClientMsgId: fmt.Sprint("m-", proposal), Payload: []byte(p)}}})
			require.NoError(t, err)
			ps = append(ps, nodes[1].host.ProposeAsync(g, data))
		}
		stabilize()
		for _, p := range ps {
			_, err := p.Result()
			require.NoError(t, err, "a proposal on the healthy leader")
		}
	}
	for _, g := range []uint64{good, flipped, garbled} {
		send(g, "one", "two")
	}
	send(flipped, "flip-me")
	send(garbled, "garble-me")
	for _, g := range []uint64{good, flipped, garbled} {
		send(g, "three", "four")
	}

	lastSeq := func(node, g uint64) uint64 {
		n := nodes[node].engine
		n.mu.RLock()
		defer n.mu.RUnlock()
		return n.byGroup[g].lastSeq.Load()
	}
	for _, id := range []uint64{1, 2} {
		require.Equal(t, uint64(4), lastSeq(id, good), "node %d", id)
		require.Equal(t, uint64(5), lastSeq(id, flipped), "node %d", id)
		require.Equal(t, uint64(5), lastSeq(id, garbled), "node %d", id)
	}
	d := nodes[damaged]
	require.Equal(t, uint64(4), lastSeq(damaged, good), "the damaged replica's healthy channel applies everything")
	for _, g := range []uint64{flipped, garbled} {
		require.Equal(t, uint64(2), lastSeq(damaged, g), "channel %s: nothing is numbered past the bad entry", channels[g])

		failure := d.host.Failure(g)
		var gf *multiraft.GroupFailedError
		require.ErrorAs(t, failure, &gf, "channel %s: the host knows the group failed", channels[g])
		require.Greater(t, gf.Index, uint64(0))

		_, err := d.engine.GroupStatus(ctx, channels[g])
		require.ErrorIs(t, err, multiraft.ErrGroupFailed)
		require.Equal(t, codes.DataLoss, status.Code(toStatus(err)), "the control tier sees DataLoss")
		require.Equal(t, codes.Unavailable, status.Code(dataStatus(err)), "the gateway retries elsewhere")
		require.ErrorIs(t, d.engine.Load(ctx, []*replicav1.GroupSpec{{ChannelId: channels[g], GroupId: g,
			Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}}})[0], multiraft.ErrGroupFailed, "a reload is refused")
		require.ErrorIs(t, d.engine.Unload(ctx, channels[g]), multiraft.ErrGroupFailed)
		require.ErrorIs(t, d.engine.Campaign(ctx, channels[g]), multiraft.ErrGroupFailed)

		cp := checkpointOf(t, d.store, g)
		require.Less(t, cp.GetAppliedIndex(), gf.Index, "channel %s: checkpointed past the bad entry", channels[g])
		require.Contains(t, logs.String(), fmt.Sprintf("channel=%s group=%d index=%d", channels[g], g, gf.Index), "an error line names the entry")
	}
	sts, errs := d.engine.GroupStatuses(ctx, []string{"good", "flipped", "garbled"})
	require.NoError(t, errs[0])
	require.Equal(t, uint64(4), sts[0].GetLastSeq())
	require.ErrorIs(t, errs[1], multiraft.ErrGroupFailed)
	require.ErrorIs(t, errs[2], multiraft.ErrGroupFailed)
	require.Contains(t, logs.String(), "reason=checksum")
	require.Contains(t, logs.String(), "reason=undecodable")

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	reasons := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "triarch.replica.corrupt_entries" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				r, _ := dp.Attributes.Value("reason")
				reasons[r.AsString()] += dp.Value
			}
		}
	}
	require.Equal(t, map[string]int64{"checksum": 1, "undecodable": 1}, reasons)

	// Closing checkpoints the healthy channel only: a restart must not resume past the bad entries.
	require.NoError(t, d.engine.Close())
	for _, g := range []uint64{flipped, garbled} {
		require.Less(t, checkpointOf(t, d.store, g).GetAppliedIndex(), d.host.Failure(g).(*multiraft.GroupFailedError).Index)
	}
	require.NoError(t, d.host.Err())
}

// corruptOnTheWayTo damages, in messages to node to, the entries of group flip that carry
// "flip-me" (one payload byte changes: the entry still decodes) and the entries of group
// garble that carry "garble-me" (replaced by bytes that do not decode).
func corruptOnTheWayTo(to, flip, garble uint64) func(multiraft.Envelope) multiraft.Envelope {
	return func(env multiraft.Envelope) multiraft.Envelope {
		if env.Msg.GetTo() != to || env.Msg.GetType() != raftpb.MessageType_MsgApp || (env.GroupID != flip && env.GroupID != garble) {
			return env
		}
		var m *raftpb.Message
		for i, e := range env.Msg.GetEntries() {
			data := e.GetData()
			var bad []byte
			switch {
			case env.GroupID == flip && bytes.Contains(data, []byte("flip-me")):
				bad = bytes.Clone(data)
				bad[bytes.Index(bad, []byte("flip-me"))] ^= 1
			case env.GroupID == garble && bytes.Contains(data, []byte("garble-me")):
				bad = []byte{0xff, 0xff, 0xff, 0xff, 0xff}
			default:
				continue
			}
			if m == nil {
				// The sender's message is raft's own: change a copy.
				m = proto.Clone(env.Msg).(*raftpb.Message)
			}
			m.Entries[i].Data = bad
		}
		if m != nil {
			env.Msg = m
		}
		return env
	}
}

func checkpointOf(t *testing.T, store raftstore.Store, g uint64) *replicav1.ChannelCheckpoint {
	t.Helper()
	v, err := store.(raftstore.StateStore).GetState(g, []byte{kindCheckpoint})
	require.NoError(t, err)
	var cp replicav1.ChannelCheckpoint
	require.NoError(t, proto.Unmarshal(v, &cp))
	return &cp
}
