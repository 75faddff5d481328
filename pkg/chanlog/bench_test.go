package chanlog

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// benchEntries encodes n LogBatches of size messages as the replica proposes them: 128-byte
// payloads, a sender, and a unique client_msg_id per message.
func benchEntries(b *testing.B, n, size int) [][]byte {
	b.Helper()
	payload := make([]byte, 128)
	out := make([][]byte, n)
	for i := range out {
		lb := &replicav1.LogBatch{ProposeTime: timestamppb.New(t0.Add(time.Duration(i) * time.Millisecond)),
			ProposerNodeId: 1, ProposalId: uint64(i + 1)}
		for j := range size {
			lb.Messages = append(lb.Messages, &triarchv1.MessageInput{
				ClientMsgId: fmt.Sprintf("client-%08d-%04d", i, j), Sender: "bench-sender", Payload: payload})
		}
		data, err := proto.Marshal(lb)
		if err != nil {
			b.Fatal(err)
		}
		out[i] = data
	}
	return out
}

// BenchmarkApply measures the channel state machine alone: decoding an entry, numbering its
// messages and remembering their client_msg_ids (with the service's dedup bounds, so that old
// ids are evicted as new ones come). One op is one entry.
func BenchmarkApply(b *testing.B) {
	for _, size := range []int{1, 100} {
		b.Run(fmt.Sprintf("msgs=%d", size), func(b *testing.B) {
			// A pool of distinct entries; the channel starts over when it wraps, so that ids
			// are never duplicates (that is another path, measured by BenchmarkApplyDuplicates).
			ents := benchEntries(b, 4096, size)
			cfg := Config{Window: 24 * time.Hour, MaxIDs: 100_000}
			c := New(cfg)
			var index uint64
			b.ReportAllocs()
			b.SetBytes(int64(len(ents[0])))
			for b.Loop() {
				k := int(index % uint64(len(ents)))
				if k == 0 && index > 0 {
					b.StopTimer()
					c, index = New(cfg), 0
					b.StartTimer()
				}
				index++
				if _, err := c.Apply(index, ents[k]); err != nil {
					b.Fatal(err)
				}
			}
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)/secs, "entries/s")
			b.ReportMetric(float64(b.N*size)/secs, "msgs/s")
		})
	}
}

// BenchmarkApplyDuplicates measures entries whose messages were all applied before (client
// retries): each is answered from the dedup window.
func BenchmarkApplyDuplicates(b *testing.B) {
	ents := benchEntries(b, 256, 100)
	c := New(Config{Window: 24 * time.Hour, MaxIDs: 100_000})
	var index uint64
	for _, e := range ents {
		index++
		if _, err := c.Apply(index, e); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		index++
		if _, err := c.Apply(index, ents[index%uint64(len(ents))]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "msgs/s")
}
