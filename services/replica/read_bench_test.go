package replica

import (
	"context"
	"sync"
	"testing"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// BenchmarkRead measures a read of 20 messages from the leader of a three-replica channel over
// gRPC, one reader at a time and 16 at once: what a linearizable read costs (the leader's
// quorum confirmation, one heartbeat round shared by the reads of one round). For example:
//
//	go test ./services/replica -run '^$' -bench BenchmarkRead -count 5
func BenchmarkRead(b *testing.B) {
	c := newClusterOf(b, 3)
	const ch = "bench-read"
	c.loadOn(c.specOf(ch, 60, false, 1, 2, 3), 1, 2, 3)
	c.elect(1, ch)
	c.appendN(1, ch, "m", 20)
	read := func() {
		resp, err := c.data[0].Read(context.Background(), &replicav1.ReadRequest{ChannelId: ch, FromSeq: 1, Limit: 100})
		if err != nil || len(resp.GetMessages()) != 20 {
			b.Fatalf("read: %d messages, %v", len(resp.GetMessages()), err)
		}
	}
	b.Run("readers=1", func(b *testing.B) {
		for b.Loop() {
			read()
		}
	})
	b.Run("readers=16", func(b *testing.B) {
		for b.Loop() {
			var wg sync.WaitGroup
			for range 16 {
				wg.Add(1)
				go func() { defer wg.Done(); read() }()
			}
			wg.Wait()
		}
	})
}
