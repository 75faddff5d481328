package tests

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// BenchmarkFailover kills the replica that leads the most of N channels and measures, per
// channel, the time from the kill to the channel being recorded active under a new leader:
// detection (kill to the arbiter's dead declaration) plus election (declaration to the new
// leader recorded). Run with -benchtime 1x: each iteration is a whole cluster.
func BenchmarkFailover(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("channels=%d", n), func(b *testing.B) {
			for range b.N {
				failoverOnce(b, n)
			}
		})
	}
}

func failoverOnce(b *testing.B, channels int) {
	c := startCluster(b, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := range channels {
		if _, err := c.send(ctx, fmt.Sprintf("b%d", i), "first"); err != nil {
			b.Fatal(err)
		}
	}
	led := map[uint64][]string{}
	for i := range channels {
		ch, _ := c.arbiter.FSM().Channel(fmt.Sprintf("b%d", i))
		led[ch.Leader] = append(led[ch.Leader], ch.ID)
	}
	victim := uint64(1)
	for n, ids := range led {
		if len(ids) > len(led[victim]) {
			victim = n
		}
	}
	victims := led[victim]
	killed := time.Now()
	c.stopReplica(victim)
	var declared time.Time
	done := map[string]time.Duration{}
	for len(done) < len(victims) {
		if time.Since(killed) > 2*time.Minute {
			b.Fatalf("%d of %d channels failed over", len(done), len(victims))
		}
		if declared.IsZero() {
			if n, _ := c.arbiter.FSM().Node(victim); n.Liveness == arbiterv1.NodeState_NODE_STATE_DEAD {
				declared = time.Now()
			}
		}
		for _, id := range victims {
			if _, ok := done[id]; ok {
				continue
			}
			ch, _ := c.arbiter.FSM().Channel(id)
			if ch.State == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE && ch.Leader != victim && ch.Leader != 0 {
				done[id] = time.Since(killed)
			}
		}
		time.Sleep(time.Millisecond)
	}
	all := make([]time.Duration, 0, len(done))
	for _, d := range done {
		all = append(all, d)
	}
	slices.Sort(all)
	detect := declared.Sub(killed)
	b.ReportMetric(float64(detect.Milliseconds()), "detect-ms")
	b.ReportMetric(float64(all[len(all)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Milliseconds()), "p99-ms")
	b.ReportMetric(float64((all[len(all)-1] - detect).Milliseconds()), "election-max-ms")
	b.ReportMetric(float64(len(victims)), "channels-moved")
}
