package replica

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// discardState is a store whose channel records go nowhere, so that BenchmarkEngineApply
// measures the engine (decode, numbering, dedup, record encoding, waking waiters), not the
// store; raftstore's benchmarks measure the writes.
type discardState struct {
	*raftstore.Memory
}

func (discardState) SaveState([]raftstore.StateWrite) error { return nil }

// BenchmarkEngineApply measures the apply stage's work in the engine: one op is one
// Engine.Apply of one committed entry in each of 16 groups, as the apply stage hands them
// over, with entries of 1 or 100 128-byte messages with client_msg_ids, proposed by this
// node (so each entry's results are handed to the waiters' map).
func BenchmarkEngineApply(b *testing.B) {
	const groups, perGroup = 16, 128
	for _, size := range []int{1, 100} {
		b.Run(fmt.Sprintf("msgs=%d", size), func(b *testing.B) {
			payload := make([]byte, benchPayload)
			ents := make([][]*raftpb.Entry, groups) // per group, in index order
			for g := range ents {
				for k := range perGroup {
					lb := &replicav1.LogBatch{ProposeTime: timestamppb.Now(), ProposerNodeId: 1, ProposalId: uint64(k + 1)}
					lb.Messages = make([]*triarchv1.MessageInput, size)
					for j := range lb.Messages {
						lb.Messages[j] = &triarchv1.MessageInput{ClientMsgId: fmt.Sprintf("g%d-e%d-m%d", g, k, j), Sender: "bench", Payload: payload}
					}
					data, err := proto.Marshal(lb)
					if err != nil {
						b.Fatal(err)
					}
					ents[g] = append(ents[g], &raftpb.Entry{Index: proto.Uint64(uint64(k + 2)), Term: proto.Uint64(2), Data: data})
				}
			}
			// The engine starts over when the entries run out (they would be old entries,
			// which Apply ignores, after that).
			fresh := func() *Engine {
				e := NewEngine(EngineConfig{NodeID: 1, Store: discardState{raftstore.NewMemory()},
					Dedup: chanlog.Config{Window: 24 * time.Hour, MaxIDs: 100_000}})
				e.Attach(&scriptedHost{}, nil, nil)
				specs := make([]*replicav1.GroupSpec, groups)
				for g := range specs {
					specs[g] = &replicav1.GroupSpec{ChannelId: fmt.Sprintf("ch-%d", g), GroupId: uint64(g + 1),
						Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}}
				}
				for _, err := range e.Load(context.Background(), specs) {
					if err != nil {
						b.Fatal(err)
					}
				}
				return e
			}
			e := fresh()
			batch := make([]multiraft.Committed, groups)
			k := 0
			b.ReportAllocs()
			for b.Loop() {
				if k == perGroup {
					b.StopTimer()
					e, k = fresh(), 0
					b.StartTimer()
				}
				for g := range batch {
					batch[g] = multiraft.Committed{GroupID: uint64(g + 1), Entries: ents[g][k : k+1]}
				}
				k++
				if err := e.Apply(batch); err != nil {
					b.Fatal(err)
				}
			}
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N*groups)/secs, "entries/s")
			b.ReportMetric(float64(b.N*groups*size)/secs, "msgs/s")
		})
	}
}
