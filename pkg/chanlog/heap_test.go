package chanlog

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// BenchmarkDedupHeap measures the heap a busy channel's state holds: 1,000 channels, each after
// 1,000 single-message entries with distinct client_msg_ids (36 bytes, a UUID's length), under
// the service's default bounds. It reports the live heap per channel after a GC.
func BenchmarkDedupHeap(b *testing.B) {
	const channels, msgs = 1000, 1000
	cfg := Config{Window: 24 * time.Hour, MaxIDs: 100_000}
	// The entries are encoded once and shared by all channels (as raft's log is not held here).
	ents := make([][]byte, msgs)
	for i := range ents {
		lb := &replicav1.LogBatch{ProposeTime: timestamppb.New(t0.Add(time.Duration(i) * time.Millisecond)),
			ProposerNodeId: 1, ProposalId: uint64(i + 1),
			Messages: []*triarchv1.MessageInput{{ClientMsgId: fmt.Sprintf("%08d-0000-4000-8000-%012d", i, i), Sender: "s", Payload: make([]byte, 128)}}}
		data, err := proto.Marshal(lb)
		if err != nil {
			b.Fatal(err)
		}
		ents[i] = data
	}
	var perChannel float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		chs := make([]*Channel, channels)
		for i := range chs {
			chs[i] = New(cfg)
			for j, e := range ents {
				if _, err := chs[i].Apply(uint64(j+1), e); err != nil {
					b.Fatal(err)
				}
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perChannel = float64(after.HeapAlloc-before.HeapAlloc) / channels
		runtime.KeepAlive(chs)
	}
	b.ReportMetric(perChannel, "bytes/channel")
}
