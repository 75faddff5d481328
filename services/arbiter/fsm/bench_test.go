package fsm

import (
	"fmt"
	"testing"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// benchCluster: 9 replicas over 3 zones, one channelctl owning every slot, and existing
// channels of rf 3.
func benchCluster(b *testing.B, existing int) *FSM {
	b.Helper()
	f := New()
	for id := uint64(1); id <= 9; id++ {
		register(b, f, id, replica, fmt.Sprintf("z%d", id%3))
	}
	register(b, f, 100, channelctl, "")
	for i := range existing {
		create(b, f, fmt.Sprintf("existing-%06d", i), 3)
	}
	return f
}

// BenchmarkApplyCreateChannel measures applying one encoded CreateChannel entry (decode,
// placement, index insert, event), on an empty and on a 100k-channel state.
func BenchmarkApplyCreateChannel(b *testing.B) {
	for _, existing := range []int{0, 100_000} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			f := benchCluster(b, existing)
			entries := make([][]byte, b.N)
			for i := range entries {
				data, err := Encode(CreateChannelCommand(fmt.Sprintf("bench-%08d", i), 3, t0))
				if err != nil {
					b.Fatal(err)
				}
				entries[i] = data
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				res, err := f.ApplyEntry(entries[i])
				if err != nil || !res.(CreateChannelResult).Created {
					b.Fatalf("entry %d: %v %v", i, res, err)
				}
			}
		})
	}
}

// BenchmarkApplyCAS1000 measures applying one encoded batch of 1,000 leader changes (what a
// channelctl sends when failing over 1,000 channels).
func BenchmarkApplyCAS1000(b *testing.B) {
	const batch = 1000
	f := benchCluster(b, batch)
	page, err := f.ListChannels("", batch, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		changes := make([]*arbiterv1.ChannelChange, batch)
		for j, ch := range page.Channels {
			leader, term := ch.Replicas[i%2], uint64(i+1)
			changes[j] = &arbiterv1.ChannelChange{ChannelId: ch.ID, ExpectedEpoch: uint64(i + 1), LeaderNodeId: &leader, LeaderTerm: &term}
		}
		data, err := Encode(CompareAndSetChannelsCommand(100, changes...))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := f.ApplyEntry(data)
		if err != nil {
			b.Fatal(err)
		}
		if r := res.(CompareAndSetResult).Results; !r[batch-1].Succeeded {
			b.Fatalf("iteration %d: %v", i, r[batch-1].Err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/change")
}
